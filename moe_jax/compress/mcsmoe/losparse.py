"""LoSparse compression of merged experts: W = L R + S, S pruned in whole rows (MC-SMoE Sec. 3.3).

Legend: E experts (any leading axes), M input width, N output width of one matrix (M, N = D, F
for wi_gate / wi_up [E, D, F], F, D for wo [E, F, D]), r rank, t training step.

LoSparse (Li et al. 2023, arXiv 2306.11222) as the MC-SMoE repo uses it (`pruning/losparse.py`,
`models/sparse.py`):
  - initialisation: the rank-r SVD W ~ U_r Sigma_r V_r^T, L = U_r sqrt(Sigma_r) [M, r],
    R = sqrt(Sigma_r) V_r^T [r, N], S = W - L R (so L R + S = W exactly). We store y = x W
    ([in, out]); the repo's torch weights are [out, in], so our L, R, S are its R^T, L^T, S^T.
  - importance of S: I_t = |S * dS| (PLATON without its uncertainty term, beta2 = 1), smoothed
    by an exponential moving average Ibar_t = beta Ibar_{t-1} + (1 - beta) I_t, beta = 0.85. The
    repo folds I_{t-1} into the average at step t (one step of lag); here I_t enters at step t.
  - structured pruning by rows: a row of the repo's [out, in] S is one output unit, so here it
    is one column S[:, n] (last axis), scored by the mean of Ibar over its M inputs.
  - the kept fraction p_t falls on a cubic schedule: 1 for t <= t_i = initial_warmup x
    warmup_steps, final for t > T - final_warmup x warmup_steps, in between
    final + (1 - final) (1 - (t - t_i) / (T - (initial_warmup + final_warmup) x warmup_steps))^3
    (repo: final 0.10, warmup_steps 50, initial_warmup 1, final_warmup 4).
  - the mask is global over every pruned matrix passed together (the repo pools all experts of
    all layers): with N_all elements and k = floor(N_all (1 - p_t)), the threshold is the k-th
    smallest element score (each element carries its row's score) and rows scoring at least the
    threshold stay; pass one matrix at a time for per-matrix fractions.
Every function is pure and jittable (the step and p_t may be traced); after each optimizer step
a trainer calls prune_step(S, dS, Ibar, kept_fraction(t, T)) (Ibar starts at zeros like S).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from moe_jax.utils.errors import require


def decompose(w: jax.Array, rank: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """W [..., M, N] -> (L [..., M, r], R [..., r, N], S [..., M, N]) with L R + S = W."""
  side = min(w.shape[-2:])
  require(1 <= rank <= side, "rank", f"must lie in [1, {side}], got {rank}",
          "pick a rank below the matrix's smaller side (the repo uses 32 for width 768)")
  w32 = w.astype(jnp.float32)
  u, sigma, vt = jnp.linalg.svd(w32, full_matrices=False)
  root = jnp.sqrt(sigma[..., :rank])
  left = u[..., :, :rank] * root[..., None, :]
  right = root[..., :, None] * vt[..., :rank, :]
  sparse = w32 - left @ right
  return left.astype(w.dtype), right.astype(w.dtype), sparse.astype(w.dtype)


def compose(left: jax.Array, right: jax.Array, sparse: jax.Array) -> jax.Array:
  """L [..., M, r] R [..., r, N] + S [..., M, N]: the dense W the factors stand for."""
  return left @ right + sparse


def kept_fraction(step, total_steps: int, final: float = 0.10, warmup_steps: int = 50,
                  initial_warmup: int = 1, final_warmup: int = 4) -> jax.Array:
  """p_t: the share of S's elements kept at `step`, 1 -> `final` on the cubic schedule."""
  start = initial_warmup * warmup_steps
  span = total_steps - (initial_warmup + final_warmup) * warmup_steps
  require(span > 0, "total_steps",
          f"{total_steps} leaves no pruning phase after {initial_warmup + final_warmup} x "
          f"{warmup_steps} warm-up steps", "train longer or shorten warmup_steps")
  require(0.0 <= final <= 1.0, "final", f"must lie in [0, 1], got {final}", "use e.g. 0.10")
  step = jnp.asarray(step, jnp.float32)
  cubic = final + (1.0 - final) * (1.0 - (step - start) / span) ** 3
  return jnp.where(step <= start, 1.0,
                   jnp.where(step > total_steps - final_warmup * warmup_steps, final, cubic))


def update_importance(ema, sparse, grads, beta: float = 0.85):
  """Ibar <- beta Ibar + (1 - beta) |S * dS|, leaf by leaf over like pytrees; Ibar starts at 0."""
  return jax.tree.map(
      lambda m, s, g: beta * m + (1.0 - beta) * jnp.abs(s.astype(jnp.float32) * g),
      ema, sparse, grads)


def row_scores(ema: jax.Array) -> jax.Array:
  """[..., M, N] smoothed importance -> [..., N]: each output unit's mean over its M inputs."""
  return jnp.mean(ema, axis=-2)


def row_masks(ema, keep):
  """[..., N] bool masks (pytree like `ema`) keeping the top rows of all leaves: fraction `keep`."""
  leaves, treedef = jax.tree.flatten(ema)
  scores = [row_scores(x) for x in leaves]
  flat = jnp.concatenate([s.reshape(-1) for s in scores])
  lengths = jnp.concatenate([jnp.full(s.size, x.shape[-2], jnp.float32)
                             for s, x in zip(scores, leaves)])
  order = jnp.argsort(flat)
  cumulative = jnp.cumsum(lengths[order])
  k = jnp.floor(cumulative[-1] * (1.0 - jnp.asarray(keep, jnp.float32)))
  threshold = flat[order][jnp.searchsorted(cumulative, k, side="left")]
  return jax.tree.unflatten(treedef, [s >= threshold for s in scores])


def apply_row_masks(sparse, masks):
  """Zeroes the pruned rows: S[..., :, n] = 0 where masks[..., n] is False."""
  return jax.tree.map(lambda s, m: s * m[..., None, :].astype(s.dtype), sparse, masks)


def prune_step(sparse, grads, ema, keep, beta: float = 0.85):
  """One pruning step on pytrees of S [..., M, N]: (S with pruned rows zeroed, new Ibar, masks)."""
  ema = update_importance(ema, sparse, grads, beta)
  masks = row_masks(ema, keep)
  return apply_row_masks(sparse, masks), ema, masks
