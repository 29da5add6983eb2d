"""DCM's typed config: presets, command-line overrides of every field, one-line errors."""
import dataclasses

import pytest

from configs import dcm as dcm_config
from moe_jax.utils.errors import ConfigError
from moe_jax.utils.experiment import load_config
from moe_jax.video_diffusion.dcm_config import DCMConfig
from moe_jax.video_diffusion.dcm_variants import ABLATIONS


def _leaves(section, path=""):
  """(dotted path, value) of every field of a Section tree."""
  for field in dataclasses.fields(section):
    value, dotted = getattr(section, field.name), f"{path}{field.name}"
    if dataclasses.is_dataclass(value):
      yield from _leaves(value, dotted + ".")
    else:
      yield dotted, value


def _text(value) -> str:
  if isinstance(value, tuple):
    return ",".join(str(v) for v in value)
  return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.mark.parametrize("preset", ["", "quick", "medium"])
def test_presets_build_and_default_is_the_section_defaults(preset):
  config = dcm_config.get_config(preset)
  assert isinstance(config, DCMConfig)
  if not preset:
    assert config == DCMConfig()
  assert config.schedule.shift == 3.0  # a preset's partial section keeps DCM's schedule


def test_unknown_preset_is_a_config_error():
  with pytest.raises(ConfigError, match="preset"):
    dcm_config.get_config("huge")


def test_every_field_can_be_set_from_the_command_line():
  config = dcm_config.get_config("quick")
  leaves = dict(_leaves(config))
  assert len(leaves) > 45 and "schedule.boundary_index" in leaves and "losses.tc_weight" in leaves
  for dotted, value in leaves.items():
    assert config.override(dotted, _text(value)) == config, dotted


def test_list_fields_parse_from_comma_separated_text():
  config = load_config("configs/dcm.py:quick", overrides={
      "evaluation.eval_steps": "1,2,4,8", "ablations": "no_tc,no_gan", "lora.adaln": "false"})
  assert config.evaluation.eval_steps == (1, 2, 4, 8)
  assert config.ablations == ("no_tc", "no_gan")
  assert config.lora.adaln is False
  assert load_config("configs/dcm.py", overrides={"ablations": ""}).ablations == ()


@pytest.mark.parametrize("dotted,text,message", [
    ("teacher.stepz", "3", "teacher.stepz: unknown field"),
    ("teacher.steps", "many", "teacher.steps: expected an integer"),
    ("teacher.steps", "0", "teacher.steps: must be > 0"),
    ("model.patch", "3", "model.patch: 3 does not divide data.size=16"),
    ("model.heads", "5", "model.heads: head width"),
    ("model.feature_stride", "8", "model.feature_stride: no block"),
    ("discriminator.groups", "5", "discriminator.groups: 5 does not divide"),
    ("schedule.boundary_index", "50", "schedule.boundary_index: must lie in"),
    ("losses.gan_loss", "wasserstein", "losses.gan_loss: unknown value"),
    ("evaluation.ablation_steps", "3", "evaluation.ablation_steps: 3 is not among"),
    ("evaluation.timeline_pool", "3", "evaluation.timeline_pool: 3 does not divide"),
    ("ablations", "no_tc,no_such", "ablations: unknown value 'no_such'"),
    ("lora.adaln", "false", "ablations: attn_lora equals DCM when lora.adaln is off"),
])
def test_bad_values_name_the_dotted_field(dotted, text, message):
  with pytest.raises(ConfigError) as info:
    load_config("configs/dcm.py", overrides={dotted: text})
  assert str(info.value).startswith(message) and "\n" not in str(info.value)
  assert "Fix:" in str(info.value)


def test_ablation_names_are_the_variants_beyond_cm_and_dcm():
  assert DCMConfig().ablations == ABLATIONS
  assert "cm" not in ABLATIONS and "dcm" not in ABLATIONS
