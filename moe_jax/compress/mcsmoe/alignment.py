"""Permutation alignment of experts' hidden units by weight matching (MC-SMoE, Sec. 3.2).

Legend: E experts, D model width, F hidden width, X = 3D (or 2D without a gate) features that
describe one hidden unit.

An FFN's hidden units can be reordered without changing its function: with P a permutation of the
F units, (wi_gate[:, P], wi_up[:, P], wo[P, :]) computes the same y = act(x wi_gate) * (x wi_up) wo.
Before averaging experts, MC-SMoE reorders every expert's units to match a reference expert
(expert 0 of each layer in the repo's `permute-model.py`). In the paper's [out, in] convention the
gain of pairing reference unit a with unit b of expert e is

  C[a, b] = (W_gate^ref W_gate^e^T + W_up^ref W_up^e^T + W_down^ref^T W_down^e)[a, b],

and P maximises sum_a C[a, P[a]] (a linear assignment, `scipy.optimize.linear_sum_assignment`).
Our layout stores the transposes (wi_gate, wi_up [E, D, F], wo [E, F, D]), so unit a is the column
wi_*[:, a] and the row wo[a, :]; stacking those into u[E, X, F] (X = the D inputs of the gate, the D
of the up projection, the D outputs) gives C_e[a, b] = sum_x u_ref[x, a] u_e[x, b]: one einsum for
all experts. Only the assignment itself runs per expert (SciPy).

The permutation returned, perm[e, a], is the unit of expert e placed at position a; the aligned
expert is (wi_gate[e][:, perm[e]], wi_up[e][:, perm[e]], wo[e][perm[e], :]). Host-side NumPy.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment

from moe_jax.utils.errors import require


def _check(params: Mapping[str, np.ndarray]) -> None:
  require(set(params) in ({"wi_up", "wo"}, {"wi_gate", "wi_up", "wo"}), "params",
          f"expected an Experts param dict {{wi_gate?, wi_up, wo}}, got keys {sorted(params)}",
          "pass one layer's stacked expert weights wi_gate/wi_up [E, D, F], wo [E, F, D]")


def unit_features(params: Mapping[str, np.ndarray]) -> np.ndarray:
  """[E, X, F]: hidden unit f of expert e as one column (its gate, up and down weights)."""
  _check(params)
  parts = [np.asarray(params[k]) for k in ("wi_gate", "wi_up") if k in params]
  parts.append(np.swapaxes(np.asarray(params["wo"]), -1, -2))
  return np.concatenate(parts, axis=-2)


def matching_cost(params: Mapping[str, np.ndarray], reference: int = 0) -> np.ndarray:
  """[E, F, F] C[e, a, b]: gain of placing unit b of expert e at the reference's unit a."""
  u = unit_features(params).astype(np.float64)
  require(0 <= reference < u.shape[0], "reference", f"must index one of {u.shape[0]} experts",
          "pick the reference expert by its index (the repo uses 0)")
  return np.einsum("xa,exb->eab", u[reference], u)


def match_hidden_units(params: Mapping[str, np.ndarray], reference: int = 0) -> np.ndarray:
  """[E, F] int permutations maximising each expert's matching gain (identity for the reference)."""
  cost = matching_cost(params, reference)
  perms = np.tile(np.arange(cost.shape[-1]), (cost.shape[0], 1))
  for e in range(cost.shape[0]):
    if e != reference:
      perms[e] = linear_sum_assignment(cost[e], maximize=True)[1]
  return perms


def permute_hidden_units(params: Mapping[str, np.ndarray], perms) -> dict[str, np.ndarray]:
  """Reorders each expert's hidden units by perms[E, F]; every expert's function is unchanged."""
  _check(params)
  perms = np.asarray(perms)
  f = np.shape(params["wo"])[-2]
  require(perms.shape == (np.shape(params["wo"])[0], f) and
          np.array_equal(np.sort(perms, axis=-1), np.broadcast_to(np.arange(f), perms.shape)),
          "perms", f"must hold one permutation of range({f}) per expert, got shape {perms.shape}",
          "pass the output of match_hidden_units")
  out = {k: np.take_along_axis(np.asarray(params[k]), perms[:, None, :], axis=-1)
         for k in ("wi_gate", "wi_up") if k in params}
  out["wo"] = np.take_along_axis(np.asarray(params["wo"]), perms[:, :, None], axis=-2)
  return out


def align_experts(params: Mapping[str, np.ndarray],
                  reference: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Weight matching of every expert against `reference`: (aligned params, perms [E, F])."""
  perms = match_hidden_units(params, reference)
  return permute_hidden_units(params, perms), perms
