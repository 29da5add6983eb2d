r"""MC-SMoE: merge the experts of any MoE LM by its routing, then compress them (LoSparse).

  python -m experiments.mcsmoe --config=configs/mcsmoe.py[:quick] --workdir=DIR \
      [--config.model=<name or path>] [--config.targets=8,4]

Writes DIR/results.json, DIR/results.md and DIR/tradeoff.png; the distillation runs resume from
DIR/kd/<target>/<variant>, and the Hugging Face exports go to DIR/export/.
"""
from experiments import app
from moe_jax.compress.mcsmoe import mcsmoe_experiment

if __name__ == "__main__":
  app.run(mcsmoe_experiment.EXPERIMENT)
