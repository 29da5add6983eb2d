r"""Base model (c): fine-grained experts with a shared expert, against its dense twin.

The DeepSeek-MoE / Qwen-MoE shape that MoEQuant and EAQuant report on: 32 small routed experts,
top-4, plus one always-on shared expert behind Qwen2-MoE's sigmoid gate. Saved as a Qwen2-MoE
checkpoint. The dense twin has one FFN of the active width (4 x 64 + 128). Data: the text that
ships with Python, as configs/lm_tiny.py. Deviation: the top-4 softmax weights are renormalised
(norm_topk_prob=True, as Qwen3-MoE and DeepSeek-V3; Qwen1.5-MoE does not): unrenormalised, 1100
steps (the 15-minute budget) do not beat the dense twin (docs/base_models.md).

Command:
  python -m experiments.train --config=configs/lm_fine_shared.py --workdir=/tmp/moe_jax/fine
Result and run time: docs/base_models.md. Presets: "quick" (seconds, the tests), "".
"""
from configs import common
from moe_jax.train.lm_experiment import LMExperimentConfig
from moe_jax.utils.errors import check_choice


def get_config(preset: str = "") -> LMExperimentConfig:
  check_choice("preset", preset, ("", "quick"))
  model = dict(
      vocab_size=256, d_model=192, num_layers=4, num_heads=4, num_kv_heads=2, d_ff=384,
      activation="swiglu", max_len=512, tie_embeddings=True, moe_layers="all", causal_blocks=4,
      moe=dict(num_experts=32, top_k=4, d_ff=64, router="topk", normalize_topk=True,
               shared_d_ff=128, shared_gate=True, dispatch="auto", load_balance_coef=0.01,
               z_loss_coef=1e-3))
  train = common.lm_train(num_steps=1100, eval_every=220)
  data = common.shipped_text()
  if preset == "quick":
    model.update(d_model=32, num_layers=2, num_heads=2, num_kv_heads=1, d_ff=64, max_len=64)
    model["moe"].update(num_experts=8, top_k=2, d_ff=16, shared_d_ff=32)
    common.quick_lm(train, data)
  return LMExperimentConfig.from_dict(dict(model=model, train=train, data=data,
                                           parallel=common.parallel(), compare_dense=True))
