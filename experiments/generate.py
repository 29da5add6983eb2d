r"""Greedy generation with Hugging Face MoE checkpoints, checked against transformers.

  python -m experiments.generate --config=configs/generate.py[:quick] --workdir=DIR
  python -m experiments.generate --config=configs/generate.py \
      --config.hf_path=/models/Mixtral-8x7B-v0.1 --config.dtype=bfloat16 --workdir=DIR

Writes DIR/results.json ({"models": {name: {...}}, "published": {...}}), DIR/results.md and
DIR/parity.png.
"""
from experiments import app
from moe_jax.convert import generate_experiment

if __name__ == "__main__":
  app.run(generate_experiment.EXPERIMENT)
