"""Every experiment `python -m experiments.reproduce` runs, in order: name -> module.

Each module defines `EXPERIMENT` (moe_jax.utils.experiment.Experiment). A new paper registers
with one line here.
"""
EXPERIMENTS = {
    "lm_tiny": "moe_jax.train.lm_experiment",
    "home": "moe_jax.recsys.home_experiment",
    "customization": "moe_jax.customization.experiment",
    "dcm": "moe_jax.video_diffusion.dcm",
}
