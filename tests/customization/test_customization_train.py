"""The on-device loops learn what they should, and orbax checkpoints round-trip."""
import jax
import numpy as np

from moe_jax.customization import gating, local_expert, train
from moe_jax.customization.config import GateConfig


def _cfg():
  return GateConfig(steps=200, batch_size=1024, learning_rate=0.05, weight_decay=0.0, balance=True)


def test_local_expert_and_gate_fit_separable_data():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(4, 8)) * 3
  labels = rng.integers(0, 4, 120)
  features = (centres[labels] + rng.normal(size=(120, 8))).astype(np.float32)
  le = local_expert.LocalExpert(4)
  params = train.train_local_expert(le, features, labels, _cfg(), seed=0)
  acc = np.mean(np.argmax(le.apply({"params": params}, features), -1) == labels)
  assert acc > 0.95
  # Unbalanced gate targets (class 0 only, 1 in 4): balancing keeps the minority's recall high.
  targets = (labels == 0).astype(np.float32)
  gn = gating.GatingNetwork()
  gp = train.train_gate(gn, features, targets, _cfg(), seed=0)
  routed = np.asarray(gating.route_to_local(gn.apply({"params": gp}, features), 0.5))
  assert np.mean(routed == (targets > 0)) > 0.95


def test_checkpoint_round_trip(tmp_path):
  le = local_expert.LocalExpert(3, hidden=5)
  params = le.init(jax.random.key(0), np.zeros((1, 7), np.float32))["params"]
  tree = {"le": params, "gn": {"source": {"out": {"bias": np.ones(1, np.float32),
                                                   "kernel": np.ones((7, 1), np.float32)}}}}
  path = train.save_checkpoint(str(tmp_path / "user_00"), tree)
  back = train.restore_checkpoint(path, jax.tree.map(np.zeros_like, tree))
  for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(back)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
