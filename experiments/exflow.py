r"""ExFlow: affinity, placements, context-coherent expert parallelism, cost model, solver times.

  python -m experiments.exflow --config=configs/exflow.py[:quick] --workdir=DIR \
      [--config.model=deep_top1] [--config.placement.devices=2,4,8]

Writes DIR/results.json, DIR/results.md, DIR/affinity_heatmaps.png, DIR/placements.png,
DIR/placement_map.png and (with training checkpoints) DIR/affinity_over_training.png.
"""
from experiments import app
from moe_jax.inference.exflow import exflow_experiment

if __name__ == "__main__":
  app.run(exflow_experiment.EXPERIMENT)
