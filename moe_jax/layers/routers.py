"""Routers: map tokens to experts.

Legend: T tokens, D model width, E experts, K experts per token, A = number of assignments.

Every router maps x[T, D] to a `Routing`: a flat list of A (token, expert, weight) assignments,
plus the float32 router logits/probabilities[T, E] that losses and diagnostics read. Token-choice
routers give A = T * K assignments in token-major order; expert-choice gives A = E * C. Router math
always runs in float32, whatever the model dtype.
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from moe_jax.utils.errors import check_choice, require


@flax.struct.dataclass
class Routing:
  """Assignments of tokens to experts.

  Attributes:
    token: [A] int32, the token of each assignment.
    expert: [A] int32, its expert.
    weight: [A] float32, the combine weight of the expert's output for that token.
    logits: [T, E] float32 router logits.
    probs: [T, E] float32 router probabilities (softmax, or normalised sigmoid scores), used by
      the auxiliary losses.
    top_k: static K for token-choice routers (assignments are [T, K] row-major), else 0.
  """
  token: jax.Array
  expert: jax.Array
  weight: jax.Array
  logits: jax.Array
  probs: jax.Array
  top_k: int = flax.struct.field(pytree_node=False, default=0)


def _token_choice(expert_index: jax.Array, weight: jax.Array, logits, probs) -> Routing:
  """Packs [T, K] expert choices per token into a Routing."""
  t, k = expert_index.shape
  token = jnp.repeat(jnp.arange(t, dtype=jnp.int32), k)
  return Routing(token=token, expert=expert_index.reshape(-1).astype(jnp.int32),
                 weight=weight.reshape(-1).astype(jnp.float32), logits=logits, probs=probs,
                 top_k=k)


class RouterLogits(nn.Module):
  """logits[T, E] = x[T, D] @ W[D, E] in float32 (no bias)."""
  num_experts: int
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    init = nn.with_logical_partitioning(nn.initializers.normal(0.02), ("embed", "router"))
    w = self.param("kernel", init, (x.shape[-1], self.num_experts), self.param_dtype)
    return jnp.dot(x.astype(jnp.float32), w.astype(jnp.float32))


class TopKRouter(nn.Module):
  """Softmax then top-k (Mixtral, Qwen-MoE, OLMoE; Shazeer et al. 2017 without noise).

  p = softmax(x W); the K largest p_e are kept. With `normalize`, the kept weights are divided
  by their sum (Mixtral; equal to a softmax over the top-K logits); without, they stay the
  softmax probabilities over all experts (Qwen2-MoE and OLMoE with norm_topk_prob=False).
  """
  num_experts: int
  top_k: int
  normalize: bool = True
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> Routing:
    del deterministic
    logits = RouterLogits(self.num_experts, self.param_dtype, name="gate")(x)
    probs = jax.nn.softmax(logits, axis=-1)
    weight, index = jax.lax.top_k(probs, self.top_k)
    if self.normalize:
      weight = weight / jnp.sum(weight, axis=-1, keepdims=True)
    return _token_choice(index, weight, logits, probs)


class NoisyTopKRouter(nn.Module):
  """Noisy top-k gating (Shazeer et al. 2017, eqs. 3-5).

  H(x)_e = (x W_g)_e + StandardNormal() * Softplus((x W_noise)_e) while training;
  G(x) = softmax(KeepTopK(H(x), k)), i.e. a softmax over the K kept logits. At evaluation the
  noise is off. The noise needs the 'noise' RNG stream when `deterministic` is False.
  """
  num_experts: int
  top_k: int
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> Routing:
    logits = RouterLogits(self.num_experts, self.param_dtype, name="gate")(x)
    if not deterministic:
      noise_std = jax.nn.softplus(RouterLogits(self.num_experts, self.param_dtype,
                                               name="noise")(x))
      eps = jax.random.normal(self.make_rng("noise"), logits.shape, jnp.float32)
      logits = logits + eps * noise_std
    top_logits, index = jax.lax.top_k(logits, self.top_k)
    weight = jax.nn.softmax(top_logits, axis=-1)
    return _token_choice(index, weight, logits, jax.nn.softmax(logits, axis=-1))


class ExpertChoiceRouter(nn.Module):
  """Expert-choice routing (Zhou et al. 2022, eqs. 1-2).

  S = softmax(x W) [T, E]; each expert takes its C = round(T * capacity_factor / E) tokens of
  highest score: G, I = TopK(S^T, C). A token may get 0..E experts; combine weights are S at the
  chosen places. `capacity_factor` is the paper's c, the average number of experts per token.
  """
  num_experts: int
  capacity_factor: float = 2.0
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> Routing:
    del deterministic
    logits = RouterLogits(self.num_experts, self.param_dtype, name="gate")(x)
    probs = jax.nn.softmax(logits, axis=-1)
    t = x.shape[0]
    capacity = max(1, min(t, int(round(t * self.capacity_factor / self.num_experts))))
    weight, token = jax.lax.top_k(probs.T, capacity)  # [E, C]
    expert = jnp.broadcast_to(jnp.arange(self.num_experts, dtype=jnp.int32)[:, None],
                              token.shape)
    return Routing(token=token.reshape(-1).astype(jnp.int32), expert=expert.reshape(-1),
                   weight=weight.reshape(-1), logits=logits, probs=probs, top_k=0)


class SigmoidGroupRouter(nn.Module):
  """DeepSeek-V3 routing (DeepSeek-AI 2024, eqs. 13-16) with auxiliary-loss-free balancing.

  s = sigmoid(x W) [T, E]. Selection uses the biased scores s + b: experts form `n_group` groups,
  a group scores the sum of its two largest biased scores, the `topk_group` best groups are kept,
  and the top-K experts among them are chosen. Combine weights use the unbiased s, optionally
  renormalised over the K chosen (norm_topk_prob), times `routed_scaling_factor`.

  The bias b lives in the mutable 'moe_bias' collection, not in 'params': it gets no gradient and
  is moved by `aux_free_bias_update` after each step (eq. in Sec. 2.1.2).
  """
  num_experts: int
  top_k: int
  n_group: int = 1
  topk_group: int = 1
  normalize: bool = True
  routed_scaling_factor: float = 1.0
  param_dtype: jnp.dtype = jnp.float32

  def __post_init__(self):
    require(self.num_experts % self.n_group == 0, "n_group",
            f"{self.num_experts} experts do not split into {self.n_group} groups",
            "choose n_group dividing num_experts")
    require(1 <= self.topk_group <= self.n_group, "topk_group",
            f"must be in [1, n_group={self.n_group}], got {self.topk_group}", "lower topk_group")
    require(self.top_k <= self.topk_group * self.num_experts // self.n_group, "top_k",
            f"{self.top_k} exceeds the experts in {self.topk_group} groups",
            "raise topk_group or lower top_k")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> Routing:
    del deterministic
    logits = RouterLogits(self.num_experts, self.param_dtype, name="gate")(x)
    bias = self.variable("moe_bias", "e_score_correction_bias",
                         lambda: jnp.zeros((self.num_experts,), jnp.float32)).value
    scores = jax.nn.sigmoid(logits)
    biased = scores + bias
    t = scores.shape[0]
    grouped = biased.reshape(t, self.n_group, self.num_experts // self.n_group)
    group_score = jnp.sum(jax.lax.top_k(grouped, min(2, grouped.shape[-1]))[0], axis=-1)
    _, best_groups = jax.lax.top_k(group_score, self.topk_group)  # [T, topk_group]
    group_mask = jnp.sum(jax.nn.one_hot(best_groups, self.n_group, dtype=jnp.bool_), axis=1)
    expert_mask = jnp.repeat(group_mask, self.num_experts // self.n_group, axis=-1)
    _, index = jax.lax.top_k(jnp.where(expert_mask, biased, -jnp.inf), self.top_k)
    weight = jnp.take_along_axis(scores, index, axis=-1)
    if self.normalize:
      weight = weight / (jnp.sum(weight, axis=-1, keepdims=True) + 1e-20)
    weight = weight * self.routed_scaling_factor
    probs = scores / jnp.sum(scores, axis=-1, keepdims=True)
    return _token_choice(index, weight, logits, probs)


def aux_free_bias_update(bias: jax.Array, tokens_per_expert: jax.Array,
                         rate: float) -> jax.Array:
  """DeepSeek-V3's bias step: b_e += rate * sign(mean load - load_e).

  Args:
    bias: [E] current e_score_correction_bias.
    tokens_per_expert: [E] tokens routed to each expert in the last step.
    rate: the bias update speed gamma (DeepSeek-V3 used 0.001).
  """
  load = tokens_per_expert.astype(jnp.float32)
  return bias + rate * jnp.sign(jnp.mean(load) - load)


class SparseMixerRouter(nn.Module):
  """PhiMoE's SparseMixer-v2 top-2 routing, inference path (Liu et al. 2024, GRIN-MoE).

  For the first expert: threshold m = max_e l_e; experts whose relative gap
  (m - l_e) / max(|l_e|, m) exceeds 2 * jitter_eps are masked; the argmax is chosen and its
  weight is its softmax probability over the unmasked logits. The second expert repeats this with
  the first one removed. Training uses Gumbel sampling with a Heun third-order gradient estimator;
  that path is not implemented, so this router routes deterministically in training too.
  """
  num_experts: int
  top_k: int = 2
  jitter_eps: float = 0.01
  param_dtype: jnp.dtype = jnp.float32

  def __post_init__(self):
    require(self.top_k == 2, "top_k", f"sparsemixer routes exactly 2 experts, got {self.top_k}",
            "set top_k=2 or use router='topk'")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> Routing:
    del deterministic
    logits = RouterLogits(self.num_experts, self.param_dtype, name="gate")(x)

    def pick(candidates):
      threshold = jnp.max(candidates, axis=-1, keepdims=True)
      factor = jnp.maximum(jnp.abs(logits), threshold)
      masked = jnp.where((threshold - logits) / factor > 2 * self.jitter_eps, -jnp.inf,
                         candidates)
      choice = jnp.argmax(candidates, axis=-1)
      gate = jnp.take_along_axis(jax.nn.softmax(masked, axis=-1), choice[:, None], axis=-1)
      return choice, gate[:, 0]

    first, w1 = pick(logits)
    second, w2 = pick(jnp.where(jax.nn.one_hot(first, self.num_experts, dtype=jnp.bool_),
                                -jnp.inf, logits))
    index = jnp.stack([first, second], axis=-1)
    weight = jnp.stack([w1, w2], axis=-1)
    return _token_choice(index, weight, logits, jax.nn.softmax(logits, axis=-1))


ROUTERS = {
    "topk": TopKRouter,
    "noisy_topk": NoisyTopKRouter,
    "expert_choice": ExpertChoiceRouter,
    "sigmoid_group": SigmoidGroupRouter,
    "sparsemixer": SparseMixerRouter,
}


def make_router(name: str, num_experts: int, top_k: int, *, normalize: bool = True,
                capacity_factor: Optional[float] = None, n_group: int = 1,
                topk_group: int = 1, routed_scaling_factor: float = 1.0,
                jitter_eps: float = 0.01, param_dtype=jnp.float32,
                module_name: str = "router") -> nn.Module:
  """Builds the router named `name` (a key of ROUTERS) with the fields it uses."""
  check_choice("router", name, ROUTERS)
  require(1 <= top_k <= num_experts, "top_k",
          f"must be in [1, num_experts={num_experts}], got {top_k}",
          "lower top_k or raise num_experts")
  common = dict(num_experts=num_experts, param_dtype=param_dtype, name=module_name)
  if module_name is None:  # an unbound router, to `apply` with explicit variables
    common["parent"] = None
  if name == "topk":
    return TopKRouter(top_k=top_k, normalize=normalize, **common)
  if name == "noisy_topk":
    return NoisyTopKRouter(top_k=top_k, **common)
  if name == "expert_choice":
    return ExpertChoiceRouter(capacity_factor=capacity_factor or float(top_k), **common)
  if name == "sigmoid_group":
    return SigmoidGroupRouter(top_k=top_k, n_group=n_group, topk_group=topk_group,
                              normalize=normalize,
                              routed_scaling_factor=routed_scaling_factor, **common)
  return SparseMixerRouter(top_k=top_k, jitter_eps=jitter_eps, **common)
