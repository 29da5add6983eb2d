r"""OLMoE-1B-7B-shaped MoE LM (Muennighoff et al. 2024, "OLMoE"), for training at scale.

Shapes as published: 16 layers, d_model 2048, 16 heads, 64 experts of SwiGLU width 1024 with
softmax top-8 routing (not renormalised), vocabulary 50304, untied embeddings; load-balancing
loss 0.01 and router z-loss 0.001 as in the paper. 6,919,096,320 parameters here, 1.28B active
(OLMoE's q/k norms add 65,536 more; the model-zoo loader adds them). Checked by
tests/models/test_configs.py with jax.eval_shape.

  python -m experiments.train --config=configs/olmoe_1b_7b.py --workdir=DIR \
      --config.data.files=/data/train.jsonl   (accelerators)
"""
from configs import common
from moe_jax.train.lm_experiment import LMExperimentConfig


def get_config(preset: str = "") -> LMExperimentConfig:
  del preset
  model = dict(
      vocab_size=50304, d_model=2048, num_layers=16, num_heads=16, num_kv_heads=16,
      d_ff=1024, activation="swiglu", max_len=4096, rope_theta=10000.0, norm_eps=1e-5,
      tie_embeddings=False, moe_layers="all", dtype="bfloat16", param_dtype="float32",
      moe=dict(num_experts=64, top_k=8, d_ff=1024, router="topk", normalize_topk=False,
               dispatch="auto", load_balance_coef=0.01, z_loss_coef=0.001))
  train = common.lm_train(num_steps=100000, batch_size=1024, seq_len=4096, lr=4e-4,
                          warmup_steps=2500, log_every=10, eval_every=1000,
                          eval_batch_size=256, save_every=1000, keep=3)
  data = common.shipped_text(sources=("files",), val_every=100)
  # 64 experts over an 8-way `expert` axis (8 per device), parameters over `fsdp`.
  parallel = common.parallel("data:1,fsdp:-1,expert:8,tensor:1")
  return LMExperimentConfig.from_dict(dict(model=model, train=train, data=data,
                                           parallel=parallel))
