"""Sharded LM training checks on 8 simulated CPU devices; run by tests/test_expert_parallel.py.

Run alone: python tests/sharded_train_checks.py [seed]
Prints one JSON object of measured values; the test module asserts on them.
"""
import dataclasses
import json
import sys
import tempfile

from check_utils import config_error  # first: it sets up the 8 devices before JAX starts
import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from moe_jax.layers.moe import MoEConfig
from moe_jax.models.config import LMConfig
from moe_jax.models.lm import MoELM
from moe_jax.parallel import hosts, partitioning
from moe_jax.parallel.config import ParallelConfig
from moe_jax.parallel.expert_parallel import (count_all_to_all,
                                              expert_param_bytes_per_device)
from moe_jax.train import trainer
from moe_jax.train.checkpoint import Checkpointer
from moe_jax.train.loop import TrainConfig, check_layout

CFG = LMConfig(vocab_size=256, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, d_ff=64,
               max_len=16, moe_layers="all",
               moe=MoEConfig(num_experts=8, top_k=2, d_ff=32, load_balance_coef=0.01,
                             z_loss_coef=1e-3))
BATCH, SEQ = 8, 16


class Run:
  """The model, optimizer and train state of CFG laid out on one mesh."""

  def __init__(self, mesh_text: str, devices=None):
    self.mesh, self.rules = ParallelConfig(mesh=mesh_text).build(devices)
    self.model = MoELM(CFG)
    self.optimizer = trainer.make_optimizer(1e-3, 1, 10, 0.1, 1.0)
    self.shardings = trainer.state_shardings(self.model, self.optimizer, SEQ, self.mesh,
                                             self.rules)
    self.batch_sharding = partitioning.batch_sharding(self.mesh, self.rules)

  def init(self):
    return trainer.init_state(self.model, self.optimizer, jax.random.key(0), SEQ, self.shardings)

  def steps(self, state, batch, n: int = 3):
    """n train steps on `batch` (the first has learning rate 0: warmup starts at 0)."""
    fn = trainer.make_train_step(self.model, self.optimizer, 1e-3, self.shardings,
                                 self.batch_sharding)
    with partitioning.use(self.mesh, self.rules):
      batch = hosts.global_batch(batch, self.batch_sharding, BATCH)
      compiled = fn.lower(state, batch, jax.random.key(1), None).compile()  # once, run n times
      for i in range(n):
        state, metrics = compiled(state, batch, jax.random.key(i), None)
    return state, float(metrics["loss"]), count_all_to_all(compiled.as_text())


def rel_err(a, b):
  """Largest over the leaves of |a - b| / |b| (Frobenius norms)."""
  return max(float(np.linalg.norm(np.asarray(x, np.float64) - np.asarray(y, np.float64)) /
                   (np.linalg.norm(np.asarray(y, np.float64)) + 1e-30))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def same(a, b) -> bool:
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main(seed: int):
  out = {"devices": jax.device_count()}
  batch = np.random.default_rng(seed).integers(0, 256, size=(BATCH, SEQ + 1)).astype(np.int32)
  ref = Run("data:1", jax.devices()[:1])
  ref_state, ref_loss, _ = ref.steps(ref.init(), batch)

  for mesh_text in ("data:2,fsdp:1,expert:4,tensor:1", "data:1,fsdp:2,expert:2,tensor:2",
                    "data:8,fsdp:1,expert:1,tensor:1"):
    run = Run(mesh_text)
    state, loss, all_to_alls = run.steps(run.init(), batch)
    out[mesh_text] = {"param_err": rel_err(state.params, ref_state.params),
                      "opt_err": rel_err(state.opt_state, ref_state.opt_state),
                      "loss_err": abs(loss - ref_loss) / abs(ref_loss),
                      "all_to_all": all_to_alls}
    if mesh_text.startswith("data:2"):
      saved = state
      experts = state.params["layer_0"]["moe"]["experts"]
      out["expert_bytes"] = {
          "per_device": sum(expert_param_bytes_per_device(experts).values()),
          "total": sum(int(x.nbytes) for x in jax.tree.leaves(experts)),
          "expert_shards": run.mesh.shape["expert"],
          "adam_mu_spec": str(state.opt_state[1][0].mu["layer_0"]["moe"]["experts"]["wo"]
                              .sharding.spec)}

  # A checkpoint saved on the (data 2, expert 4) mesh restores on (8, 1) and on one device.
  with tempfile.TemporaryDirectory() as tmp:
    ckpt = Checkpointer(tmp, 1, 1)
    ckpt.save(1, saved, {"index": 1}, force=True)
    ckpt.wait()
    for label, run in (("data8xexpert1", Run("data:8,fsdp:1,expert:1,tensor:1")),
                       ("one_device", Run("data:1", jax.devices()[:1]))):
      restored, data_state = ckpt.restore_latest(run.init())
      wi = restored.params["layer_0"]["moe"]["experts"]["wi_up"]
      out[label] = {"identical": same(restored, saved), "data_index": data_state["index"],
                    "devices": len(wi.sharding.device_set),
                    "expert_shard_shape": list(wi.sharding.shard_shape(wi.shape))}
      _, loss, _ = run.steps(restored, batch, 1)  # training goes on from the restored state
      out[label]["next_loss_finite"] = bool(np.isfinite(loss))
    ckpt.close()

  errors = {}
  for label, mesh_text, cfg, batch_size in (
      ("mesh_too_big", "data:2,expert:8", CFG, 16),
      ("experts_not_divisible", "data:1,expert:8", dataclasses.replace(
          CFG, moe=dataclasses.replace(CFG.moe, num_experts=12)), 16),
      ("batch_not_divisible", "data:8", CFG, 12)):
    def start(mesh_text=mesh_text, cfg=cfg, batch_size=batch_size):
      mesh, rules = ParallelConfig(mesh=mesh_text).build()
      check_layout(cfg, TrainConfig(batch_size=batch_size, eval_batch_size=16), mesh, rules)
    errors[label] = config_error(start)
  out["errors"] = errors
  print(json.dumps(out))


if __name__ == "__main__":
  main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
