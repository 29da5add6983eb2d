r"""SlimMoE: expert slimming, multi-stage vs one-shot, scores, dropping and merging baselines.

  python -m experiments.slimmoe --config=configs/slimmoe.py[:quick] --workdir=DIR \
      [--config.model=fine_shared --config.targets=0.5,0.25 --config.schedule.attention_ratio=0.5]

Writes DIR/results.json (targets.target_<j>.rows.<row>.{bpb, task_acc, params, ...}, stages,
baselines, summary, claims), DIR/results.md and DIR/slimmoe_bpb.png.
"""
from experiments import app
from moe_jax.compress.slimmoe import slimmoe_experiment

if __name__ == "__main__":
  app.run(slimmoe_experiment.EXPERIMENT)
