"""The gate's hard decision rule, the combination, GN's targets, and GE-only routing = GE."""
import jax
import numpy as np
import pytest

from moe_jax.customization import gating, lenet, local_expert, mixture


def test_gate_output_is_sigmoid_of_affine_features():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(7, 12)).astype(np.float32)
  gn = gating.GatingNetwork()
  params = gn.init(jax.random.key(1), features)["params"]
  w = np.asarray(params["out"]["kernel"], np.float64)[:, 0]
  b = float(params["out"]["bias"][0])
  want = 1.0 / (1.0 + np.exp(-(features.astype(np.float64) @ w + b)))
  np.testing.assert_allclose(np.asarray(gn.apply({"params": params}, features)), want, rtol=1e-5)


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.9])
def test_decision_rule_is_gate_above_threshold(threshold):
  rng = np.random.default_rng(int(threshold * 10))
  gate = rng.uniform(size=50).astype(np.float32)
  gate[:3] = threshold  # ties go to GE: the rule is strictly "g(x) > threshold".
  to_local = np.asarray(gating.route_to_local(gate, threshold))
  t32 = float(np.float32(threshold))  # the gate and its threshold live in float32.
  want = np.array([g > t32 for g in gate.tolist()])
  np.testing.assert_array_equal(to_local, want)
  assert not to_local[:3].any()


def test_combine_takes_each_row_from_the_chosen_expert():
  rng = np.random.default_rng(2)
  ge, le = rng.normal(size=(2, 9, 5)).astype(np.float32)
  to_local = rng.uniform(size=9) > 0.5
  out = np.asarray(gating.combine(ge, le, to_local))
  for i in range(9):
    np.testing.assert_array_equal(out[i], le[i] if to_local[i] else ge[i])


def test_gate_targets():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(20, 4))
  labels = rng.integers(0, 4, 20)
  features = rng.normal(size=(20, 6))
  x, t = gating.training_set("ge_error", features, logits, labels)
  np.testing.assert_array_equal(t, [float(np.argmax(l) != y) for l, y in zip(logits, labels)])
  np.testing.assert_array_equal(x, features)
  reference = rng.normal(size=(8, 6))
  x, t = gating.training_set("source", features, logits, labels, reference)
  np.testing.assert_array_equal(x, np.concatenate([features, reference]))
  np.testing.assert_array_equal(t, [1.0] * 20 + [0.0] * 8)
  with pytest.raises(ValueError, match="gn.reference_per_class"):
    gating.training_set("source", features, logits, labels, None)
  with pytest.raises(ValueError, match="gn.target"):
    gating.training_set("confidence", features, logits, labels)


def test_gate_that_always_picks_ge_reproduces_ge_exactly():
  rng = np.random.default_rng(4)
  images = rng.uniform(size=(16, 28, 28)).astype(np.float32)
  ge, le, gn = lenet.LeNet5(10), local_expert.LocalExpert(10, hidden=8), gating.GatingNetwork()
  ge_params = ge.init(jax.random.key(0), images[:1])["params"]
  ge_logits, features = jax.jit(ge.apply)({"params": ge_params}, images)
  le_params = le.init(jax.random.key(1), features[:1])["params"]
  # A GN whose output is sigmoid(-50) ~ 2e-22 everywhere: every input goes to GE.
  gn_params = {"out": {"kernel": np.zeros((120, 1), np.float32),
                       "bias": np.full((1,), -50.0, np.float32)}}
  predict = jax.jit(mixture.predict, static_argnums=(0, 2, 4))
  out = predict(ge, ge_params, le, le_params, gn, gn_params, images, threshold=0.5)
  assert not np.asarray(out["to_local"]).any()
  np.testing.assert_array_equal(np.asarray(out["logits"]), np.asarray(ge_logits))
  # The same GN with a threshold below its output sends everything to LE.
  out = predict(ge, ge_params, le, le_params, gn, gn_params, images, threshold=-1.0)
  np.testing.assert_array_equal(np.asarray(out["logits"]), np.asarray(out["le_logits"]))
