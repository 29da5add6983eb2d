"""EBSS, expert-balanced self-sampling (MoEQuant, Chen et al. 2025, Sec. 4.1, Eq. 4, Algorithm 1):
calibration text sampled from the model itself by a beam search that prefers likely text whose
tokens spread evenly over the experts.

Legend: N sentences, w beams per sentence (the EBSS width), b candidate tokens per beam, S tokens
per sentence, V vocabulary, L MoE layers, E experts, K experts per token.

Each sentence starts from a random first token (uniform over `first_tokens`) and grows one token
per step j = 1 .. S-1. Every beam c (j tokens so far, cumulative log-probability RS(c), Eq. 11)
is extended by each of its b likeliest next tokens v, and every extension is scored by the cost

  cost(c + v) = -(RS(c) + log p(v | c)) / (j + 1) + sigma(c + v) / tau          (Eq. 13)

lower is better; the w cheapest extensions of a sentence are kept (Algorithm 1, line 18; the
figure writes "Topk" of a "score", but both terms are costs, as the third-party fork's default
`--objective min` reads them). The sentence returned is the final beam of least
-RS / S + sigma / tau. sigma is Eq. 4 on the expert-usage shares of the sequence's tokens:

  u_le = (assignments of layer l to expert e) / (assignments of layer l),
  sigma_l = sqrt(E / (E - 1) * sum_e (u_le - 1/E)^2)                             (Eq. 4)

How the paper combines sigma over layers is not written; `spread` chooses: "mean" of sigma_l
over the MoE layers (the fork's choice, the default), "max" over layers, or "pooled" (Eq. 4 over
the L E (layer, expert) shares as one distribution). The fork's sigma drops Eq. 4's factor E (its
sample std is ours / sqrt(E)) and uses the parent's sigma for every extension ("deferred");
here sigma(c + v) counts v's own routing, as Algorithm 1 line 14 says, so every extension is run.

Batched and jitted: a chunk of sentences runs as one `lax.scan` over the steps; each step is one
call of the decoder with its key/value cache (moe_jax/models/generate.py) on all N w b extensions
at once (each beam's cache repeated b times), which gives at the same time each extension's
routing (its one-hot expert counts, from the MoE layers' sown `expert_index`) and, for the kept
ones, the next step's logits. b = V is Algorithm 1 exactly (every token of the vocabulary); the
fork keeps the 64 likeliest of its 32k-150k tokens. With w = 1 and tau -> infinity the cost is
the next token's negative log-probability and EBSS is greedy decoding.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.models.generate import empty_cache
from moe_jax.models.lm import MoELM
from moe_jax.models.loading import LoadedModel
from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_choice, check_positive, require

SPREADS = ("mean", "max", "pooled")


@dataclasses.dataclass(frozen=True)
class EBSSConfig(Section):
  """width: w beams per sentence; tau: the balance temperature; branch: b candidate tokens per
  beam (the likeliest; >= width); spread: how sigma combines over layers (SPREADS);
  first_tokens: the first token is drawn uniformly from [lo, hi) (printable ASCII bytes by
  default; (0, V) is the paper's Random(V)); batch_size: sentences per jitted call; seed."""
  width: int = 4
  tau: float = 1.2
  branch: int = 16
  spread: str = "mean"
  first_tokens: tuple[int, int] = (32, 127)
  batch_size: int = 16
  seed: int = 0

  def __post_init__(self):
    check_positive("width", self.width)
    require(self.tau > 0, "tau", f"must be > 0 (inf: no balance term), got {self.tau}",
            "use e.g. 1.2")
    require(self.branch >= self.width, "branch", f"{self.branch} candidates per beam cannot "
            f"fill {self.width} beams from the first one", f"use branch >= width={self.width}")
    check_choice("spread", self.spread, SPREADS)
    lo, hi = self.first_tokens
    require(0 <= lo < hi, "first_tokens", f"[{lo}, {hi}) is empty or negative",
            "give a range lo,hi with 0 <= lo < hi, e.g. 32,127")
    check_positive("batch_size", self.batch_size)


class Samples(NamedTuple):
  """tokens [N, S] int32; counts [N, L, E] (expert assignments of each sentence); logprob [N]
  (RS of tokens 2..S); seconds (wall time, compilation included)."""
  tokens: np.ndarray
  counts: np.ndarray
  logprob: np.ndarray
  seconds: float


def spread(counts: jax.Array, how: str = "mean") -> jax.Array:
  """sigma of expert counts [..., L, E] -> [...] (Eq. 4, combined over layers by `how`)."""
  c = counts.astype(jnp.float32)
  if how == "pooled":
    c = c.reshape(*c.shape[:-2], 1, -1)
  e = c.shape[-1]
  u = c / jnp.maximum(jnp.sum(c, axis=-1, keepdims=True), 1)
  sigma = jnp.sqrt(e / (e - 1) * jnp.sum(jnp.square(u - 1 / e), axis=-1))  # [..., L]
  return jnp.max(sigma, axis=-1) if how == "max" else jnp.mean(sigma, axis=-1)


def _routed_counts(state: dict, layers: tuple[int, ...], k: int, e: int) -> jax.Array:
  """One-hot expert counts [R, L, E] of a decode call's R tokens (one per row)."""
  sown = state["intermediates"]
  return jnp.stack([jnp.sum(jax.nn.one_hot(
      sown[f"layer_{i}"]["moe"]["expert_index"][0].reshape(-1, k), e, dtype=jnp.int32), axis=1)
      for i in layers], axis=1)


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5, 7))
def _chunk(cfg, variables, first, length, width, branch, tau, spread_how):
  """EBSS of len(first) sentences of `length` tokens: (tokens, counts, logprob) of the best."""
  n, w, b = first.shape[0], width, branch
  model = MoELM(dataclasses.replace(cfg, max_len=length), decode=True)
  layers, k, e = cfg.moe_layer_ids(), cfg.moe.top_k, cfg.moe.num_experts
  run = lambda cache, tok, pos: model.apply({**variables, "cache": cache}, tok, pos,
                                            mutable=["cache", "intermediates"])
  rows = jnp.repeat(first, w)  # [N w]: every beam of a sentence starts as its first token
  logits, state = run(empty_cache(model, n * w), rows[:, None], jnp.zeros((n * w, 1), jnp.int32))
  tokens = jnp.zeros((n, w, length), jnp.int32).at[:, :, 0].set(rows.reshape(n, w))
  counts = _routed_counts(state, layers, k, e).reshape(n, w, len(layers), e)
  valid = jnp.arange(w) == 0  # one real beam at first; the copies may not be picked
  carry = (state["cache"], logits[:, -1].reshape(n, w, -1), tokens, jnp.zeros((n, w)), counts,
           jnp.broadcast_to(valid, (n, w)))

  def step(carry, j):
    cache, logits, tokens, rs, counts, valid = carry
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    cand_logp, cand = jax.lax.top_k(logp, b)  # [N, w, b]
    tiled = jax.tree.map(lambda c: jnp.repeat(c, b, axis=0) if c.ndim else c, cache)
    out, state = run(tiled, cand.reshape(-1, 1), jnp.full((n * w * b, 1), j, jnp.int32))
    ext_counts = counts[:, :, None] + _routed_counts(state, layers, k, e).reshape(
        n, w, b, len(layers), e)
    cost = -(rs[..., None] + cand_logp) / (j + 1) + spread(ext_counts, spread_how) / tau
    cost = jnp.where(valid[..., None], cost, jnp.inf).reshape(n, w * b)
    _, pick = jax.lax.top_k(-cost, w)  # [N, w], cheapest first
    parent, sent = pick // b, jnp.arange(n)[:, None]
    flat = (sent * (w * b) + pick).reshape(-1)  # rows of the extension batch
    cache = jax.tree.map(lambda c: c[flat] if c.ndim else c, state["cache"])
    tokens = tokens[sent, parent].at[:, :, j].set(cand.reshape(n, w * b)[sent, pick])
    rs = rs[sent, parent] + cand_logp.reshape(n, w * b)[sent, pick]
    counts = ext_counts.reshape(n, w * b, len(layers), e)[sent, pick]
    valid = jnp.isfinite(cost[sent, pick])
    logits = out[:, -1].reshape(n, w * b, -1)[sent, pick]
    return (cache, logits, tokens, rs, counts, valid), None

  (_, _, tokens, rs, counts, valid), _ = jax.lax.scan(step, carry, jnp.arange(1, length))
  final = jnp.where(valid, -rs / length + spread(counts, spread_how) / tau, jnp.inf)
  best = jnp.argmin(final, axis=1)
  sent = jnp.arange(n)
  return tokens[sent, best], counts[sent, best], rs[sent, best]


def sample(model: LoadedModel, num: int, length: int, config: EBSSConfig = EBSSConfig()) -> Samples:
  """`num` EBSS sentences of `length` tokens from `model` (module docstring)."""
  cfg = model.cfg
  require(bool(cfg.moe_layer_ids()), "model", "has no MoE layer, so no expert balance",
          "sample from an MoE model")
  require(cfg.moe.router != "expert_choice", "model.moe.router", "expert-choice routing has no "
          "K experts per token to count", "use a token-choice model")
  require(cfg.moe.num_experts >= 2, "model.moe.num_experts", "Eq. 4 needs two experts or more",
          "use a model with E >= 2")
  lo, hi = config.first_tokens
  require(hi <= cfg.vocab_size, "ebss.first_tokens", f"[{lo}, {hi}) exceeds the vocabulary "
          f"({cfg.vocab_size})", f"use a range within [0, {cfg.vocab_size})")
  require(config.branch <= cfg.vocab_size, "ebss.branch", f"{config.branch} exceeds the "
          f"vocabulary ({cfg.vocab_size})", f"use at most {cfg.vocab_size}")
  check_positive("num", num)
  require(2 <= length <= cfg.max_len, "length", f"must be in [2, max_len={cfg.max_len}], got "
          f"{length}", "sample shorter sentences")
  start = time.perf_counter()
  first = np.random.default_rng(config.seed).integers(lo, hi, num).astype(np.int32)
  batch = min(config.batch_size, num)
  variables = nn.unbox(model.variables)
  parts = []
  for s in range(0, num, batch):
    chunk = first[s:s + batch]
    padded = np.concatenate([chunk, np.full(batch - len(chunk), lo, np.int32)])
    out = _chunk(cfg, variables, jnp.asarray(padded), length, config.width, config.branch,
                 float(config.tau), config.spread)
    parts.append([np.asarray(a)[:len(chunk)] for a in out])
  tokens, counts, logprob = (np.concatenate([p[i] for p in parts]) for i in range(3))
  return Samples(tokens, counts, logprob, time.perf_counter() - start)
