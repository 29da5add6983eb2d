"""The typed config: presets, command-line overrides, and one-line errors naming the field."""
import pytest

from moe_jax.customization.config import CustomizationConfig
from moe_jax.customization.experiment import EXPERIMENT
from moe_jax.utils.errors import ConfigError


def test_presets():
  default, quick = EXPERIMENT.load_config(""), EXPERIMENT.load_config("quick")
  assert default == CustomizationConfig()
  assert default.users.num_users == 10 and default.gn.targets == ("source", "ge_error")
  assert quick.users.num_users == 2 and quick.ge.steps == 60 and quick.ge.batch_size == 64
  with pytest.raises(ConfigError, match="preset"):
    EXPERIMENT.load_config("fast")


def test_every_kind_of_field_is_settable_from_the_command_line():
  config = EXPERIMENT.load_config("quick", {
      "gn.targets": "ge_error", "users.slant": "0.1,0.3", "gn.balance": "false",
      "ge.learning_rate": "3e-3", "data.source": "emnist", "seed": "2"})
  assert config.gn.targets == ("ge_error",) and config.users.slant == (0.1, 0.3)
  assert config.gn.balance is False and config.ge.learning_rate == 3e-3
  assert config.data.source == "emnist" and config.seed == 2
  assert config.users.num_users == 2  # the preset's other fields stay


@pytest.mark.parametrize("dotted,text,message", [
    ("gn.targets", "source,confidence", "gn.targets: unknown value 'confidence'"),
    ("gn.targets", "", "gn.targets: empty"),
    ("gn.targets", "source,source", "gn.targets: .* repeats a target"),
    ("gn.reference_per_class", "0", "gn.reference_per_class: target 'source' needs"),
    ("users.num_users", "0", "users.num_users: must be > 0"),
    ("users.slant", "0.3,0.1", "users.slant: expected 0 <= low <= high"),
    ("users.slant", "0.1", "users.slant: expected 2 values, got 1"),
    ("users.glyph_fraction", "2", "users.glyph_fraction: 2.0 not in"),
    ("ge.steps", "0", "ge.steps: must be > 0"),
    ("ge.steps", "many", "ge.steps: expected an integer"),
    ("le.learning_rate", "-1", "le.learning_rate: must be > 0"),
    ("le.hidden", "-2", "le.hidden: must be >= 0"),
    ("ge.feature_layer", "conv2", "ge.feature_layer: unknown value 'conv2'"),
    ("data.source", "mnist", "data.source: unknown value 'mnist'"),
    ("data.box", "30", "data.box: 30 not in 1..28"),
    ("gn.treshold", "0.4", "gn.treshold: unknown field"),
])
def test_bad_values_name_the_field(dotted, text, message):
  with pytest.raises(ConfigError, match=f"^{message}"):
    EXPERIMENT.load_config("quick", {dotted: text})
