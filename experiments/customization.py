r"""GE / LE / GN low-cost customization on ten simulated users (arXiv:1811.00056).

  python -m experiments.customization --config=configs/customization.py[:quick] --workdir=DIR \
      [--config.gn.targets=source,ge_error ...]

Writes DIR/results.json, DIR/results.md, users.png, summary.png, samples.png and the orbax
checkpoints DIR/checkpoints/{ge,user_XX}.
"""
from experiments import app
from moe_jax.customization import experiment

if __name__ == "__main__":
  app.run(experiment.EXPERIMENT)
