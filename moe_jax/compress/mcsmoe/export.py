"""A merged model in the Hugging Face format, which has no slot -> expert map: three ways.

Legend: L MoE layers, T calibration tokens, D width, E router slots, G experts stored per merged
layer (k_l of them referenced in layer l), K experts per token, z[T, E] slot logits.

A Mixtral-style config routes with one linear router over its physical experts, so a merged
model (E slots -> G experts) is written as one of:
  "duplicate":    E experts, each slot's merged expert copied (merged_lm.duplicate). Exact (the
                  same logits), and transformers loads it; no expert memory saved.
  "group_router": G experts and a [D, G] router whose column g is the least-squares fit (on the
                  merged model's own calibration gate inputs x) of x -> LSE_{e in g} z_e, the
                  log-sum-exp of group g's slot logits (an unreferenced padding expert's column
                  is fit to the lowest group's: it should rank last; its weights are zero).
                  Saves the memory; not equivalent: top-K over G experts always picks K
                  distinct ones, so it cannot match on a token whose K slots share an expert
                  (the merged model runs one expert there), and elsewhere its ranking is a
                  linear approximation.
  "lse_groups":   top-K experts by the exact LSE_{e in g} z_e (MoEConfig slot_routing="groups";
                  layers/slots.py): the best a group-level softmax router can do, still not
                  equivalent for the same reason, and not expressible as a linear router.
`shared_slot_share` measures how often the first reason bites. `save_merged` writes the exact
"duplicate" directory and `load_merged` reads one back as the merged model (identical experts
stored once: merged_lm.deduplicate), so the directory transformers runs is also the merged
model's file format, at the duplicated size on disk. Costs are measured against the
merged model: bits per byte, KL(merged || export) and top-1 agreement (moe_jax/eval), the bytes
of the safetensors written, and for what is saved, transformers' logits against ours.
"""
from __future__ import annotations

import dataclasses
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.analysis import traces
from moe_jax.compress.mcsmoe import merged_lm
from moe_jax.convert.hf import save_pretrained
from moe_jax.layers import slots
from moe_jax.models.loading import LoadedModel, load_model
from moe_jax.utils.errors import require

CHOICES = ("duplicate", "group_router", "lse_groups")


def lse_groups(merged: LoadedModel) -> LoadedModel:
  """The merged model routing by top-K over experts by their slots' log-sum-exp logits."""
  cfg = merged.cfg
  moe = dataclasses.replace(cfg.moe, slot_routing="groups")
  return LoadedModel(type(merged.module)(dataclasses.replace(cfg, moe=moe)), merged.variables,
                     merged.source)


def fit_group_router(gate_inputs: np.ndarray, logits: np.ndarray, slot_map: np.ndarray,
                     num_experts: int, ridge: float = 1e-6) -> np.ndarray:
  """[D, G] least-squares router from x[T, D] to the group LSE logits of z[T, E] (module doc)."""
  target = np.asarray(slots.group_logits(jnp.asarray(logits, jnp.float32),
                                         jnp.asarray(slot_map), num_experts), np.float64)
  empty = ~np.isfinite(target)
  target[empty] = np.broadcast_to(np.min(np.where(empty, np.inf, target), axis=-1,
                                         keepdims=True), target.shape)[empty]
  x = np.asarray(gate_inputs, np.float64)
  gram = x.T @ x + ridge * np.trace(x.T @ x) / x.shape[1] * np.eye(x.shape[1])
  return np.linalg.solve(gram, x.T @ target)


def group_router(merged: LoadedModel, calibration_windows: np.ndarray,
                 batch_size: int = 16) -> LoadedModel:
  """G experts (the merged ones, no slot map) and the least-squares [D, G] router."""
  require(merged.cfg.moe.router == "topk", "model.moe.router", "the group router is fit for "
          f"softmax top-k routing, got {merged.cfg.moe.router!r}", "export with 'duplicate'")
  trace = traces.capture(merged, calibration_windows, batch_size)
  cfg = merged.cfg
  plain = merged_lm.duplicate(merged)  # E experts; replaced below by the G merged ones
  variables = dict(plain.variables)
  for l, (i, slot_map) in enumerate(zip(cfg.moe_layer_ids(), merged_lm.slot_maps(merged))):
    kernel = fit_group_router(trace.gate_inputs(l), trace.logits(l), slot_map,
                              cfg.moe.num_experts)
    path = ("params", f"layer_{i}", "moe")
    moe = {"experts": merged.variables["params"][f"layer_{i}"]["moe"]["experts"],
           "router": {"gate": {"kernel": jnp.asarray(kernel, jnp.float32)}}}
    variables = merged_lm.replaced(variables, path, moe)
  moe_cfg = dataclasses.replace(cfg.moe, num_slots=0)
  return LoadedModel(type(merged.module)(dataclasses.replace(cfg, moe=moe_cfg)), variables,
                     merged.source)


def shared_slot_share(merged: LoadedModel, usage: np.ndarray) -> float:
  """Mean over MoE layers of the share of a token's K slots that another of its slots shares
  an expert with: 1 - (distinct experts per token) / K, from usage [L, G]."""
  return float(1.0 - np.mean(np.sum(usage, axis=-1)) / merged.cfg.moe.top_k)


def save(model: LoadedModel, path: str) -> int:
  """Writes `model` as a Hugging Face directory; returns the bytes of its safetensors."""
  save_pretrained(model.module, model.variables, path)
  return sum(os.path.getsize(f) for f in glob.glob(os.path.join(path, "*.safetensors")))


def save_merged(merged: LoadedModel, path: str) -> int:
  """Writes the merged model as its exact duplicated form; returns the safetensors bytes."""
  return save(merged_lm.duplicate(merged), path)


def load_merged(path: str, dtype: str | None = None) -> LoadedModel:
  """A Hugging Face directory read back with each layer's identical experts stored once."""
  return merged_lm.deduplicate(load_model(path, dtype=dtype))


def logits(model: LoadedModel, tokens: np.ndarray) -> np.ndarray:
  """[B, S, V] float32 logits of `model` on tokens [B, S]."""
  return np.asarray(jax.jit(model.module.apply)(model.variables, jnp.asarray(tokens)),
                    np.float32)


def logit_gap(model: LoadedModel, reference: LoadedModel, tokens: np.ndarray) -> float:
  """max |logits(model) - logits(reference)| on tokens [B, S]."""
  return float(np.max(np.abs(logits(model, tokens) - logits(reference, tokens))))


def transformers_gap(model: LoadedModel, path: str, tokens: np.ndarray) -> float:
  """max |logits_transformers - logits_ours| on tokens [B, S] for the directory at `path`."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
  with torch.no_grad():
    theirs = hf(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.numpy()
  return float(np.max(np.abs(theirs - logits(model, tokens))))
