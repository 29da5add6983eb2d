r"""MC-SMoE: merge experts by their routing policy, then compress the merged experts.

Paper: Li et al., "Merge, Then Compress: Demystify Efficient SMoE with Hints from Its Routing
Policy", ICLR 2024, arXiv 2310.01334 (code UNITES-Lab/MC-SMoE): up to 80% memory and 20% FLOPs
saved with virtually no loss; M-SMoE beats averaging, random merging and dropping.
Data: the text that ships with Python; calibration and distillation on the training documents,
scores on the held-out ones (every 10th document).

Command:
  python -m experiments.mcsmoe --config=configs/mcsmoe.py --workdir=/tmp/moe_jax/mcsmoe \
      [--config.model=<base-model name, HF directory or training workdir>]

Result: docs/mcsmoe.md (default on the trained tiny_moe: M-SMoE beats averaging and random
grouping after KD, dropping the least-used experts beats it; MC-SMoE saves 87% memory and 56%
FLOPs at 1.52x the bits per byte). Run time: default (16 -> 8 and 16 -> 4, 14 distillation runs
of 40 x 8 x 256 tokens) 14.1 min on 2 CPU cores, the base model's one-time training not counted;
"quick" (tiny_moe:quick, 4 -> 3 and 4 -> 2) is a compile-bound pipeline check: its 14
distillation runs share 6 compiled train steps (4.2 min when each compiled its own).
Deviations for scale: recovery is 82k tokens per row (the repo: 10 epochs of a task); LoSparse's
rank keeps the repo's share of a matrix (32 at 768 x 3072 -> 6 at 192 x 256) and its schedule
4 / 16 flat steps (repo 50 / 200); every MoE layer is merged (Switch keeps its first); AdamW on
the project's schedule (the repo: eps 1e-6, betas 0.9 / 0.98).
"""
from configs import common
from moe_jax.compress.mcsmoe.mcsmoe_experiment import MCSMoEConfig
from moe_jax.utils.errors import check_choice


def get_config(preset: str = "") -> MCSMoEConfig:
  check_choice("preset", preset, ("", "quick"))
  kd = common.lm_train(num_steps=40, batch_size=8, seq_len=256, lr=1e-3, warmup_steps=4,
                       weight_decay=0.01, log_every=10, eval_every=40, eval_batch_size=16,
                       save_every=40, keep=1)
  c = dict(model="tiny_moe", targets=(8, 4),
           eval=dict(data=common.shipped_text(max_eval_windows=64), seq_len=256, batch_size=16,
                     num_items=100),
           calibration_windows=64, calibration_seq_len=256, kd=kd,
           losparse=dict(rank=0, final_fraction=0.10, warmup_steps=4), usage_windows=16,
           batch_size=16)
  if preset == "quick":
    kd.update(num_steps=6, batch_size=4, seq_len=32, warmup_steps=1, log_every=3, eval_every=6,
              eval_batch_size=4, save_every=6)
    c.update(model="tiny_moe:quick", targets=(3, 2),
             eval=dict(data=common.shipped_text(sources=("english",), max_eval_windows=4),
                       seq_len=128, batch_size=8, tasks=("continuation",), num_items=8),
             calibration_windows=16, calibration_seq_len=32,
             losparse=dict(rank=0, final_fraction=0.10, warmup_steps=1, one_shot_batches=2),
             usage_windows=4, batch_size=8)
  return MCSMoEConfig.from_dict(c)
