r"""Routing report of any MoE LM (load, similarity, affinity, placement, Fate's cross-layer gate).

  python -m experiments.analyze --config=configs/analyze.py[:quick] --workdir=DIR \
      [--config.model=<name or path>]

Writes DIR/results.json, DIR/results.md and the heatmaps experts.png, similarity.png,
affinity.png, layer_pairs.png (DIR/trace with --config.save_trace=true).
"""
from experiments import app
from moe_jax.analysis import analyze_experiment

if __name__ == "__main__":
  app.run(analyze_experiment.EXPERIMENT)
