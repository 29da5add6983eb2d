r"""DCM (Lv et al. 2025): a teacher, CM and DCM students, the expert swaps and the ablation.

  python -m experiments.dcm --config=configs/dcm.py[:quick|:medium] --workdir=DIR \
      [--config.distill.student_seeds=...]

Writes DIR/results.json, DIR/results.md, samples.png, samples.gif, per_timestep.png,
synthesis_timeline.png and training.png (moe_jax/video_diffusion/dcm.py says what they hold).
"""
from experiments import app
from moe_jax.video_diffusion import dcm

if __name__ == "__main__":
  app.run(dcm.EXPERIMENT)
