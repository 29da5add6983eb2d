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
    width 48 with patch 4 instead of HunyuanVideo / Wan; the teacher is trained here (8000
    steps, 10.7 min). It is far from perfect: its frame coherence (how well each frame is its
    predecessor moved, `metrics.frame_coherence`) is 0.70 where real clips score 1.0, so its
    digits drift in shape from frame to frame.
  - flow shift 3 instead of 17 (17 is tuned to 720p latents; on 2k-dim clips it puts 45 of the 50
    grid nodes above s = 0.9). The 50-step grid and the phase ends follow the code. The phase
    boundary is the paper's noise level, not its grid index: s = 0.98176 (node 38 of the shift-17
    grid, set on 8x90x160x16 HunyuanVideo latents) carried to our 2,048-dim clips at equal
    signal-to-noise per dimension (SD3 eq. 23, `schedule.resolution_equivalent_sigma`) is
    s = 0.642, node 19 (s = 0.648) of our grid. The teacher's synthesis timeline agrees with the
    paper's premise there: at s = 0.648 its clean-clip estimate has 0.981 layout and 0.923 motion
    correlation with the final clip; at node 38 taken literally (s = 0.905, this config until
    2026-11-26) only 0.79 / 0.63.
  - LoRA rank 8, alpha 16 (paper 128 / 256 on width 3072), on the attention projections (as the
    paper) and on each block's adaLN modulation layer (not in the paper; why: below);
    discriminator heads of width 64.
  - learning rates 1e-4 (full fine-tunes), 5e-4 (LoRA), 1e-3 (discriminator) instead of 1e-6,
    5e-6, 1e-5, and 1200 + 800 steps instead of 1500 + 1000.
  - the CM baseline interleaves semantic- and detail-phase batches in the same numbers as DCM's two
    stages (same budget, same phase ends) with one set of weights.

Measured, default preset (`--config=configs/dcm.py`; 51.4 min on 2 otherwise idle cores, peak
memory 2.9 GB; the same numbers as the two runs before it): one teacher, CM and DCM each distilled
with 5 seeds (mean ± std). At 4 steps, FD / FD to teacher (the classifier's FD against the
teacher's 51-step samples) / temporal err / detail err / frame coherence (FD classifier: digit
acc 0.83, direction 0.75):
  teacher, 51 steps: FD 79.7, coherence 0.70;  teacher, 4 steps: 217.9 / 57.5 / 0.046 / 0.49 / 0.72
  CM:  61.5 ± 1.1 / 10.0 ± 1.4 / 0.038 ± 0.001 / 0.20 ± 0.01 / 0.68
  DCM: 66.9 ± 10 / 17.5 ± 20 / 0.045 ± 0.008 / 0.15 ± 0.12 / 0.69
  DCM - CM paired by seed (mean ± standard error): FD +5.4 ± 4.9 (DCM lower in 2 of 5), temporal
  +0.0064 ± 0.0040 (lower in 1 of 5), detail -0.044 ± 0.059 (lower in 3 of 5). Per seed, DCM's
  temporal error is 0.040 / 0.048 / 0.038 / 0.059 / 0.038 against CM's 0.038 / 0.040 / 0.036 /
  0.038 / 0.039: three seeds at CM's level (one below it) and two whose detail expert drifted
  (detail err 0.24 and 0.36). FD to teacher +7.5 ± 9.8 (3 of 5). At 2 steps (one jump per phase,
  the sampler the phased students are trained for) FD +0.5 ± 10 (2 of 5), FD to teacher +6.9 ±
  3.4 (0 of 5), temporal +0.008 (0 of 5), detail +0.080 (0 of 5); at 1 step DCM is worse on every
  metric. CM's 2-step samples are nearly the teacher's as a set (FD to teacher 0.68 ± 0.06) and
  their FD is 83.9 ± 1.9, next to the teacher's 79.7; its 4-step samples leave the teacher (10.0)
  and reach FD 61.5.
  Which expert helps (the paper's Fig. 3 asked of these students: the 4-step sampler with CM's
  and DCM's halves exchanged per seed, paired against CM; results.md): DCM's semantic expert with
  CM's detail steps (SemE+VCM) brings the samples closer to the teacher in every seed (FD to
  teacher -2.0 ± 0.4, 5 of 5; detail err -0.029 ± 0.001, 5 of 5) and raises FD in every seed
  (+1.8 ± 0.3, 0 of 5); temporal +0.0008 ± 0.0005 (2 of 5). CM's semantic steps with DCM's detail
  expert (VCM+DetE): FD to teacher +10 ± 11 (3 of 5), FD +4.7 ± 4.1 (2 of 5), temporal +0.0049 ±
  0.0040 (3 of 5): the drifting detail expert is where DCM loses. A scratch probe with the paper's
  Fig. 3 experts (a full detail expert trained from the teacher on the detail phase alone, plain
  CD, 800 steps; 5 seeds): VCM+DetE FD +2.7 ± 0.8 (0 of 5), temporal -0.0009 ± 0.0005 (4 of 5),
  detail -0.028 (4 of 5); SemE+DetE FD +4.7 ± 1.1 (0 of 5), temporal -0.0002 ± 0.0006 (3 of 5),
  detail -0.055 (5 of 5). Each dedicated expert makes its half follow the teacher more closely,
  and each time FD against real clips gets worse.
  Ablation (seed 0, 4 steps; FD / temporal / detail): CM 60.9 / 0.0383 / 0.19; DCM 81.6 / 0.0397 /
  0.052; - TC 69.9 / 0.0423 / 0.085; - GAN 66.2 / 0.0387 / 0.096; - FM 92.0 / 0.0399 / 0.069; -
  GAN and FM 63.2 / 0.0420 / 0.145; full detail expert 80.7 / 0.0389 / 0.071; LoRA on attention
  only (the paper's targets) 73.3 / 0.0466 / 0.086; no expert split 61.2 / 0.0438 / 0.218.
  Where the full detail expert differs from its semantic expert (relative weight change): adaLN
  0.044, timestep embedder 0.043, MLP in 0.033, output head 0.030, attention 0.021-0.026.
What reproduces: the few-step students approach the teacher and pass it on FD (61-67 at 4 steps
against 218 for the teacher's own 4 steps and 79.7 for its 51); the diagnosis: the single
student's CD loss and gradient norm are 4.5x and 2.6x larger on the detail phase at init; DCM's
own semantic expert reaches a lower semantic-phase loss than the shared CM student (3.2e-4 vs
4.4e-4), and its state at the phase boundary is closer to the teacher's path from the same noise
(MSE 0.00077 against CM's 0.00107 / 0.00112, seeds 0 / 1, scratch probe); with CM's detail
steps it brings the 4-step samples closer to the teacher in all 5 seeds (above); DCM's detail
error is the lowest of all variants in its good seeds (0.05 against CM's 0.19). The ablation
rows of TC, GAN and FM (seed 0) differ by 0.002-0.004 in temporal error, but the seed-to-seed
spread of DCM itself is 0.008, and the semantic experts trained with and without TC are equal to
two digits (boundary MSE 0.00077 / 0.00077 and 0.00077 / 0.00076): TC's gradient is about 2% of
the consistency term's, and the differences come from the detail stage, which amplifies small
changes. At this scale the ablation cannot attribute a gain to TC, GAN or FM.
What does NOT reproduce at this scale: DCM's lower FD and temporal error than CM. Two things stand
in the way. (1) FD and closeness to the teacher pull apart here: the teacher's own FD (79.7) is
worse than the students' (61), so a student that follows the teacher's samples more closely also
moves towards the teacher's FD. Across the run's 17 students (10 seeds and 7 ablations), FD and
detail error correlate at -0.79; across DCM's seeds, FD and temporal error at -0.76. In the paper
the teacher's VBench total (83.87) is above every student's, so the two goals agree; with this
teacher "approach the teacher" and "lower FD than CM" pull against each other. A longer teacher does
not change that (scratch probe): at 12k / 16k / 20k steps its FD is 73.9 / 72.5 / 69.8, and students
distilled from the 20k teacher (seeds 0, 1) again pass it: CM 55.6 / 55.7, DCM 53.6 / 70.6, with
temporal error 0.047 / 0.047 (CM) and 0.065 / 0.054 (DCM). Nor does FD here reward blur: a 0.5-px
Gaussian blur raises the teacher's FD from 79.7 to 135, and more Euler steps lower it (8 steps 125,
200 steps 75). Training the teacher on uniform noise levels instead of shift-3 ones does not help
either: FD 79.8 at 8k steps (shift 3: 79.7). (2) The discriminator does not tell the student's jump
from the teacher's target. Its hinge loss over the last quarter of every detail stage is
1.997-2.001, against 2.0 for one that cannot tell them apart (results.json `discriminator`; a replay
of seed 1 shows it there from step 100 on). Yet adding the GAN term makes the detail expert's
gradient norm 1.1-6.3x that of the consistency term alone (seed 1, every 100 steps), so it moves the
adapters along directions the discriminator does not rely on: DCM's detail error spreads 0.05-0.36
across seeds, CM's 0.18-0.21. A smaller adversarial weight (0.02 instead of the paper's 0.1; seeds
0, 1, 3, scratch probe) shrinks the drift (temporal 0.038 / 0.041 / 0.041 against 0.040 / 0.048 /
0.059) but does not beat CM (0.038 / 0.040 / 0.038), and FD is 68 / 63 / 62 against CM's 61 / 60 /
61. The default keeps the paper's 0.1.
Why the detail expert adapts the adaLN layers (`lora_adaln`; seed-0 probes, scratch scripts): with
the paper's attention-only LoRA, the detail expert fits the detail phase no better than the
teacher it started from. Its held-out detail-phase CD loss (512 test clips) is 0.0050, the
teacher's 0.0050 and CM's 0.0030. Rank 24 (0.0048), learning rates 1e-4 to 5e-4 (0.0049-0.0051)
and LoRA on the teacher instead of the semantic expert (0.0048) do not change that. Making
the adaLN layers trainable does (0.0034, as low as a full detail expert's); the MLPs (0.0046) and
the embeddings (0.0049) do not. Two full experts trained apart from the teacher, one per phase,
differ most in adaLN (0.105), the timestep embedder (0.088) and the output head (0.067), and
least in attention (0.028-0.045). This is the paper's own test for what the detail expert should
own. Our timestep reaches every block only through a 48-dim embedding (HunyuanVideo: 3072), so a
copied embedder steers the blocks' modulation far less than in the paper. With LoRA r8 on adaLN,
held-out loss is 0.0039 and the learning rate is unchanged (5x the semantic rate, as in the paper).
These probes used seed 0 and the evaluation noise, and I saw their temporal errors too; the
choice rests on the held-out loss and the weight analysis.
The TC loss is small against the CD term at this scale: at init its gradient is 1.9% of the
pseudo-Huber term's on the semantic phase (same weight 1 as the paper).
History (all with the same teacher unless said): with attention-only LoRA (the default until
2026-11-26, session 6) DCM at 4 steps was 58.3 ± 7.8 / 0.052 ± 0.004 / 0.17 ± 0.06, and DCM - CM
was FD -3.2 ± 4.0 (4 of 5 lower), temporal +0.013 ± 0.002 (0 of 5), detail -0.028 ± 0.030 (3 of
5). Before that, the teacher had no rotary positions, absolute embeddings at 0.02 and 4000 steps
at 1e-3 (frame coherence 0.48: its samples were not recognisable moving digits), the students
600 + 400 steps and the FD classifier 1000 steps (digit acc 0.54). Against that teacher DCM - CM
at 4 steps was FD -0.13 ± 0.96, temporal -0.0023 ± 0.0024, detail -0.158 ± 0.028 (5 seeds; 10
seeds: +0.48 ± 0.86, -0.0009 ± 0.0015, -0.144 ± 0.026), and with 1200 + 800 steps FD -0.59 ±
1.01, temporal -0.0062 ± 0.0018 (5 of 5), detail -0.161 ± 0.024. Those comparisons were made on
a teacher that could not keep a digit across frames.
Medium preset (`:medium`; 9.5 min; teacher 1500 steps, frame coherence 0.63; one seed; its FD
classifier has 400 steps, so its FD scale is not the default's): at 4 steps CM 16.3 / 0.030 /
0.36, DCM 26.3 / 0.040 / 0.086, teacher 51 steps FD 18.3: DCM is worse on FD and temporal error
and better on detail error. Its discriminator losses sit at chance too (1.996-2.001).
"""
from __future__ import annotations

import ml_collections

from moe_jax.utils.errors import check_choice

ABLATIONS = ("no_tc", "no_gan", "no_fm", "no_gan_fm", "full_detail", "attn_lora", "no_split")


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
  # Schedule: rectified flow, shifted 50-step Euler grid. Phase split at the grid node nearest the
  # paper's boundary (s = 0.98176 on HunyuanVideo latents of 1,843,200 dims) carried to 2,048-dim
  # clips at equal signal-to-noise per dimension: s = 0.642 -> node 19 (s = 0.648).
  c.shift = 3.0
  c.euler_steps = 50
  c.boundary_index = 19
  # Teacher.
  c.teacher_steps = 8000
  c.teacher_batch = 32
  c.teacher_lr = 5e-3
  c.teacher_ema = 0.995
  # Distillation (same budget for CM and DCM: semantic_steps + detail_steps generator steps).
  c.batch = 16
  c.semantic_steps = 1200
  c.detail_steps = 800
  c.lr_semantic = 1e-4          # full fine-tunes (semantic expert, CM, full detail expert)
  c.lr_detail = 5e-4            # LoRA detail expert
  c.lr_discriminator = 1e-3
  c.student_seeds = 5           # CM and DCM are distilled with this many seeds (one teacher)
  c.lora_rank = 8
  c.lora_alpha = 16.0
  c.lora_adaln = True           # adapters on each block's adaLN layer too (paper: attention only)
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
  c.classifier_steps = 3000
  c.classifier_batch = 32
  c.classifier_lr = 2e-3
  c.n_eval = 256
  c.eval_steps = (1, 2, 4)
  c.ablation_steps = 4
  c.diag_batch = 32
  c.timeline_pool = 4           # coarse layout = 4x4 average pool (synthesis timeline)

  if preset == "quick":
    c.n_train, c.n_test = 64, 32
    c.width, c.depth, c.heads, c.feature_stride = 16, 1, 2, 1
    c.euler_steps, c.boundary_index = 10, 4
    c.teacher_steps, c.teacher_batch = 10, 8
    c.batch, c.semantic_steps, c.detail_steps, c.student_seeds = 4, 3, 3, 2
    c.lora_rank, c.lora_alpha = 2, 4.0
    c.disc_hidden, c.disc_groups = 8, 2
    c.ablations = ("no_tc", "full_detail", "attn_lora")
    c.classifier_steps, c.classifier_batch = 5, 16
    c.n_eval, c.diag_batch = 16, 4
  elif preset == "medium":
    c.n_train = 3000
    c.teacher_steps = 1500
    c.semantic_steps, c.detail_steps, c.student_seeds = 300, 200, 1
    c.classifier_steps = 400
    c.n_eval = 256
  return c
