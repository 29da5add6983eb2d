r"""Base model (b): a deeper top-1 MoE LM (8 MoE layers), against its dense twin.

For ExFlow's top-1 setting (a token's expert at layer l against its expert at l+1) and for
statistics across layers (Fate). Switch-style routing: top-1 with the gate's probability as the
weight (not renormalised), so the router learns through the output. 8 experts per layer: with 16
the MoE only tied its dense twin in these 1000 steps (docs/base_models.md). Saved as a Qwen3-MoE
checkpoint (per-head q/k norms, no shared expert, norm_topk_prob false).
Data: the text that ships with Python (moe_jax/data/corpus.py), as configs/lm_tiny.py.

Command:
  python -m experiments.train --config=configs/lm_deep_top1.py --workdir=/tmp/moe_jax/deep_top1
Result and run time: docs/base_models.md. Presets: "quick" (seconds, the tests), "".
"""
from configs import common
from moe_jax.train.lm_experiment import LMExperimentConfig
from moe_jax.utils.errors import check_choice


def get_config(preset: str = "") -> LMExperimentConfig:
  check_choice("preset", preset, ("", "quick"))
  model = dict(
      vocab_size=256, d_model=128, num_layers=8, num_heads=4, num_kv_heads=2, d_ff=256,
      activation="swiglu", max_len=512, tie_embeddings=True, moe_layers="all", causal_blocks=4,
      qk_norm="head",
      moe=dict(num_experts=8, top_k=1, d_ff=256, router="topk", normalize_topk=False,
               dispatch="auto", load_balance_coef=0.01, z_loss_coef=1e-3))
  train = common.lm_train(num_steps=1000, eval_every=250, save_every=250, keep=4)
  data = common.shipped_text()
  if preset == "quick":
    model.update(d_model=32, num_layers=8, num_heads=2, num_kv_heads=1, d_ff=32, max_len=64)
    model["moe"].update(num_experts=4, d_ff=32)
    common.quick_lm(train, data)
  return LMExperimentConfig.from_dict(dict(model=model, train=train, data=data,
                                           parallel=common.parallel(), compare_dense=True))
