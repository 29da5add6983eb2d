r"""Mixtral-8x7B-shaped MoE LM (Jiang et al. 2024, "Mixtral of Experts"), for training at scale.

Shapes as published: 32 layers, d_model 4096, 32 query / 8 key-value heads of width 128,
8 experts of SwiGLU width 14336 with softmax top-2 routing (renormalised), vocabulary 32000,
untied embeddings, RoPE theta 1e6. 46,702,792,704 parameters, 12.9B active per token
(checked by tests/models/test_configs.py with jax.eval_shape, no memory allocated).

This does not fit a CPU: run it on an accelerator mesh (WORKSPACE.md), with your own tokenised
data (--config.data.files=...); the byte-level vocabulary only keeps the config runnable.
  python -m experiments.train --config=configs/mixtral_8x7b.py --workdir=DIR \
      --config.data.files=/data/train.jsonl
"""
from configs import common
from moe_jax.train.lm_experiment import LMExperimentConfig


def get_config(preset: str = "") -> LMExperimentConfig:
  del preset
  model = dict(
      vocab_size=32000, d_model=4096, num_layers=32, num_heads=32, num_kv_heads=8,
      head_dim=128, d_ff=14336, activation="swiglu", max_len=32768, rope_theta=1e6,
      norm_eps=1e-5, tie_embeddings=False, moe_layers="all", dtype="bfloat16",
      param_dtype="float32",
      moe=dict(num_experts=8, top_k=2, d_ff=14336, router="topk", normalize_topk=True,
               dispatch="auto", load_balance_coef=0.02))
  train = common.lm_train(num_steps=100000, batch_size=256, seq_len=4096, lr=3e-4,
                          warmup_steps=2000, log_every=10, eval_every=1000,
                          eval_batch_size=256, save_every=1000, keep=3)
  data = common.shipped_text(sources=("files",), val_every=100)
  # Experts over an 8-way `expert` axis (one expert per device), parameters and optimizer
  # state over `fsdp` (the rest of the devices); the batch over both. distributed=True on a
  # multi-host pod (WORKSPACE.md, "Scaling out").
  parallel = common.parallel("data:1,fsdp:-1,expert:8,tensor:1")
  return LMExperimentConfig.from_dict(dict(model=model, train=train, data=data,
                                           parallel=parallel))
