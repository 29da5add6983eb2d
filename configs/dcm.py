"""DCM: Dual-Expert Consistency Model for Efficient and High-Quality Video Generation.

Lv et al., ICCV 2025, arXiv 2506.03123, code github.com/Vchitect/DCM. A tiny rectified-flow video
DiT teacher on moving sklearn digits (8 frames, 16x16, 1 channel) is distilled into a few-step
student two ways: a single-expert phased consistency model (CM), and DCM (semantic expert on the
high-noise phase + Temporal Coherence Loss; LoRA detail expert on the low-noise phase + GAN and
Feature Matching losses), plus the ablation with each DCM component off.

Command (default preset, the documented reproduction):
  python -m experiments.dcm --config=configs/dcm.py --workdir=/tmp/dcm
Presets: `quick` (the end-to-end test; compile-bound), `medium` (shorter, one distillation seed),
default (the reproduction below).

Deviations from the paper's code, for scale (also in the results header):
  - data and model: 8x16x16x1 pixel clips instead of VAE latents; unconditional (no text, no CFG;
    the HunyuanVideo recipe also distils the conditional teacher without CFG); a 4-block DiT of
    width 48 with patch 4 instead of HunyuanVideo / Wan; the teacher is trained here.
  - flow shift 3 instead of 17 (17 is tuned to 720p latents; on 2k-dim clips it puts 45 of the 50
    grid nodes above s = 0.9). The 50-step grid, the boundary index (38 of 50: the semantic expert
    owns the top 12 nodes) and the phase ends follow the code; the boundary is s = 0.905 here.
  - LoRA rank 8, alpha 16 (paper 128 / 256 on width 3072); discriminator heads of width 64.
  - learning rates 1e-4 (full fine-tunes), 5e-4 (LoRA), 1e-3 (discriminator) instead of 1e-6,
    5e-6, 1e-5, and hundreds of steps instead of 1500 + 1000.
  - the CM baseline interleaves semantic- and detail-phase batches in the same numbers as DCM's two
    stages (same budget, same phase ends) with one set of weights.

Measured, default preset (`--config=configs/dcm.py`; 18.8 min on 2 otherwise idle cores, peak
memory 2.5 GB): one teacher, CM and DCM each distilled with 3 seeds (mean ± std). At 4 steps,
FD / temporal err / detail err (FD classifier: digit acc 0.54, direction acc 0.72):
  teacher, 51 steps: FD 55.6;  teacher, 4 steps: 151.1 / 0.100 / 0.85
  CM:  50.9 ± 2.2 / 0.113 ± 0.004 / 0.85 ± 0.10
  DCM: 52.6 ± 3.8 / 0.101 ± 0.013 / 0.35 ± 0.18
  DCM - CM paired by seed: FD +1.7 (DCM lower in 1 of 3 seeds), temporal -0.012 (2 of 3),
  detail -0.50 (3 of 3).
  Ablation (seed 0, 4 steps; FD / temporal / detail): CM 53.8 / 0.114 / 0.71; DCM 47.2 / 0.118 /
  0.57; - TC 47.8 / 0.116 / 0.43; - GAN 80.2 / 0.222 / 0.71; - FM 45.7 / 0.110 / 0.41; - GAN and
  FM 80.7 / 0.210 / 1.06; full detail expert instead of LoRA 77.6 / 0.156 / 1.36; no expert
  split (one student, all losses) 57.9 / 0.163 / 1.34.
Six distillation seeds (same teacher; `--config.student_seeds=6 "--config.ablations=()"`, 19.5
min; seeds 0-2 repeat the rows above exactly): at 4 steps CM 51.9 ± 2.2 / 0.112 ± 0.009 / 0.81 ±
0.15, DCM 49.2 ± 4.4 / 0.113 ± 0.018 / 0.47 ± 0.22; DCM - CM paired: FD -2.6 (sample std 7.0,
lower in 4 of 6), temporal +0.001 (3 of 6), detail -0.34 (6 of 6).
What reproduces: both few-step students approach the teacher (4-step FD ~51-53 against the
teacher's 151 at 4 steps and 55.6 at 51 steps); DCM's detail error is lower than CM's in every
seed (0.35 vs 0.85; 6 of 6 seeds in the longer run); the GAN term is the
component that matters most (without it FD 80), the LoRA detail expert beats a full one, and
splitting the student beats one student with all losses. The paper's diagnosis reproduces: the
single student's CD loss and gradient norm are ~15x and ~9x larger on the detail phase, joint
training raises its semantic-phase loss (8.6e-5 at init -> 5.1e-4) while DCM's own semantic
expert lowers it (1.1e-5). What does NOT reproduce at this scale: DCM's FD and temporal error are
not reliably lower than CM's: the paired differences are within seed noise (3 seeds: FD +1.7,
lower in 1, temporal -0.012, lower in 2; 6 seeds: FD -2.6 ± 7.0, lower in 4, temporal a tie).
1- and 2-step DCM is worse than CM (its semantic expert is trained to reach the phase boundary,
not s = 0, as in the paper, which reports 4 and 8 steps).
Medium preset (one distillation seed; the whole pipeline with seeds 0 and 1, 30-35 min each on 2
loaded cores): FD as seed-dependent (at 4 steps DCM 50.3 / 28.8 vs CM 39.9 / 39.4), detail error
lower in both (0.35 / 0.58 vs 0.74 / 0.99).
"""
from __future__ import annotations

import ml_collections

from moe_jax.utils.errors import check_choice

ABLATIONS = ("no_tc", "no_gan", "no_fm", "no_gan_fm", "full_detail", "no_split")


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  check_choice("preset", preset, ("", "quick", "medium"))
  c = ml_collections.ConfigDict()
  c.preset = preset or "default"
  c.seed = 0
  # Data: moving sklearn digits.
  c.frames = 8
  c.size = 16
  c.n_train = 4000
  c.n_test = 512
  # Denoiser (teacher and students).
  c.patch = 4
  c.width = 48
  c.depth = 4
  c.heads = 4
  c.mlp_ratio = 2
  c.feature_stride = 2          # D taps every 2nd block (code: discriminator_head_stride 2)
  # Schedule: rectified flow, shifted 50-step Euler grid, phase split at grid index 38.
  c.shift = 3.0
  c.euler_steps = 50
  c.boundary_index = 38
  # Teacher.
  c.teacher_steps = 4000
  c.teacher_batch = 32
  c.teacher_lr = 1e-3
  c.teacher_ema = 0.995
  # Distillation (same budget for CM and DCM: semantic_steps + detail_steps generator steps).
  c.batch = 16
  c.semantic_steps = 600
  c.detail_steps = 400
  c.lr_semantic = 1e-4          # full fine-tunes (semantic expert, CM, full detail expert)
  c.lr_detail = 5e-4            # LoRA detail expert
  c.lr_discriminator = 1e-3
  c.student_seeds = 3           # CM and DCM are distilled with this many seeds (one teacher)
  c.lora_rank = 8
  c.lora_alpha = 16.0
  c.disc_hidden = 64
  c.disc_groups = 8
  # Losses (code defaults: HunyuanVideo recipe).
  c.huber_c = 1e-3
  c.tc_weight = 1.0
  c.tc_stride = 3
  c.adv_weight = 0.1
  c.gan_weight = 5.0
  c.fm_weight = 1.0
  c.gan_loss = "hinge"
  c.ablations = ABLATIONS
  # Evaluation.
  c.classifier_steps = 1000
  c.classifier_batch = 32
  c.classifier_lr = 2e-3
  c.n_eval = 256
  c.eval_steps = (1, 2, 4)
  c.ablation_steps = 4
  c.diag_batch = 32

  if preset == "quick":
    c.n_train, c.n_test = 64, 32
    c.width, c.depth, c.heads, c.feature_stride = 16, 1, 2, 1
    c.euler_steps, c.boundary_index = 10, 8
    c.teacher_steps, c.teacher_batch = 10, 8
    c.batch, c.semantic_steps, c.detail_steps, c.student_seeds = 4, 3, 3, 2
    c.lora_rank, c.lora_alpha = 2, 4.0
    c.disc_hidden, c.disc_groups = 8, 2
    c.ablations = ("no_tc",)
    c.classifier_steps, c.classifier_batch = 5, 16
    c.n_eval, c.diag_batch = 16, 4
  elif preset == "medium":
    c.n_train = 3000
    c.teacher_steps = 1500
    c.semantic_steps, c.detail_steps, c.student_seeds = 300, 200, 1
    c.classifier_steps = 400
    c.n_eval = 256
  return c
