r"""HoME vs shared-bottom, MMoE, CGC, PLE and HoME's ablations on multi-task recommendation data.

  python -m experiments.home --config=configs/home.py[:quick] --workdir=DIR \
      [--config.models.home.expert_norm=false --config.seeds=0,1 ...]

Writes DIR/results.json (models.<name>.{mean_auc, sparse_auc, max_zero_frac, ...}, claims),
DIR/results.md, DIR/gate_heatmaps.png and DIR/expert_diagnostics.png.
"""
from experiments import app
from moe_jax.recsys import home_experiment

if __name__ == "__main__":
  app.run(home_experiment.EXPERIMENT)
