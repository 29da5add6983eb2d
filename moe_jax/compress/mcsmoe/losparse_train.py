"""LoSparse compression of a model's experts: trained through the trainer's hooks, or one-shot.

Legend: l an MoE layer, k_l its referenced experts (the first k_l stored), M x N one expert
matrix (wi_gate / wi_up: D x F, wo: F x D), r rank, t the step, p_t the kept fraction of S.

The model keeps running dense expert weights W; the factors live in the hook's state:
  W = L R + S from the rank-r SVD at the start (losparse.decompose), then each step
  dL = dW R^T, dR = L^T dW, dS = dW (the chain rule through W = L R + S: exactly the gradients
  a model holding L, R, S would get), AdamW on the trainer's schedule with moments of its own,
  S pruned in whole rows by the EMA of |S dS| to p_t (losparse.prune_step, one pool over every
  matrix of every layer, as the repo pools them), and W <- L R + S written back.
The trainer freezes the expert weights (`frozen`); `post_update` owns them. Its state (factors,
importance, moments) is TrainState.hook_state, checkpointed with the rest: a resumed run
continues exactly.

Rank: the repo fixes the low-rank part's share of a matrix's parameters,
  ratio = r (d_model + d_ff) / (d_model d_ff) = 32 x 3840 / (768 x 3072) = 0.0521 (Switch-base,
`low_rank_factor` 32), and `scaled_rank` keeps that share at other widths:
  r = max(1, round(ratio M N / (M + N)))   (6 for tiny_moe's 192 x 256).

One-shot (`one_shot`, the row without training): the repo's zero-shot fairseq-MoE variant,
importance from the gradients of a few batches with no optimizer step, S pruned at once to
the final fraction.

Storage (`storage`): a pruned S stored dense saves nothing, so we count what a row-sparse store
holds per matrix: L and R (r (M + N) values), the kept rows of S (M values each) and one int32
index per kept row; run factored, one use costs 2 (r (M + N) + M n_kept) FLOPs. (Our runtime
runs the dense W = L R + S: the same function without those savings.)
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from moe_jax.compress.mcsmoe import losparse
from moe_jax.models.loading import LoadedModel
from moe_jax.train.loop import TrainConfig
from moe_jax.train.trainer import make_optimizer
from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_positive, require

REPO_RATIO = 32 * (768 + 3072) / (768 * 3072)
MATRICES = ("wi_gate", "wi_up", "wo")


@dataclasses.dataclass(frozen=True)
class LoSparseConfig(Section):
  """rank: r of every expert matrix (0: `scaled_rank`); final_fraction: the kept share of S
  (repo 0.10); warmup_steps, initial_warmup, final_warmup: the cubic schedule's flat ends
  (repo 50, 1, 4); beta: the importance EMA (repo 0.85); one_shot_batches: batches whose
  gradients score S in the one-shot variant."""
  rank: int = 0
  final_fraction: float = 0.10
  warmup_steps: int = 50
  initial_warmup: int = 1
  final_warmup: int = 4
  beta: float = 0.85
  one_shot_batches: int = 4

  def __post_init__(self):
    require(self.rank >= 0, "rank", f"must be >= 0, got {self.rank}", "use 0 for scaled_rank")
    require(0.0 < self.final_fraction <= 1.0, "final_fraction", f"must lie in (0, 1], got "
            f"{self.final_fraction}", "use e.g. 0.10")
    for name in ("warmup_steps", "one_shot_batches"):
      check_positive(name, getattr(self, name))
    require(0.0 <= self.beta < 1.0, "beta", f"must lie in [0, 1), got {self.beta}",
            "use 0.85")

  def rank_for(self, m: int, n: int) -> int:
    return self.rank or scaled_rank(m, n)

  def kept(self, step, total_steps: int):
    return losparse.kept_fraction(step, total_steps, self.final_fraction, self.warmup_steps,
                                  self.initial_warmup, self.final_warmup)


def scaled_rank(m: int, n: int, ratio: float = REPO_RATIO) -> int:
  """The rank keeping L R at the repo's share of an M x N matrix's parameters."""
  return max(1, min(m, n, round(ratio * m * n / (m + n))))


def _name(layer: int) -> str:
  return f"layer_{layer}"


def _expert_tree(params, counts: dict[int, int]) -> dict:
  """{layer_i: {matrix: W[:k_l]}}: the referenced experts' matrices of each MoE layer."""
  out = {}
  for i, k in counts.items():
    experts = params[_name(i)]["moe"]["experts"]
    out[_name(i)] = {m: experts[m][:k] for m in MATRICES if m in experts}
  return out


def _write(params, weights: dict) -> dict:
  """params with each layer's first k_l experts replaced by weights[layer_i][matrix]."""
  params = dict(params)
  for layer, mats in weights.items():
    block = dict(params[layer])
    moe = dict(block["moe"])
    experts = dict(moe["experts"])
    for m, w in mats.items():
      experts[m] = jnp.asarray(experts[m]).at[:w.shape[0]].set(w.astype(experts[m].dtype))
    moe["experts"], block["moe"], params[layer] = experts, moe, block
  return params


def factorize(params, counts: dict[int, int], cfg: LoSparseConfig) -> dict:
  """{"left", "right", "sparse"} trees of the referenced experts' W = L R + S."""
  weights = _expert_tree(params, counts)
  parts = jax.tree.map(lambda w: losparse.decompose(w, cfg.rank_for(*w.shape[-2:])), weights)
  pick = lambda j: jax.tree.map(lambda p: p[j], parts, is_leaf=lambda p: isinstance(p, tuple))
  return {"left": pick(0), "right": pick(1), "sparse": pick(2)}


def _compose(factors: dict) -> dict:
  return jax.tree.map(losparse.compose, factors["left"], factors["right"], factors["sparse"])


def factor_grads(factors: dict, dw) -> dict:
  """The gradients of L, R, S from dW through W = L R + S: dL = dW R^T, dR = L^T dW, dS = dW."""
  transpose = lambda a: jnp.swapaxes(a, -1, -2)
  return {"left": jax.tree.map(lambda d, r: d @ transpose(r), dw, factors["right"]),
          "right": jax.tree.map(lambda l, d: transpose(l) @ d, factors["left"], dw),
          "sparse": dw}


def frozen(path: tuple[str, ...]) -> bool:
  """trainable(path) for LoSparse training: routers (MC-SMoE) and routed experts (the hook's)
  frozen; shared experts train with the rest."""
  return not ("router" in path or "experts" in path)


def hooks(params, counts: dict[int, int], cfg: LoSparseConfig,
          train: TrainConfig) -> tuple[Callable, Callable]:
  """(post_update, init_hook_state) for moe_jax.train.trainer.Hooks (module docstring).

  params: the starting parameters (the run's `variables`), factorised here, eagerly: inside
  the trainer's sharded, jitted initialisation XLA:CPU deadlocked on the batched SVD (jitted
  alone it runs), so init_hook_state hands out these factors; counts: MoE layer index -> k_l
  referenced experts; train: the run's optimisation settings (the factors' AdamW follows the
  same schedule).
  """
  optimizer = make_optimizer(train.lr, train.warmup_steps, train.num_steps, train.weight_decay,
                             train.grad_clip)
  cfg.kept(0, train.num_steps)  # refuses a run too short for the schedule before it starts
  start = jax.device_get(factorize(nn.unbox(params), counts, cfg))

  def init_hook_state(_):
    factors = jax.tree.map(jnp.asarray, start)
    return {"factors": factors, "ema": jax.tree.map(jnp.zeros_like, factors["sparse"]),
            "opt": optimizer.init(factors)}

  def post_update(params, grads, state, step):
    f, dw = state["factors"], _expert_tree(grads, counts)
    updates, opt = optimizer.update(factor_grads(f, dw), state["opt"], f)
    f = optax.apply_updates(f, updates)
    sparse, ema, _ = losparse.prune_step(f["sparse"], dw, state["ema"],
                                         cfg.kept(step, train.num_steps), cfg.beta)
    f = {**f, "sparse": sparse}
    return _write(params, _compose(f)), {"factors": f, "ema": ema, "opt": opt}

  return post_update, init_hook_state


def one_shot(model: LoadedModel, counts: dict[int, int], cfg: LoSparseConfig,
             loss_fn: Callable, batches) -> tuple[LoadedModel, dict]:
  """W = L R + S with S pruned at once to cfg.final_fraction by the EMA of |S dS| over
  `batches`, dS the gradient of loss_fn(logits, batch) (no optimizer step): (model, factors)."""
  params = nn.unbox(model.variables["params"])
  factors = factorize(params, counts, cfg)
  rest = {k: v for k, v in model.variables.items() if k != "params"}

  @jax.jit
  def grads(params, batch):
    def loss(p):
      logits = model.module.apply({**rest, "params": p}, batch[:, :-1])
      return loss_fn(logits, batch)
    return _expert_tree(jax.grad(loss)(params), counts)

  ema = jax.tree.map(jnp.zeros_like, factors["sparse"])
  for batch in batches:
    ema = losparse.update_importance(ema, factors["sparse"], grads(params, batch), cfg.beta)
  masks = losparse.row_masks(ema, cfg.final_fraction)
  factors = {**factors, "sparse": losparse.apply_row_masks(factors["sparse"], masks)}
  variables = {**model.variables, "params": _write(params, _compose(factors))}
  return LoadedModel(model.module, variables, model.source), factors


def storage(factors: dict) -> dict:
  """Per MoE layer name, per referenced expert [k_l]: the values a row-sparse store holds
  ("values"), its int32 row indices ("indices") and FLOPs per use run factored ("flops")."""
  out = {}
  for layer in factors["sparse"]:
    values = indices = flops = 0
    for m, s in factors["sparse"][layer].items():
      s = np.asarray(s)  # [k, M, N]
      rank, (rows_in, cols) = factors["left"][layer][m].shape[-1], s.shape[-2:]
      kept = np.sum(np.any(s != 0, axis=-2), axis=-1)  # [k] kept rows (our columns)
      low = rank * (rows_in + cols)
      values = values + low + kept * rows_in
      indices = indices + kept
      flops = flops + 2 * (low + kept * rows_in)
    out[layer] = {"values": values, "indices": indices, "flops": flops}
  return out
