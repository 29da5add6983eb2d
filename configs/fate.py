r"""Fate: cross-layer expert prefetching, a shallow-favouring ARC expert cache, quantized offload.

Paper: Fang et al., "Accurate Expert Predictions in MoE Inference via Cross-Layer Gate" (Fate),
arXiv 2502.12224 (code: FFFzy/Fate_open). Claims: adjacent gate inputs alike (cosine above
83%), 97% decode prediction accuracy, 99% hit rate, up to 4.5x / 4.1x prefill / decode speedup
over load on demand and 1.9x / 2.2x over an expert-activation-path method.

Command:
  python -m experiments.fate --config=configs/fate.py --workdir=/tmp/moe_jax/fate
On a Hugging Face checkpoint (its own tokenizer's ids; groups dividing its widths):
  python -m experiments.fate --config=configs/fate.py --workdir=/tmp/fate_hf \
    --config.model=/models/X --config.data.tokens_path=/data/x_ids.npy

Model: the deep_top1 base model (8 MoE layers of 8 experts, top-1). Default (0.4 min on 2
cores once deep_top1 is cached): cosine 0.86, decode recall 0.65 (EAP 0.23), Fate's hit rate
0.98 at the largest budget, estimated speedups 1.7x / 1.2x over load on demand (prefill /
decode); docs/fate.md. Quick preset: deep_top1:quick, 4 experts of width 32, groups 32 / 16.
Deviations: times are the two-stream timeline's estimates (the link is modelled; on an H200 the
real decoder's copies were per-call bound, docs/fate.md); the budget counts routed experts only;
the EAP baseline is first-order; quality is held-out bits per byte, not MMLU.
"""
from moe_jax.inference.fate.fate_experiment import FateConfig
from moe_jax.utils.errors import check_choice


def get_config(preset: str = "") -> FateConfig:
  check_choice("preset", preset, ("", "quick"))
  config = dict(
      model="deep_top1",
      data=dict(sources=("english", "python"), split="held_out", seq_len=192, max_tokens=12288),
      requests=dict(prompt_len=128, predict=(1, 2), batch_size=16),
      offload=dict(budgets=(0.125, 0.25, 0.5, 0.75), int2_rate=0.3, int4_group=64,
                   int2_group=32),
      link=dict(bandwidth_gb_s=25.0, latency_us=10.0),
      decoder=dict(requests=4, new_tokens=16, budget=0.25),
      eval_windows=64, eval_seq_len=256)
  if preset == "quick":
    config.update(model="deep_top1:quick", eval_windows=4, eval_seq_len=32)
    config["data"].update(sources=("english",), seq_len=32, max_tokens=512)
    config["requests"].update(prompt_len=24, batch_size=8)
    config["offload"].update(int4_group=32, int2_group=16)
    config["decoder"].update(requests=2, new_tokens=4)
  return FateConfig.from_dict(config)
