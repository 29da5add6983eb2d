"""DCM's experiment config: typed sections whose defaults are the documented reproduction.

configs/dcm.py builds it (presets change a few fields); every field can be set on the command
line, e.g. `--config.distill.student_seeds=2`, `--config.evaluation.eval_steps=1,2,4`,
`--config.ablations=no_tc,no_gan`. Where we deviate from the paper's code, and why: docs/dcm.md.
"""
from __future__ import annotations

import dataclasses

from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_choice, check_positive, require
from moe_jax.video_diffusion.dcm_distill import LossWeights
from moe_jax.video_diffusion.dcm_variants import ABLATIONS
from moe_jax.video_diffusion.schedule import FlowSchedule


def _positive(section, *names: str) -> None:
  for name in names:
    check_positive(name, getattr(section, name))


@dataclasses.dataclass(frozen=True)
class Data(Section):
  """Moving scikit-learn digits: clips [frames, size, size, 1]."""
  frames: int = 8
  size: int = 16
  n_train: int = 4000
  n_test: int = 512

  def __post_init__(self):
    _positive(self, "frames", "size", "n_train", "n_test")


@dataclasses.dataclass(frozen=True)
class Model(Section):
  """The DiT of teacher and students (`dit.VideoDiT`'s fields); the discriminator taps every
  `feature_stride`-th block (code: discriminator_head_stride 2)."""
  patch: int = 4
  width: int = 48
  depth: int = 4
  heads: int = 4
  mlp_ratio: int = 2
  feature_stride: int = 2

  def __post_init__(self):
    _positive(self, "patch", "width", "depth", "heads", "mlp_ratio", "feature_stride")
    require(self.width % (4 * self.heads) == 0, "heads", f"head width {self.width}/{self.heads} "
            "is not a multiple of 4 (rotary pairs over two spatial axes)",
            "use width divisible by 4 * heads")
    require(self.depth >= self.feature_stride, "feature_stride", "no block would be tapped",
            "use feature_stride <= depth")


@dataclasses.dataclass(frozen=True)
class Teacher(Section):
  """Flow-matching training of the teacher (EMA weights are the teacher)."""
  steps: int = 8000
  batch: int = 32
  lr: float = 5e-3
  ema: float = 0.995

  def __post_init__(self):
    _positive(self, "steps", "batch", "lr")


@dataclasses.dataclass(frozen=True)
class Distill(Section):
  """Phased consistency distillation; CM and DCM get the same semantic_steps + detail_steps
  generator steps, each with `student_seeds` seeds on one teacher. Learning rates: full
  fine-tunes (semantic expert, CM, full detail expert), LoRA detail expert, discriminator."""
  batch: int = 16
  semantic_steps: int = 1200
  detail_steps: int = 800
  lr_semantic: float = 1e-4
  lr_detail: float = 5e-4
  lr_discriminator: float = 1e-3
  student_seeds: int = 5

  def __post_init__(self):
    _positive(self, "batch", "semantic_steps", "detail_steps", "student_seeds")


@dataclasses.dataclass(frozen=True)
class LoRA(Section):
  """The detail expert's adapters: on q/k/v/out (the paper's targets) and, with `adaln`, on each
  block's adaLN modulation layer (our deviation)."""
  rank: int = 8
  alpha: float = 16.0
  adaln: bool = True

  def __post_init__(self):
    _positive(self, "rank")


@dataclasses.dataclass(frozen=True)
class Discriminator(Section):
  """Heads on the frozen teacher's tapped blocks: width and GroupNorm groups."""
  hidden: int = 64
  groups: int = 8

  def __post_init__(self):
    _positive(self, "hidden", "groups")
    require(self.hidden % self.groups == 0, "groups", f"{self.groups} does not divide hidden="
            f"{self.hidden}", "pick a divisor of hidden")


@dataclasses.dataclass(frozen=True)
class Evaluation(Section):
  """FD classifier, samples per row, sampler step counts (the ablation and the expert swaps at
  `ablation_steps`), the per-timestep diagnosis batch and the synthesis timeline's pool."""
  classifier_steps: int = 3000
  classifier_batch: int = 32
  classifier_lr: float = 2e-3
  n_eval: int = 256
  eval_steps: tuple[int, ...] = (1, 2, 4)
  ablation_steps: int = 4
  diag_batch: int = 32
  timeline_pool: int = 4

  def __post_init__(self):
    _positive(self, "classifier_steps", "classifier_batch", "n_eval", "diag_batch",
              "timeline_pool")
    for steps in self.eval_steps:
      check_positive("eval_steps", steps)
    require(self.ablation_steps in self.eval_steps, "ablation_steps",
            f"{self.ablation_steps} is not among eval_steps {self.eval_steps}",
            "add it to eval_steps")


@dataclasses.dataclass(frozen=True)
class DCMConfig(Section):
  """The whole experiment: one teacher, CM and DCM students, the expert swaps, `ablations`.

  schedule: flow shift 3 (code: 17, tuned to 720p latents) and the paper's boundary noise level
  carried to our clip size, node 19 of the 50-step grid (`schedule.resolution_equivalent_sigma`).
  """
  seed: int = 0
  data: Data = Data()
  model: Model = Model()
  schedule: FlowSchedule = FlowSchedule(shift=3.0, euler_steps=50, boundary_index=19)
  teacher: Teacher = Teacher()
  distill: Distill = Distill()
  lora: LoRA = LoRA()
  discriminator: Discriminator = Discriminator()
  losses: LossWeights = LossWeights()
  evaluation: Evaluation = Evaluation()
  ablations: tuple[str, ...] = ABLATIONS

  def __post_init__(self):
    size = self.data.size
    require(size % self.model.patch == 0, "model.patch", f"{self.model.patch} does not divide "
            f"data.size={size}", "use a patch size that divides the canvas")
    require(size % self.evaluation.timeline_pool == 0, "evaluation.timeline_pool",
            f"{self.evaluation.timeline_pool} does not divide data.size={size}",
            "use a divisor of the canvas size")
    for name in self.ablations:
      check_choice("ablations", name, ABLATIONS)
    require(self.lora.adaln or "attn_lora" not in self.ablations, "ablations", "attn_lora equals "
            "DCM when lora.adaln is off", "drop attn_lora from ablations or set lora.adaln=true")
