"""EAQuant (1): expert-aware smoothing aggregation, one smoothing vector for the router and all
experts of an MoE layer.

Legend: T tokens, A routed assignments, D model width, E experts, F hidden width.

The router, every routed expert and the shared expert read the same normed input y [T, D], so a
SmoothQuant-style vector s (y / s, W <- diag(s) W) must serve all of them (EAQuant, Eq. 10 as the
Pangu-Pro-MoE report reproduces it; code: quantize/smooth.py::merge_scale). Per expert i and
channel j, over the tokens routed to i and its gate and up projections,
  s_ij = max_{t -> i} |y_tj|^alpha / max_f max(|W^i_gate[j, f]|, |W^i_up[j, f]|)^(1 - alpha),
the router's term s_rj the same over all tokens and the router's kernel, a shared expert's over
all tokens and its own gate and up projections, and
  s_j = max(s_rj, s_shared_j, max_i s_ij)          (alpha = 0.6 in the code).
Both maxima are clamped at 1e-5 (SmoothQuant's code). Folded exactly: the FFN norm's weight
w <- w / s and every linear reading it (router, routed and shared wi_gate / wi_up, the shared
expert's sigmoid gate) W[j, :] <- s_j W[j, :]. An expert that got no token uses all tokens.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from moe_jax.quant.eaquant_rotation import readers

FLOOR = 1e-5


def term(x_max: jax.Array, w_max: jax.Array, alpha: float) -> jax.Array:
  """s = max|x|^alpha / max|W|^(1 - alpha) per channel, both clamped at FLOOR."""
  return (jnp.maximum(x_max, FLOOR) ** alpha / jnp.maximum(w_max, FLOOR) ** (1 - alpha))


def expert_channel_max(y: jax.Array, token: np.ndarray, expert: np.ndarray,
                       num_experts: int) -> jax.Array:
  """[E, D] max_{t -> i} |y_t| per expert (all tokens' max for an expert without tokens)."""
  per = jax.ops.segment_max(jnp.abs(y[jnp.asarray(token)]), jnp.asarray(expert),
                            num_segments=num_experts)
  empty = np.bincount(expert, minlength=num_experts) == 0
  return jnp.where(jnp.asarray(empty)[:, None], jnp.max(jnp.abs(y), axis=0), per)


def layer_terms(ffn: dict, y: jax.Array, token: np.ndarray, expert: np.ndarray,
                alpha: float, router: bool = True) -> dict:
  """{"experts": [E, D], "router": [D] (with `router`), "shared": [D] (with one)} of an MoE
  layer's params `ffn` (its "moe" subtree)."""
  w = ffn["experts"]
  w_max = jnp.max(jnp.abs(w["wi_up"]), axis=-1)
  if "wi_gate" in w:
    w_max = jnp.maximum(w_max, jnp.max(jnp.abs(w["wi_gate"]), axis=-1))
  all_max = jnp.max(jnp.abs(y), axis=0)
  out = {"experts": term(expert_channel_max(y, token, expert, w_max.shape[0]), w_max, alpha)}
  if router:
    out["router"] = term(all_max, jnp.max(jnp.abs(ffn["router"]["gate"]["kernel"]), axis=-1),
                         alpha)
  if "shared_experts" in ffn:
    s = ffn["shared_experts"]["mlp"]
    s_max = jnp.max(jnp.abs(s["wi_up"]), axis=-1)
    if "wi_gate" in s:
      s_max = jnp.maximum(s_max, jnp.max(jnp.abs(s["wi_gate"]), axis=-1))
    out["shared"] = term(all_max, s_max, alpha)
  return out


def aggregate(terms: dict) -> jax.Array:
  """s [D] = max(router term, shared term, max_i s_ij) over the terms present."""
  s = jnp.max(terms["experts"], axis=0)
  for name in ("router", "shared"):
    if name in terms:
      s = jnp.maximum(s, terms[name])
  return s


def fold(params: dict, layer: str, s: jax.Array) -> dict:
  """params with layer's FFN norm divided by s and every linear reading it scaled by s."""
  flat = traverse_util.flatten_dict(params, sep="/")
  s = np.asarray(s, np.float64)
  for norm, linears in readers(params, layer).items():
    if not norm.endswith("ffn_norm/scale"):
      continue
    flat[norm] = (np.asarray(flat[norm], np.float64) / s).astype(flat[norm].dtype)
    for path, axis in linears:
      shape = [1] * flat[path].ndim
      shape[axis] = -1
      flat[path] = (np.asarray(flat[path], np.float64) * s.reshape(shape)).astype(
          flat[path].dtype)
  return traverse_util.unflatten_dict(flat, sep="/")
