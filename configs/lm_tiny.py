r"""Tiny byte-level MoE LM on the corpus that ships with Python, against its dense twin.

Paper: the basic sparse-MoE claim (Shazeer et al. 2017; Fedus et al. 2021): at equal steps and
equal active parameters per token, a top-k MoE LM reaches a lower loss than a dense LM.

Data: `pydoc_data.topics` help texts ("english") + the standard library's top-level modules
("python"), CPython's own files, split by document (every 10th held out); bits per byte on the
held-out bytes of both domains together ("all") and of each.

Command:
  python -m experiments.train --config=configs/lm_tiny.py --workdir=/tmp/moe_jax/lm_tiny

Measured (CPython 3.11.7, 1900 steps x 16 x 256 bytes), held-out bits per byte:
  MoE, 16 experts of width 256, top-2 (9.94M params, 1.69M active)  1.693 (english 1.638,
    python 1.702)
  dense twin (1.67M params)                                         1.731 (english 1.708,
    python 1.735)
MoE / dense by step: 380: 2.158 / 2.174, 760: 1.912 / 1.948, 1140: 1.793 / 1.835,
1520: 1.736 / 1.764, 1900: 1.693 / 1.731.
Run time on 2 otherwise idle cores: the MoE's 1900 steps took 14.4 min of wall time from the
command's start, with start-up, compilation and 5 evaluations (14.0 min of training steps; median
9,450 tokens/s, 8,100-10,000 as the machine's speed varied); the dense twin 13.2 min; 27.6 min for
the command. Causal attention skips its fully masked key blocks (`causal_blocks=4`, ~8% off the
attention's time). Earlier runs of the same shapes: 1950 steps -> MoE 1.688 in 15.1 min (over
budget), dense 1.732; 2000 steps -> 1.688 / 1.731; 1800 steps -> MoE 1.707. The previous default
(d_model 256, 16 x 384 experts, 128-byte windows, 1200 steps) reached 1.787: a smaller model that
sees more tokens, with longer windows, does better in the same time.

Presets: "quick" (seconds, used by the tests), "" (the documented reproduction).
"""
import ml_collections

from moe_jax.parallel.partitioning import DEFAULT_RULES


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = dict(
      vocab_size=256, d_model=192, num_layers=4, num_heads=4, num_kv_heads=2, d_ff=512,
      activation="swiglu", max_len=512, tie_embeddings=True, moe_layers="all",
      num_experts=16, top_k=2, expert_d_ff=256, router="topk", normalize_topk=True,
      dispatch="auto", load_balance_coef=0.01, z_loss_coef=1e-3, causal_blocks=4)
  c.train = dict(num_steps=1900, batch_size=16, seq_len=256, lr=3e-3, warmup_steps=100,
                 weight_decay=0.1, grad_clip=1.0, seed=0, log_every=50, eval_every=380,
                 eval_batch_size=64, save_every=500, keep=2)
  c.data = dict(sources=["english", "python"], files=[], text_field="text", val_every=10,
                max_eval_windows=256)
  c.compare_dense = True
  # Data parallel over whatever devices there are (one CPU: a mesh of one); for expert
  # parallelism set e.g. mesh="data:-1,expert:4" (WORKSPACE.md, "Scaling out").
  c.parallel = dict(mesh="data:-1,fsdp:1,expert:1,tensor:1", rules=DEFAULT_RULES,
                    distributed=False, coordinator_address="", num_processes=0,
                    process_id=-1)
  if preset == "quick":
    c.model.update(d_model=32, num_layers=2, num_heads=2, num_kv_heads=1, num_experts=4,
                   expert_d_ff=32, max_len=64)
    c.train.update(num_steps=6, batch_size=4, seq_len=32, warmup_steps=2, log_every=2,
                   eval_every=3, eval_batch_size=8, save_every=3)
    c.data.update(sources=["english"], max_eval_windows=16)
  elif preset:
    raise ValueError(f"configs/lm_tiny.py: unknown preset {preset!r}. Fix: use 'quick' or ''")
  c.model = ml_collections.ConfigDict(c.model)
  c.train = ml_collections.ConfigDict(c.train)
  c.data = ml_collections.ConfigDict(c.data)
  c.parallel = ml_collections.ConfigDict(c.parallel)
  return c
