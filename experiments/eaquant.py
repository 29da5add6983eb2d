r"""EAQuant: rotation + GPTQ W4A4 / W3A4 base and EAQuant's three pieces, scored against the float
model.

  python -m experiments.eaquant --config=configs/eaquant.py[:quick] --workdir=DIR \
      [--config.models=<names or paths>]

Writes DIR/results.json, DIR/results.md, DIR/bpb_loss.png and DIR/routing.png.
"""
from experiments import app
from moe_jax.quant import eaquant_experiment

if __name__ == "__main__":
  app.run(eaquant_experiment.EXPERIMENT)
