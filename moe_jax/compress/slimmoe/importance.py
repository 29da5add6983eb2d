"""SlimMoE importance scores: per-weight saliency, reduced to expert neurons and GQA groups.

Legend: E experts, D model width, F expert hidden width, H query heads, G key/value heads
(groups), R = H / G query heads per group, K head width, N calibration batches.

SlimMoE (arXiv 2506.18349) scores structures by the sensitivity of a top-8-logit distillation
loss against the unpruned teacher; the exact formula is not readable from the sources we have,
so (as issue 23 asks) the score is the first-order Taylor estimate, averaged over N batches:

  s(theta) = 1/N sum_n |theta * dL_n/dtheta|                     (per weight, "taylor")
  I_{e,j} = sum_d s(Wg[e,d,j]) + s(Wu[e,d,j]) + s(Wo[e,j,d])     (neuron j of expert e)
  I_g = sum over q/k/v/o weights (and biases) of group g's heads of s(theta)   (GQA group g)

L is the distillation objective of `moe_jax.train.distill.kd_objective` (CE weight on the data
plus the top-k KL to the teacher): on the unpruned model the student is the teacher and the
KL's gradient is exactly zero, so the first stage's score comes from its CE term. Baselines:
"magnitude" s = |theta| and "random" s ~ U(0, 1), reduced the same way.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.utils.errors import check_choice

SCORES = ("taylor", "magnitude", "random")


@functools.partial(jax.jit, static_argnames=("module", "objective"))
def _mean_abs_taylor(module, objective: Callable, variables: dict, batches: jax.Array,
                     objective_args: Any) -> dict:
  rest = {k: v for k, v in variables.items() if k != "params"}

  def loss(params, batch):
    logits = module.apply({"params": params, **rest}, batch[:, :-1])
    return objective(logits, batch, objective_args)[0]

  def step(total, batch):
    grads = jax.grad(loss)(variables["params"], batch)
    return jax.tree.map(lambda t, p, g: t + jnp.abs(p * g), total, variables["params"],
                        grads), None

  total, _ = jax.lax.scan(step, jax.tree.map(jnp.zeros_like, variables["params"]), batches)
  return jax.tree.map(lambda t: t / batches.shape[0], total)


def taylor_saliency(module, variables: dict, batches: np.ndarray, objective: Callable,
                    objective_args: Any = None) -> dict:
  """s = mean_n |theta * dL_n/dtheta| over batches[N, B, S+1], a tree like variables['params'].

  objective(logits[B, S, V], batch[B, S+1], objective_args) -> (loss, metrics), as the trainer's
  Hooks.objective (one compiled function per module and objective).
  """
  return _mean_abs_taylor(module, objective, variables, jnp.asarray(batches, jnp.int32),
                          objective_args)


def saliency(score: str, module, variables: dict, batches: np.ndarray, objective: Callable,
             objective_args: Any = None, seed: int = 0) -> dict:
  """The per-weight saliency tree of `score` (one of SCORES; see the module docstring)."""
  check_choice("score", score, SCORES)
  params = variables["params"]
  if score == "taylor":
    return taylor_saliency(module, variables, batches, objective, objective_args)
  if score == "magnitude":
    return jax.tree.map(jnp.abs, params)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: rng.random(x.shape, np.float32), params)


def ffn_neuron_scores(ffn: dict) -> jax.Array:
  """I[..., F]: the saliency of each hidden neuron of stacked FFN weights (wi_gate?, wi_up
  [..., D, F], wo [..., F, D]; an expert stack has the leading E axis, a shared expert none)."""
  score = jnp.sum(ffn["wi_up"], axis=-2) + jnp.sum(ffn["wo"], axis=-1)
  if "wi_gate" in ffn:
    score = score + jnp.sum(ffn["wi_gate"], axis=-2)
  return score


def gqa_group_scores(attn: dict) -> jax.Array:
  """I[G]: the saliency of each key/value group (its K/V head, its R query heads and their
  o_proj rows) from the attention's saliency tree (q_proj [D, H, K], k/v_proj [D, G, K],
  o_proj [H, K, D], optional q/k/v biases [H or G, K])."""
  g = attn["k_proj"]["kernel"].shape[1]
  per_query = jnp.sum(attn["q_proj"]["kernel"], axis=(0, 2)) + jnp.sum(
      attn["o_proj"]["kernel"], axis=(1, 2))  # [H]
  per_kv = sum(jnp.sum(attn[n]["kernel"], axis=(0, 2)) for n in ("k_proj", "v_proj"))  # [G]
  if "bias" in attn["q_proj"]:
    per_query = per_query + jnp.sum(attn["q_proj"]["bias"], axis=-1)
    per_kv = per_kv + sum(jnp.sum(attn[n]["bias"], axis=-1) for n in ("k_proj", "v_proj"))
  return per_kv + jnp.sum(per_query.reshape(g, -1), axis=-1)
