r"""Routing report of any MoE LM: load, expert collapse, similarity, affinity, placement, Fate.

Papers whose diagnostics it joins: HoME (Wang et al. 2024, zero-activation fraction and output
scale per expert), MC-SMoE (Li et al. 2024, router-logit similarity), ExFlow (Yao et al. 2024,
inter-layer affinity and placement), Fate (Fang et al. 2025, cross-layer gate-input similarity and
prediction), MoEQuant (Chen et al. 2025, the expert-frequency spread of calibration data).
Data: held-out documents of the text that ships with Python (or --config.data.files, or
--config.data.tokens_path for a checkpoint with its own tokenizer).

Command:
  python -m experiments.analyze --config=configs/analyze.py --workdir=/tmp/moe_jax/analyze \
      [--config.model=<base-model name, HF directory or training workdir>]

Result and run time: docs/analyze.md. Presets: "quick" (a quick base model, seconds; the
tests), "" (the tiny_moe base model over 64k tokens).
"""
from moe_jax.analysis.analyze_experiment import AnalyzeConfig
from moe_jax.utils.errors import check_choice


def get_config(preset: str = "") -> AnalyzeConfig:
  check_choice("preset", preset, ("", "quick"))
  c = dict(model="tiny_moe", data=dict(seq_len=256, max_tokens=65536), batch_size=16,
           devices=(2, 4, 8), time_limit=5.0)
  if preset == "quick":
    c.update(model="tiny_moe:quick", data=dict(seq_len=64, max_tokens=1024), batch_size=8,
             time_limit=1.0)
  return AnalyzeConfig.from_dict(c)
