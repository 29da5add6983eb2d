r"""Mixtral-8x7B-shaped MoE LM (Jiang et al. 2024, "Mixtral of Experts"), for training at scale.

Shapes as published: 32 layers, d_model 4096, 32 query / 8 key-value heads of width 128,
8 experts of SwiGLU width 14336 with softmax top-2 routing (renormalised), vocabulary 32000,
untied embeddings, RoPE theta 1e6. 46,702,792,704 parameters, 12.9B active per token
(checked by tests/test_configs.py with jax.eval_shape, no memory allocated).

This does not fit a CPU: run it on an accelerator mesh (WORKSPACE.md), with your own tokenised
data (data.sources=["files"]); the byte-level default data only keeps the config runnable.
  python -m experiments.train --config=configs/mixtral_8x7b.py --workdir=DIR
"""
import ml_collections

from moe_jax.parallel.partitioning import DEFAULT_RULES


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  del preset
  c = ml_collections.ConfigDict()
  c.model = dict(
      vocab_size=32000, d_model=4096, num_layers=32, num_heads=32, num_kv_heads=8,
      head_dim=128, d_ff=14336, activation="swiglu", max_len=32768, rope_theta=1e6,
      norm_eps=1e-5, tie_embeddings=False, moe_layers="all", num_experts=8, top_k=2,
      expert_d_ff=14336, router="topk", normalize_topk=True, dispatch="auto",
      load_balance_coef=0.02, dtype="bfloat16", param_dtype="float32")
  c.train = dict(num_steps=100000, batch_size=256, seq_len=4096, lr=3e-4, warmup_steps=2000,
                 weight_decay=0.1, grad_clip=1.0, seed=0, log_every=10, eval_every=1000,
                 eval_batch_size=256, save_every=1000, keep=3)
  c.data = dict(sources=["files"], files=[], text_field="text", val_every=100,
                max_eval_windows=256)
  c.compare_dense = False
  # Experts over an 8-way `expert` axis (one expert per device), parameters and optimizer
  # state over `fsdp` (the rest of the devices); the batch over both.
  c.parallel = dict(mesh="data:1,fsdp:-1,expert:8,tensor:1", rules=DEFAULT_RULES,
                    # distributed=True on a multi-host pod (WORKSPACE.md, "Scaling out")
                    distributed=False, coordinator_address="", num_processes=0,
                    process_id=-1)
  return ml_collections.ConfigDict(c)
