"""The students DCM's experiment distils: CM, DCM and DCM with one component off, and the expert
swaps that ask the paper's Fig. 3 question of trained CM and DCM students."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Variant:
  """One student recipe: expert split or not, detail-expert form and which extra losses are on.

  form: "lora" (the config's LoRA targets), "attn_lora" (attention only, the paper's targets) or
  "full" (an unshared copy of the whole network).
  """
  split: bool = True
  form: str = "lora"
  tc: bool = True
  gan: bool = True
  fm: bool = True


VARIANTS = {
    "cm": Variant(split=False, tc=False, gan=False, fm=False),
    "dcm": Variant(),
    "no_tc": Variant(tc=False),
    "no_gan": Variant(gan=False),
    "no_fm": Variant(fm=False),
    "no_gan_fm": Variant(gan=False, fm=False),
    "full_detail": Variant(form="full"),
    "attn_lora": Variant(form="attn_lora"),
    "no_split": Variant(split=False),
}
ABLATIONS = tuple(name for name in VARIANTS if name not in ("cm", "dcm"))
LABELS = {
    "dcm": "DCM (all components)", "no_tc": "- Temporal Coherence Loss", "no_gan": "- GAN loss",
    "no_fm": "- Feature Matching loss", "no_gan_fm": "- GAN and FM", "full_detail":
    "full detail expert (no LoRA sharing)", "attn_lora": "LoRA on attention only (paper's "
    "targets; no adaLN adapters)", "no_split": "- expert split (one student, all losses)",
    "cm": "single-expert CM (no DCM component)"}
# name: (student whose semantic expert runs the steps above the phase boundary, student whose
# detail expert runs the steps below it), both of one distillation seed; "cm"/"cm" is the paper's
# VCM and "dcm"/"dcm" its SemE+DetE.
EXPERT_SWAPS = {"SemE+VCM": ("dcm", "cm"), "VCM+DetE": ("cm", "dcm")}
