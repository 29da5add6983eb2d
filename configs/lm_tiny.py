r"""Tiny byte-level MoE LM on the text that ships with Python, against its dense twin.

Paper: the basic sparse-MoE claim (Shazeer et al. 2017; Fedus et al. 2021): at equal steps and
equal active parameters per token, a top-k MoE LM reaches a lower loss than a dense LM.
Data: CPython's `pydoc_data.topics` help texts ("english") and standard-library modules
("python"), every 10th document held out; bits per byte on the held-out bytes.

Command:
  python -m experiments.train --config=configs/lm_tiny.py --workdir=/tmp/moe_jax/lm_tiny

Result (CPython 3.11.7, 1100 steps x 16 x 256 bytes; docs/lm_tiny.md): held-out bits per byte
MoE (16 experts of width 256, top-2; 9.94M params, 1.69M active) 1.773, dense twin (1.67M) 1.809
(2026-12-05, through reproduce).
Run time: 12.0 min for the MoE, 11.6 for the dense twin, on 2 idle CPU cores (2026-12-05).
Deviation: 1100 steps (was 1900 until 2026-12-05) so the base model fits 15 minutes on slower days.
Presets: "quick" (seconds, used by the tests), "" (the documented reproduction).
"""
from configs import common
from moe_jax.train.lm_experiment import LMExperimentConfig
from moe_jax.utils.errors import check_choice


def get_config(preset: str = "") -> LMExperimentConfig:
  check_choice("preset", preset, ("", "quick"))
  model = dict(
      vocab_size=256, d_model=192, num_layers=4, num_heads=4, num_kv_heads=2, d_ff=512,
      activation="swiglu", max_len=512, tie_embeddings=True, moe_layers="all", causal_blocks=4,
      moe=dict(num_experts=16, top_k=2, d_ff=256, router="topk", normalize_topk=True,
               dispatch="auto", load_balance_coef=0.01, z_loss_coef=1e-3))
  train = common.lm_train(num_steps=1100, eval_every=220)
  data = common.shipped_text()
  if preset == "quick":
    model.update(d_model=32, num_layers=2, num_heads=2, num_kv_heads=1, max_len=64)
    model["moe"].update(num_experts=4, d_ff=32)
    common.quick_lm(train, data)
  return LMExperimentConfig.from_dict(dict(model=model, train=train, data=data,
                                           parallel=common.parallel(), compare_dense=True))
