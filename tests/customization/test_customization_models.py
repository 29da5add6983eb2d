"""LeNet5 and the LE against float64 NumPy references, with fresh random weights and inputs."""
import jax
import numpy as np
import pytest

from moe_jax.customization import lenet, local_expert


def _conv_valid(x, kernel, bias):
  """[B, H, W, C] * [kh, kw, C, O] -> [B, H-kh+1, W-kw+1, O], cross-correlation, float64."""
  kh, kw = kernel.shape[:2]
  windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # B,H',W',C,kh,kw
  return np.einsum("bhwcij,ijco->bhwo", windows, kernel) + bias


def _pool(x, kind):
  b, h, w, c = x.shape
  blocks = x[:, :h // 2 * 2, :w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c)
  return blocks.max(axis=(2, 4)) if kind == "max" else blocks.mean(axis=(2, 4))


def _lenet_reference(params, images, activation, pooling, feature_layer):
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  act = (lambda v: np.maximum(v, 0.0)) if activation == "relu" else np.tanh
  x = np.pad(images.astype(np.float64)[..., None], ((0, 0), (2, 2), (2, 2), (0, 0)))
  x = _pool(act(_conv_valid(x, p["conv1"]["kernel"], p["conv1"]["bias"])), pooling)
  x = _pool(act(_conv_valid(x, p["conv2"]["kernel"], p["conv2"]["bias"])), pooling)
  x = x.reshape(len(x), -1)
  fc1 = act(x @ p["fc1"]["kernel"] + p["fc1"]["bias"])
  fc2 = act(fc1 @ p["fc2"]["kernel"] + p["fc2"]["bias"])
  logits = fc2 @ p["head"]["kernel"] + p["head"]["bias"]
  return logits, {"fc1": fc1, "fc2": fc2}[feature_layer]


@pytest.mark.parametrize("activation,pooling,feature_layer",
                         [("relu", "max", "fc1"), ("tanh", "avg", "fc2")])
def test_lenet5_matches_numpy(activation, pooling, feature_layer):
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(4, 28, 28)).astype(np.float32)
  model = lenet.LeNet5(13, activation=activation, pooling=pooling, feature_layer=feature_layer)
  params = model.init(jax.random.key(1), images)["params"]
  logits, features = model.apply({"params": params}, images)
  assert logits.shape == (4, 13) and features.shape == (4, lenet.FEATURE_WIDTHS[feature_layer])
  want_logits, want_features = _lenet_reference(params, images, activation, pooling, feature_layer)
  np.testing.assert_allclose(np.asarray(logits), want_logits, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(features), want_features, rtol=1e-4, atol=1e-5)


def test_lenet5_rejects_unknown_choices():
  with pytest.raises(ValueError, match="ge.feature_layer"):
    lenet.LeNet5(10, feature_layer="conv2").init(jax.random.key(0), np.zeros((1, 28, 28)))


def test_local_expert_matches_numpy():
  rng = np.random.default_rng(2)
  f = rng.normal(size=(5, 120)).astype(np.float32)
  le = local_expert.LocalExpert(10, hidden=16)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), le.init(jax.random.key(3), f)["params"])
  want = (np.maximum(f @ p["hidden"]["kernel"] + p["hidden"]["bias"], 0) @ p["out"]["kernel"]
          + p["out"]["bias"])
  got = le.apply({"params": jax.tree.map(np.float32, p)}, f)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
