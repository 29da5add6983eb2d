r"""MoEQuant (Chen et al., ICML 2025, arXiv 2505.03804): EBSS calibration and AGQ against GPTQ.

RTN, GPTQ on corpus text, GPTQ on EBSS samples, GPTQ + AGQ, EBSS + AGQ (MoEQuant) at W4
per-channel, W4 g128 (the largest group <= 128 every input width allows: 64 on both base models)
and W3 per-channel, on tiny_moe and fine_shared (any HF checkpoint: --config.models=<dir>).
Paper (4-bit 7-task average): Mixtral-8x7B GPTQ 48.84 vs MoEQuant 55.58 (FP 56.80).

  python -m experiments.moequant --config=configs/moequant.py --workdir=/tmp/moe_jax/moequant

Result: docs/moequant.md. Default (30 min on 2 cores): GPTQ beats RTN, but MoEQuant does not
beat GPTQ on corpus text (W3 per-channel: +0.0141 vs +0.0091 bpb on tiny_moe) and EBSS data is
less balanced than corpus text on our evenly routed models. Quick preset: a pipeline check.
Deviations for scale: 128 x 64-token calibration sequences (the paper's 128 x 512; our context is
512 and our models small); EBSS scores the 16 likeliest tokens per beam (the fork 64 of 32k+),
sigma averaged over MoE layers (unspecified in the paper), first token printable ASCII; routers
stay in float; no QuaRot rotation (the paper's MoEQuant++ rows); task suite as a stand-in for the
paper's zero-shot tasks. Presets: "quick" (the quick base models, a small evaluation), "".
"""
from configs import common
from moe_jax.quant.moequant_experiment import MoEQuantConfig
from moe_jax.utils.errors import check_choice


def get_config(preset: str = "") -> MoEQuantConfig:
  check_choice("preset", preset, ("", "quick"))
  c = dict(models=("tiny_moe", "fine_shared"), settings=("w4", "w4g128", "w3"),
           quant=dict(mse_clip=True, damp=0.01, block_size=128, batch_size=16),
           calibration=dict(num_samples=128, seq_len=64, seed=0, batch_size=16),
           ebss=dict(width=4, tau=1.2, branch=16, spread="mean", batch_size=16),
           eval=dict(data=common.shipped_text(max_eval_windows=128), seq_len=256, batch_size=16,
                     num_items=300))
  if preset == "quick":
    c.update(models=("tiny_moe:quick", "fine_shared:quick"), settings=("w4", "w3"),
             calibration=dict(num_samples=16, seq_len=32, batch_size=16),
             ebss=dict(width=4, tau=1.2, branch=8, batch_size=16),
             eval=dict(data=common.shipped_text(sources=("english",), max_eval_windows=4),
                       seq_len=128, batch_size=8, tasks=("continuation",), num_items=16))
  return MoEQuantConfig.from_dict(c)
