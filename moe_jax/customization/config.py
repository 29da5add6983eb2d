"""The GE / LE / GN experiment's config: typed sections whose defaults are the reproduction.

What the abstract of arXiv:1811.00056 fixes (GE = LeNet5 on a large generic set; LE and GN trained on
the device on the user's small set with GE frozen; ten users) is kept; everything else is open and
is a field below, with our reason beside it. Each section checks its own fields; a bad value is one
ConfigError naming the field (moe_jax/utils/config.py adds the section's path).
"""
from __future__ import annotations

import dataclasses

from moe_jax.customization.data import SOURCES
from moe_jax.customization.gating import TARGETS
from moe_jax.customization.lenet import ACTIVATIONS, FEATURE_WIDTHS, POOLINGS
from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_choice, check_positive, require


def _check_range(field: str, bounds: tuple[float, float]) -> None:
  require(0 <= bounds[0] <= bounds[1], field, f"expected 0 <= low <= high, got {bounds}",
          "give low,high")


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
  """The generic handwriting set and its class-stratified split (per class)."""
  source: str = "digits"  # 'digits' (scikit-learn, shipped stand-in) or 'emnist' (IDX gzip files).
  emnist_dir: str = ""
  emnist_split: str = "digits"  # Paper: alphanumerics (47 or 62 classes); which split is open.
  box: int = 20  # Side of the upsampled digit inside 28x28, as MNIST's 20x20 box.
  ge_train_per_class: int = 90
  generic_test_per_class: int = 40

  def __post_init__(self):
    check_choice("source", self.source, SOURCES)
    require(0 < self.box <= 28, "box", f"{self.box} not in 1..28", "use a box that fits 28x28")
    check_positive("ge_train_per_class", self.ge_train_per_class)
    check_positive("generic_test_per_class", self.generic_test_per_class)


@dataclasses.dataclass(frozen=True)
class UsersConfig(Section):
  """The simulated users (moe_jax/customization/users.py): how many, their data, their styles.

  The style ranges are chosen so that GE visibly loses accuracy on users' data, as a real shift.
  """
  num_users: int = 10  # Paper: 10 users.
  train_per_class: int = 20  # "Tens of samples per class" on the device.
  test_per_class: int = 20  # Disjoint from the user's training samples.
  slant: tuple[float, float] = (0.1, 0.35)  # |shear| per row, sign random.
  stroke_max: int = 2  # Extra stroke width in pixels, uniform in 0..stroke_max.
  elastic_alpha: tuple[float, float] = (8.0, 20.0)  # Fixed personal field amplitude (pixels).
  elastic_sigma: float = 4.0  # Field smoothness, as Simard et al. 2003 use for 28x28 digits.
  jitter_alpha: float = 8.0  # Fresh per-sample field: a user never writes a glyph twice alike.
  glyph_fraction: float = 0.5  # Share of users with a personal glyph for one class.

  def __post_init__(self):
    check_positive("num_users", self.num_users)
    check_positive("train_per_class", self.train_per_class)
    check_positive("test_per_class", self.test_per_class)
    _check_range("slant", self.slant)
    _check_range("elastic_alpha", self.elastic_alpha)
    require(self.stroke_max >= 0, "stroke_max", f"must be >= 0, got {self.stroke_max}",
            "give a number of pixels")
    require(0.0 <= self.glyph_fraction <= 1.0, "glyph_fraction",
            f"{self.glyph_fraction} not in [0, 1]", "use a fraction")


@dataclasses.dataclass(frozen=True)
class FitConfig(Section):
  """AdamW on shuffled minibatches (train.fit); batch_size >= the data size: full-batch steps."""
  steps: int = 300
  batch_size: int = 1024
  learning_rate: float = 1e-2
  weight_decay: float = 1e-3

  def __post_init__(self):
    check_positive("steps", self.steps)
    check_positive("batch_size", self.batch_size)
    check_positive("learning_rate", self.learning_rate)
    require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}",
            "give a non-negative decay")


@dataclasses.dataclass(frozen=True)
class GEConfig(FitConfig):
  """The global expert: LeNet5, trained once off the device on the generic set, then frozen.

  The paper fixes only "LeNet5": input padded to 32x32 as the original, modern ReLU and max pooling
  (tanh / average pooling are the original's). LE and GN read GE's `feature_layer` features (our
  choice: a separate CNN on pixels within ~2.5% of LeNet5's cost would be far too weak).
  """
  input_pad: int = 2
  activation: str = "relu"
  pooling: str = "max"
  feature_layer: str = "fc1"
  steps: int = 1500
  batch_size: int = 64
  learning_rate: float = 1e-3
  weight_decay: float = 1e-4

  def __post_init__(self):
    super().__post_init__()
    require(self.input_pad >= 0, "input_pad", f"must be >= 0, got {self.input_pad}",
            "give a number of pixels")
    check_choice("activation", self.activation, ACTIVATIONS)
    check_choice("pooling", self.pooling, POOLINGS)
    check_choice("feature_layer", self.feature_layer, FEATURE_WIDTHS)


@dataclasses.dataclass(frozen=True)
class HeadConfig(FitConfig):
  """A network on GE's features trained on the device; the local expert is one (softmax regression
  on the user's samples only when hidden = 0)."""
  hidden: int = 0  # Width of one ReLU hidden layer; 0: linear.

  def __post_init__(self):
    super().__post_init__()
    require(self.hidden >= 0, "hidden", f"must be >= 0, got {self.hidden}", "give 0 for linear")


@dataclasses.dataclass(frozen=True)
class GateConfig(HeadConfig):
  """The gating network: logistic regression on GE features, hard gate at `threshold`.

  targets[0] is the headline, the others an ablation from the same run. 'source': user samples vs
  a small generic reference set shipped with the GE (public data; no user data leaves the device),
  a deviation from "the user's set only"; 'ge_error': user data only, target = GE wrong.
  """
  targets: tuple[str, ...] = ("source", "ge_error")
  reference_per_class: int = 20  # Drawn from GE's training set.
  threshold: float = 0.5
  balance: bool = True  # Weight positives by #neg/#pos (both targets are unbalanced).

  def __post_init__(self):
    super().__post_init__()
    require(len(self.targets) > 0, "targets", "empty", f"name at least one of {', '.join(TARGETS)}")
    for target in self.targets:
      check_choice("targets", target, TARGETS)
    require(len(set(self.targets)) == len(self.targets), "targets",
            f"{self.targets} repeats a target", "name each target once")
    require("source" not in self.targets or self.reference_per_class > 0, "reference_per_class",
            "target 'source' needs generic reference samples", "set it > 0")


@dataclasses.dataclass(frozen=True)
class CostsConfig(Section):
  read_weight: float = 1.0  # Energy proxy = FLOPs + read_weight x memory reads.


@dataclasses.dataclass(frozen=True)
class CustomizationConfig(Section):
  """One GE, then per user an LE and a GN; `seed` seeds the split, the users and every fit."""
  seed: int = 0
  data: DataConfig = DataConfig()
  users: UsersConfig = UsersConfig()
  ge: GEConfig = GEConfig()
  le: HeadConfig = HeadConfig()
  gn: GateConfig = GateConfig()
  costs: CostsConfig = CostsConfig()
