r"""Trains the MoE LM of a config (and, with `compare_dense`, its dense twin).

  python -m experiments.train --config=configs/lm_tiny.py[:quick] --workdir=DIR \
      [--config.train.num_steps=...]

Writes DIR/results.json, DIR/results.md, DIR/learning_curves.png; checkpoints, metrics.jsonl and
TensorBoard events under DIR/moe (and DIR/dense). Re-running with the same DIR resumes.
"""
from experiments import app
from moe_jax.train import lm_experiment

if __name__ == "__main__":
  app.run(lm_experiment.EXPERIMENT)
