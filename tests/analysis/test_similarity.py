"""Usage frequencies and expert similarities against plain NumPy loops."""
import numpy as np
import pytest

from moe_jax.analysis import similarity
from moe_jax.utils.errors import ConfigError


def _loop_cosine(a, b):
  na, nb = np.linalg.norm(a), np.linalg.norm(b)
  return 0.0 if na == 0 or nb == 0 else float(a @ b / (na * nb))


def test_usage_frequency_is_the_share_of_selections_per_layer():
  rng = np.random.default_rng(0)
  index = rng.integers(0, 6, size=(3, 40, 2))  # [L, T, K]
  got = similarity.usage_frequency(index.reshape(3, -1), 6)
  for layer in range(3):
    want = [np.mean(index[layer] == e) for e in range(6)]
    np.testing.assert_allclose(got[layer], want)
  np.testing.assert_allclose(got.sum(-1), 1.0)


def test_usage_frequency_refuses_ids_out_of_range():
  with pytest.raises(ConfigError, match="expert_index"):
    similarity.usage_frequency(np.array([0, 6]), 6)


def test_router_logit_similarity_is_symmetric_bounded_with_unit_diagonal():
  rng = np.random.default_rng(1)
  logits = rng.standard_normal((2, 50, 7)) + rng.standard_normal((2, 1, 7))
  sim = similarity.router_logit_similarity(logits)
  assert sim.shape == (2, 7, 7)
  np.testing.assert_allclose(sim, np.swapaxes(sim, -1, -2))
  assert sim.min() >= 0.0 and sim.max() <= 1.0
  np.testing.assert_array_equal(np.diagonal(sim, axis1=-2, axis2=-1), 1.0)
  for i in range(7):
    for j in range(7):
      if i != j:
        want = (_loop_cosine(logits[1, :, i], logits[1, :, j]) + 1) / 2
        assert sim[1, i, j] == pytest.approx(want, abs=1e-12)


def test_zero_and_opposite_logit_columns():
  logits = np.random.default_rng(2).standard_normal((20, 4))
  logits[:, 2] = 0.0
  logits[:, 3] = -3.0 * logits[:, 0]
  sim = similarity.router_logit_similarity(logits)
  np.testing.assert_array_equal(sim[2, [0, 1, 3]], 0.5)
  np.testing.assert_array_equal(sim[[0, 1, 3], 2], 0.5)
  assert sim[2, 2] == 1.0
  assert sim[0, 3] == pytest.approx(0.0, abs=1e-12)


def test_weight_and_output_cosines_match_flattened_loops():
  rng = np.random.default_rng(3)
  e, d, f = 4, 5, 6
  params = {"wi_gate": rng.standard_normal((e, d, f)), "wi_up": rng.standard_normal((e, d, f)),
            "wo": rng.standard_normal((e, f, d))}
  params["wo"][3] = params["wo"][0]
  params["wi_up"][3], params["wi_gate"][3] = params["wi_up"][0], params["wi_gate"][0]
  got = similarity.weight_cosine(params)
  names = ("wi_gate", "wi_up", "wo")
  flat = [np.concatenate([params[k][i].ravel() for k in names]) for i in range(e)]
  for i in range(e):
    for j in range(e):
      assert got[i, j] == pytest.approx(_loop_cosine(flat[i], flat[j]), abs=1e-12)
  assert got[0, 3] == pytest.approx(1.0)
  outputs = rng.standard_normal((e, 9, d))
  got = similarity.output_cosine(outputs)
  assert got[1, 2] == pytest.approx(_loop_cosine(outputs[1].ravel(), outputs[2].ravel()), abs=1e-12)
