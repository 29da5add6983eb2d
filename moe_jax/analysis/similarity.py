"""How experts are used and how alike they are, from calibration routing and from weights.

Legend: L layers (any leading axes), T calibration tokens, K experts per token, A = T*K
selections, E experts, D model width, F hidden width.

Usage frequency (MC-SMoE, Li et al. 2024, arXiv 2310.01334, Sec. 3): f_e = the share of the A
top-k selections of a layer that chose expert e (sum_e f_e = 1).

Router-logit similarity (MC-SMoE's default grouping signal): over the calibration tokens' router
logits Z[T, E],
  sim(i, j) = (cos(Z[:, i], Z[:, j]) + 1) / 2,
symmetric, in [0, 1], with sim(i, i) = 1. A column of zeros (an expert whose logit is 0 on every
token) has cosine 0 with every other column, so sim 0.5 (what torch's eps-guarded
cosine_similarity in the MC-SMoE repo gives), and its diagonal is still 1.

The same pairwise cosine, unmapped and in [-1, 1], compares experts in weight space (each
expert's wi_gate, wi_up, wo flattened into one vector) and in output space (each expert's
outputs y[T, D] on the same tokens, flattened).

Host-side NumPy in float64: these run once per calibration pass, not in a training step.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from moe_jax.utils.errors import require

EXPERT_WEIGHTS = ("wi_gate", "wi_up", "wo")


def usage_frequency(expert_index, num_experts: int) -> np.ndarray:
  """[..., A] chosen expert ids (a layer's [T, K] choices flattened) -> [..., E] shares."""
  index = np.asarray(expert_index)
  require(index.ndim >= 1 and index.shape[-1] > 0, "expert_index",
          f"needs a last axis of selections, got shape {index.shape}",
          "pass the sown `expert_index` [A] of a layer (or [L, A] for L layers)")
  require(index.min() >= 0 and index.max() < num_experts, "expert_index",
          f"ids must lie in [0, {num_experts}), got [{index.min()}, {index.max()}]",
          "pass the router's chosen expert ids and the layer's num_experts")
  lead = index.shape[:-1]
  rows = index.reshape(-1, index.shape[-1])
  offset = np.arange(rows.shape[0])[:, None] * num_experts
  counts = np.bincount((rows + offset).ravel(), minlength=rows.shape[0] * num_experts)
  counts = counts.reshape(*lead, num_experts).astype(np.float64)
  return counts / index.shape[-1]


def pairwise_cosine(vectors) -> np.ndarray:
  """[..., E, N] one vector per expert -> [..., E, E] cosines; 0 against zero, diagonal 1."""
  v = np.asarray(vectors, np.float64)
  norm = np.linalg.norm(v, axis=-1)
  dot = np.einsum("...in,...jn->...ij", v, v)
  denom = norm[..., :, None] * norm[..., None, :]
  cos = np.divide(dot, denom, out=np.zeros_like(dot), where=denom > 0)
  cos = np.clip(cos, -1.0, 1.0)
  eye = np.eye(v.shape[-2], dtype=bool)
  return np.where(eye, 1.0, cos)


def router_logit_similarity(logits) -> np.ndarray:
  """[..., T, E] calibration router logits -> [..., E, E] sim = (cos + 1) / 2 between columns."""
  z = np.asarray(logits, np.float64)
  require(z.ndim >= 2 and z.shape[-2] > 0, "logits", f"needs [..., T, E] with T > 0, got {z.shape}",
          "pass the router logits of the calibration tokens, tokens on the second-to-last axis")
  return (pairwise_cosine(np.swapaxes(z, -1, -2)) + 1.0) / 2.0


def weight_cosine(params: Mapping[str, np.ndarray]) -> np.ndarray:
  """Cosine [E, E] between experts' flattened (wi_gate, wi_up, wo) from an Experts param dict."""
  present = [k for k in EXPERT_WEIGHTS if k in params]
  require("wi_up" in present and "wo" in present, "params",
          f"needs wi_up and wo (and wi_gate when gated), got {sorted(params)}",
          "pass one layer's Experts parameters {wi_gate?, wi_up, wo}")
  e = np.shape(params["wo"])[0]
  flat = [np.asarray(params[k]).reshape(e, -1) for k in present]
  return pairwise_cosine(np.concatenate(flat, axis=-1))


def output_cosine(outputs) -> np.ndarray:
  """[..., E, T, D] all experts' outputs on the same tokens -> [..., E, E] cosines."""
  y = np.asarray(outputs)
  require(y.ndim >= 3, "outputs", f"needs [..., E, T, D], got {y.shape}",
          "run every expert on the same tokens and stack the outputs on the expert axis")
  return pairwise_cosine(y.reshape(*y.shape[:-2], -1))
