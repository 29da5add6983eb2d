"""Every experiment `python -m experiments.reproduce` runs, in order: name -> module.

Each module defines `EXPERIMENT` (moe_jax.utils.experiment.Experiment). A new paper registers
with one line here.
"""
EXPERIMENTS = {
    "lm_tiny": "moe_jax.train.lm_experiment",
    "home": "moe_jax.recsys.home_experiment",
    "customization": "moe_jax.customization.experiment",
    "dcm": "moe_jax.video_diffusion.dcm",
    "analyze": "moe_jax.analysis.analyze_experiment",
    "moequant": "moe_jax.quant.moequant_experiment",
    "fate": "moe_jax.inference.fate.fate_experiment",
    "exflow": "moe_jax.inference.exflow.exflow_experiment",
    "eaquant": "moe_jax.quant.eaquant_experiment",
    "mcsmoe": "moe_jax.compress.mcsmoe.mcsmoe_experiment",
    "slimmoe": "moe_jax.compress.slimmoe.slimmoe_experiment",
}
