"""MC-SMoE weight matching: permutations keep functions; matching finds planted and best orders."""
import itertools

import numpy as np
import pytest

from moe_jax.compress.mcsmoe import alignment


def _silu(x):
  return x / (1.0 + np.exp(-x))


def _expert_outputs(params, x):
  """[E, T, D]: every expert on the same tokens, SwiGLU when wi_gate is present, else ReLU."""
  up = np.einsum("td,edf->etf", x, params["wi_up"])
  if "wi_gate" in params:
    h = _silu(np.einsum("td,edf->etf", x, params["wi_gate"])) * up
  else:
    h = np.maximum(up, 0)
  return np.einsum("etf,efd->etd", h, params["wo"])


def _random_params(rng, e, d, f, gated=True):
  params = {"wi_up": rng.standard_normal((e, d, f)), "wo": rng.standard_normal((e, f, d))}
  if gated:
    params["wi_gate"] = rng.standard_normal((e, d, f))
  return params


@pytest.mark.parametrize("gated", [True, False])
def test_permuting_hidden_units_leaves_every_expert_unchanged(gated):
  rng = np.random.default_rng(0)
  params = _random_params(rng, 3, 6, 10, gated)
  perms = np.stack([rng.permutation(10) for _ in range(3)])
  x = rng.standard_normal((7, 6))
  permuted = alignment.permute_hidden_units(params, perms)
  np.testing.assert_allclose(_expert_outputs(permuted, x), _expert_outputs(params, x), rtol=1e-12)
  assert not np.allclose(permuted["wo"], params["wo"])


def test_weight_matching_recovers_a_planted_permutation():
  rng = np.random.default_rng(1)
  e, d, f = 4, 8, 24
  ref = _random_params(rng, 1, d, f)
  planted = np.stack([np.arange(f)] + [rng.permutation(f) for _ in range(e - 1)])
  # Expert e's unit b is the reference's unit planted[e, b], plus small noise.
  params = {k: np.concatenate([w] * e) for k, w in ref.items()}
  params = alignment.permute_hidden_units(params, planted)
  params = {k: w + 1e-3 * rng.standard_normal(w.shape) for k, w in params.items()}
  aligned, perms = alignment.align_experts(params, reference=0)
  np.testing.assert_array_equal(perms, np.argsort(planted, axis=-1))
  for k in params:
    np.testing.assert_allclose(aligned[k], np.broadcast_to(params[k][:1], params[k].shape),
                               atol=1e-2)


def test_weight_matching_maximises_the_inner_product_with_the_reference_by_brute_force():
  rng = np.random.default_rng(2)
  params = _random_params(rng, 2, 3, 5)
  perms = alignment.match_hidden_units(params)

  def match(p):  # <reference, expert 1 with units reordered by p>, summed over its three matrices
    return (np.sum(params["wi_gate"][0] * params["wi_gate"][1][:, p])
            + np.sum(params["wi_up"][0] * params["wi_up"][1][:, p])
            + np.sum(params["wo"][0] * params["wo"][1][p, :]))

  best = max(itertools.permutations(range(5)), key=lambda p: match(list(p)))
  np.testing.assert_array_equal(perms[1], best)
  np.testing.assert_array_equal(perms[0], np.arange(5))
