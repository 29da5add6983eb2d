r"""MoEQuant: RTN, GPTQ, EBSS and AGQ on MoE LMs, scored against the float model.

  python -m experiments.moequant --config=configs/moequant.py[:quick] --workdir=DIR \
      [--config.models=<names or paths>]

Writes DIR/results.json, DIR/results.md, DIR/bpb_loss.png and DIR/expert_tokens.png.
"""
from experiments import app
from moe_jax.quant import moequant_experiment

if __name__ == "__main__":
  app.run(moequant_experiment.EXPERIMENT)
