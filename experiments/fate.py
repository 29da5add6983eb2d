r"""Fate: cross-layer prediction, expert cache replays, quantized offload, the offloaded decoder.

  python -m experiments.fate --config=configs/fate.py[:quick] --workdir=DIR \
      [--config.model=deep_top1] [--config.offload.budgets=0.125,0.25,0.5,0.75]

Writes DIR/results.json, DIR/results.md and DIR/hit_rates.png.
"""
from experiments import app
from moe_jax.inference.fate import fate_experiment

if __name__ == "__main__":
  app.run(fate_experiment.EXPERIMENT)
