"""Agreement of a model with a reference model (e.g. its float original) on the same tokens.

Legend: R rows, B rows per batch, S positions, T tokens, V vocabulary, K experts per token,
l an MoE layer.

  kl         = mean_t sum_v p_ref(v | t) (log p_ref(v | t) - log p(v | t))   (KL(ref || model),
                                                                              nats per token)
  top1       = mean_t [argmax_v p_ref(v | t) == argmax_v p(v | t)]
  routing[l] = mean_t [the K experts layer l picks for t == those the reference's layer l picks,
                       as sets: order ignored]

Routing agreement needs both models to have MoE FFNs at the same layers, the same K and
token-choice routers (expert choice has no K experts per token); expert ids are compared as they
are. Both models run in one jitted call per batch [B, S]; padded rows are masked out.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.eval.forward import batches
from moe_jax.models.lm import check_token_ids
from moe_jax.models.loading import LoadedModel
from moe_jax.utils.errors import require


def check_comparable(model: LoadedModel, reference: LoadedModel, routing: bool) -> None:
  """Refuses, in one line naming the argument, a pair these measures do not apply to."""
  require(model.cfg.vocab_size == reference.cfg.vocab_size, "reference",
          f"vocab_size {reference.cfg.vocab_size} differs from the model's "
          f"{model.cfg.vocab_size}", "compare models that share a tokenizer")
  if not routing:
    return
  for name, m in (("model", model), ("reference", reference)):
    require(bool(m.cfg.moe_layer_ids()), name, f"{m.source} has no MoE layers, so routing "
            "agreement is undefined", "give an MoE model or set routing_agreement=false")
    require(m.cfg.moe.router != "expert_choice", name, "an expert-choice router picks no fixed "
            "K experts per token", "set routing_agreement=false for expert-choice models")
  ids, ref_ids = model.cfg.moe_layer_ids(), reference.cfg.moe_layer_ids()
  require(ids == ref_ids, "reference", f"MoE layers {list(ref_ids)} differ from the model's "
          f"{list(ids)}", "compare models with the same MoE layers or set routing_agreement=false")
  k, ref_k = model.cfg.moe.top_k, reference.cfg.moe.top_k
  require(k == ref_k, "reference", f"top_k={ref_k} differs from the model's top_k={k}",
          "compare models with the same top_k or set routing_agreement=false")


def _expert_sets(state: dict, layers: tuple[int, ...], k: int) -> list[jax.Array]:
  """Each MoE layer's chosen experts [T, K], sorted within a token."""
  inter = state["intermediates"]
  return [jnp.sort(inter[f"layer_{i}"]["moe"]["expert_index"][0].reshape(-1, k), axis=-1)
          for i in layers]


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _batch_agreement(module, ref_module, layers, k, variables, ref_variables, inputs, valid):
  mutable = ["intermediates"] if layers else False
  out, ref_out = (module.apply(variables, inputs, mutable=mutable),
                  ref_module.apply(ref_variables, inputs, mutable=mutable))
  logits, ref_logits = (out[0], ref_out[0]) if layers else (out, ref_out)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # [B, S, V]
  ref_logp = jax.nn.log_softmax(ref_logits.astype(jnp.float32), axis=-1)
  weight = jnp.broadcast_to(valid[:, None], logp.shape[:2]).astype(jnp.float32)  # [B, S]
  kl = jnp.sum(jnp.exp(ref_logp) * (ref_logp - logp), axis=-1)
  top1 = (jnp.argmax(logp, -1) == jnp.argmax(ref_logp, -1)).astype(jnp.float32)
  routing = jnp.zeros((0,), jnp.float32)
  if layers:
    same = [jnp.all(a == b, axis=-1).astype(jnp.float32) * weight.reshape(-1)
            for a, b in zip(_expert_sets(out[1], layers, k), _expert_sets(ref_out[1], layers, k))]
    routing = jnp.stack([jnp.sum(s) for s in same])
  return jnp.sum(kl * weight), jnp.sum(top1 * weight), routing


def agreement(model: LoadedModel, reference: LoadedModel, inputs: np.ndarray, batch_size: int,
              routing: bool = True) -> dict:
  """{kl, top1, tokens[, routing: {layer_i: fraction}, routing_mean]} over inputs [R, S]."""
  check_comparable(model, reference, routing)
  require(len(inputs) > 0, "data", "there are no tokens to compare the models on",
          "give documents long enough for at least one window")
  check_token_ids(inputs, model.cfg.vocab_size, "tokenizer")
  inputs = inputs.astype(np.int32)
  layers = tuple(model.cfg.moe_layer_ids()) if routing else ()
  pending = []
  for ids, n in batches(len(inputs), batch_size):
    valid = np.arange(batch_size) < n
    pending.append(_batch_agreement(model.module, reference.module, layers, model.cfg.moe.top_k,
                                    model.variables, reference.variables, inputs[ids], valid))
  kl, top1, same = (np.sum([np.asarray(p[j], np.float64) for p in pending], axis=0)
                    for j in range(3))
  tokens = inputs.size
  out = {"kl": float(kl) / tokens, "top1": float(top1) / tokens, "tokens": tokens}
  if layers:
    out["routing"] = {f"layer_{i}": float(s) / tokens for i, s in zip(layers, same)}
    out["routing_mean"] = float(np.mean(same)) / tokens
  return out
