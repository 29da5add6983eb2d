"""Config blocks that several experiments share (as dicts: a config file updates its copy)."""
from moe_jax.parallel.partitioning import DEFAULT_RULES


def parallel(mesh: str = "data:-1,fsdp:1,expert:1,tensor:1") -> dict:
  """Data parallel over whatever devices there are (one CPU: a mesh of one); for expert
  parallelism e.g. mesh="data:-1,expert:4" (WORKSPACE.md, "Scaling out")."""
  return dict(mesh=mesh, rules=DEFAULT_RULES, distributed=False, coordinator_address="",
              num_processes=0, process_id=-1)


def shipped_text(**overrides) -> dict:
  """The `data` section over the corpus that ships with Python (moe_jax/data/corpus.py)."""
  base = dict(sources=("english", "python"), files=(), text_field="text", val_every=10,
              max_eval_windows=256)
  base.update(overrides)
  return base


def quick_lm(train: dict, data: dict) -> None:
  """The LM configs' quick preset of `train` and `data` (in place): seconds on a CPU."""
  train.update(num_steps=6, batch_size=4, seq_len=32, warmup_steps=2, log_every=2,
               eval_every=3, eval_batch_size=8, save_every=3)
  data.update(sources=("english",), max_eval_windows=16)


def lm_train(**overrides) -> dict:
  """The `train` section of the LM recipes (AdamW, warmup + cosine; moe_jax/train/loop.py)."""
  base = dict(num_steps=1000, batch_size=16, seq_len=256, lr=3e-3, warmup_steps=100,
              weight_decay=0.1, grad_clip=1.0, seed=0, log_every=50, eval_every=250,
              eval_batch_size=64, save_every=500, keep=2)
  base.update(overrides)
  return base
