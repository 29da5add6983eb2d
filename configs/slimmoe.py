r"""SlimMoE: slim every expert's hidden width, in stages with distillation between them.

Paper: "SlimMoE: Structured Compression of Large MoE Models via Expert Slimming and
Distillation" (Microsoft, arXiv 2506.18349; no public code): Phi-3.5-MoE (41.9B / 6.6B active)
-> Phi-mini-MoE (7.6B / 2.4B, MMLU ~ Llama-3.1-8B) with 400B tokens; multi-stage beats one-shot.
Data: the text that ships with Python; scores, calibration and distillation on the training
documents, evaluation on the held-out ones (every 10th document).

Command:
  python -m experiments.slimmoe --config=configs/slimmoe.py --workdir=/tmp/moe_jax/slimmoe \
      [--config.model=<base-model name, HF directory or training workdir>]

Result: docs/slimmoe.md (default on the trained tiny_moe: at 1/4 of the expert width slimming
beats dropping and merging; one-shot beats multi-stage at equal tokens). Run time: default (1/2
and 1/4; 10 distillation runs of 200 x 8 x 256 tokens) 15.6 min on 2 CPU cores, the base model's
one-time training not counted; "quick" (tiny_moe:quick, 3/4 and 1/2) is a compile-bound pipeline
check: its 12 distillation runs share 8 compiled train steps (3.2 min when each compiled its own).
Deviations for scale: 410k distillation tokens per row (paper 400B in all); the importance score
is the first-order Taylor |theta * dL/dtheta| of the distillation loss (the paper's exact form
is not public), with the data CE added (its KL has zero gradient at the unpruned model); stage
widths geometric, tokens split evenly, KD temperature 1 (the paper's are not public); attention
groups kept (attention_ratio 1: tiny_moe has 2 KV groups).
"""
from configs import common
from moe_jax.compress.slimmoe.slimmoe_experiment import SlimMoEConfig
from moe_jax.utils.errors import check_choice


def get_config(preset: str = "") -> SlimMoEConfig:
  check_choice("preset", preset, ("", "quick"))
  kd = common.lm_train(num_steps=200, batch_size=8, seq_len=256, lr=1e-3, warmup_steps=10,
                       weight_decay=0.01, log_every=20, eval_every=200, eval_batch_size=16,
                       save_every=200, keep=1)
  c = dict(model="tiny_moe", targets=(0.5, 0.25), stages=2, stage_shares=(0.5, 0.5),
           schedule=dict(calibration_batches=4, kd_top_k=8, kd_temperature=1.0, kd_alpha=1.0,
                         ce_weight=1.0, attention_ratio=1.0),
           eval=dict(data=common.shipped_text(max_eval_windows=64), seq_len=256, batch_size=16,
                     num_items=100),
           kd=kd, calibration_windows=64, batch_size=16)
  if preset == "quick":
    kd.update(num_steps=4, batch_size=4, seq_len=32, warmup_steps=1, log_every=2, eval_every=4,
              eval_batch_size=4, save_every=4)
    c.update(model="tiny_moe:quick", targets=(0.75, 0.5),
             schedule=dict(calibration_batches=2, kd_top_k=8),
             eval=dict(data=common.shipped_text(sources=("english",), max_eval_windows=4),
                       seq_len=128, batch_size=8, tasks=("continuation",), num_items=8),
             calibration_windows=8, batch_size=8)
  return SlimMoEConfig.from_dict(c)
