"""MC-SMoE's edits of a whole MoE LM: align, merge, drop, and the slot-duplicated form.

Legend: L MoE layers (LMConfig.moe_layer_ids(), counted from 0 here), E experts of the
original layers (= the router's slots), k_l groups of layer l, G = max_l k_l experts stored
per merged layer, D model width.

Each function takes a LoadedModel and returns a new one (the input is left as it was; the
`source` is kept, so evaluation still finds the model's tokenizer):
  align(model):       every layer's experts weight-matched to its expert `reference`
                      (alignment.py): the same function, hidden units reordered.
  merge(model, groupings, freqs): layer l's groups merged (merging.py; frequency-weighted, or
                      uniform without freqs) into the first k_l of G stored experts
                      (with_slot_maps); the router is unchanged and the slot map goes into the
                      'slots' collection (moe_jax/layers/moe.py). Experts k_l..G-1 of a layer
                      stay zero and unreferenced: one MoEConfig holds one expert count for
                      every layer.
  drop(model, kept):  layer l keeps the experts kept[l] (the same number in every layer, for
                      the same reason) and their router columns: the other columns are removed,
                      so top-k runs over the kept experts only (the repo's drop baseline masks
                      their logits, the same selection).
  duplicate(model):   a merged model with each slot's merged expert copied back: E experts and
                      no slot map, the same function, in the layout a Hugging Face config holds.
  deduplicate(model): the inverse: each layer's bitwise-identical experts stored once, its
                      slots pointing at them (a duplicated model read back from a Hugging Face
                      directory is the merged model again, with its memory saving).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from moe_jax.compress.mcsmoe import alignment, merging
from moe_jax.compress.mcsmoe.grouping import Grouping
from moe_jax.layers.moe import SLOTS
from moe_jax.models.lm import MoELM
from moe_jax.models.loading import LoadedModel
from moe_jax.utils.errors import require


def _moe(tree: dict, layer: int) -> dict:
  return tree[f"layer_{layer}"]["moe"]


def replaced(tree: dict, path: tuple[str, ...], value) -> dict:
  """A copy of the nested dict `tree` with tree[path] = value (the rest shared)."""
  if not path:
    return value
  return {**tree, path[0]: replaced(tree.get(path[0], {}), path[1:], value)}


def experts(model: LoadedModel, layer: int) -> dict[str, np.ndarray]:
  """The stacked expert weights {wi_gate?, wi_up, wo} [E, ...] of model layer `layer`."""
  return {k: np.asarray(v) for k, v in
          _moe(nn.unbox(model.variables["params"]), layer)["experts"].items()}


def _rebuilt(model: LoadedModel, variables: dict, **moe_fields) -> LoadedModel:
  cfg = dataclasses.replace(model.cfg, moe=dataclasses.replace(model.cfg.moe, **moe_fields))
  return LoadedModel(MoELM(cfg), variables, model.source)


def _check_plain(model: LoadedModel) -> None:
  require(not model.cfg.moe.num_slots, "model", "is already merged (it has a slot map)",
          "start from the original model")
  require(bool(model.cfg.moe_layer_ids()), "model", "has no MoE layer", "give an MoE model")


def align(model: LoadedModel, reference: int = 0) -> LoadedModel:
  """Every MoE layer's experts weight-matched to expert `reference`; the same function."""
  _check_plain(model)
  variables = nn.unbox(model.variables)
  for i in model.cfg.moe_layer_ids():
    aligned, _ = alignment.align_experts(experts(model, i), reference)
    variables = replaced(variables, ("params", f"layer_{i}", "moe", "experts"),
                      {k: jnp.asarray(v) for k, v in aligned.items()})
  return LoadedModel(model.module, variables, model.source)


def merge(model: LoadedModel, groupings: Sequence[Grouping], freqs=None) -> LoadedModel:
  """Each layer's groups merged into one expert each; the router unchanged (module doc).

  Args:
    model: the original (e.g. aligned) model.
    groupings: one Grouping per MoE layer (every slot in a group).
    freqs: [L, E] usage frequencies for frequency-weighted merging; None merges uniformly.
  """
  _check_plain(model)
  layers = model.cfg.moe_layer_ids()
  require(len(groupings) == len(layers), "groupings", f"needs one per MoE layer ({len(layers)}),"
          f" got {len(groupings)}", "group every MoE layer")
  stored, maps = [], []
  for l, (i, grouping) in enumerate(zip(layers, groupings)):
    require(grouping.slot_to_group.min() >= 0, "groupings", f"layer {i} drops slots",
            "merge with groups that cover every slot (drop() removes experts)")
    merged, slot_map = merging.merge_experts(experts(model, i), grouping.slot_to_group,
                                             None if freqs is None else freqs[l])
    stored.append(merged)
    maps.append(slot_map)
  return with_slot_maps(model, stored, maps)


def with_slot_maps(model: LoadedModel, stored: Sequence[dict], maps: Sequence) -> LoadedModel:
  """The merged model: MoE layer l stores the experts stored[l] ({name: [k_l, ...]}, zero-padded
  to G = max k_l) and routes its E slots by maps[l] [E] (the router unchanged)."""
  count = max(len(w["wo"]) for w in stored)
  variables, slots = nn.unbox(model.variables), {}
  for i, weights, slot_map in zip(model.cfg.moe_layer_ids(), stored, maps):
    padded = {k: jnp.asarray(np.concatenate(
        [w, np.zeros((count - len(w),) + w.shape[1:], w.dtype)])) for k, w in weights.items()}
    variables = replaced(variables, ("params", f"layer_{i}", "moe", "experts"), padded)
    slots[f"layer_{i}"] = {"moe": {"slot_to_expert": jnp.asarray(slot_map, jnp.int32)}}
  return _rebuilt(model, {**variables, SLOTS: slots}, num_experts=count,
                  num_slots=model.cfg.moe.num_experts, dispatch="dropless")


def slot_maps(model: LoadedModel) -> list[np.ndarray]:
  """Each MoE layer's slot map [E] of a merged model."""
  require(bool(model.cfg.moe.num_slots), "model", "has no slot map", "merge it first")
  return [np.asarray(_moe(model.variables[SLOTS], i)["slot_to_expert"])
          for i in model.cfg.moe_layer_ids()]


def drop(model: LoadedModel, kept: Sequence[np.ndarray]) -> LoadedModel:
  """Layer l keeps experts kept[l] and their router columns (and routing bias), in that order."""
  _check_plain(model)
  layers = model.cfg.moe_layer_ids()
  counts = {len(k) for k in kept}
  require(len(kept) == len(layers) and len(counts) == 1, "kept", f"needs the same number of "
          f"experts for each of the {len(layers)} MoE layers, got {[len(k) for k in kept]}",
          "keep k experts in every layer")
  count = counts.pop()
  require(count >= model.cfg.moe.top_k, "kept", f"{count} experts cannot serve top-"
          f"{model.cfg.moe.top_k} routing", f"keep at least {model.cfg.moe.top_k} per layer")
  variables = nn.unbox(model.variables)
  for i, ids in zip(layers, kept):
    ids = np.asarray(ids)
    moe = _moe(variables["params"], i)
    variables = replaced(variables, ("params", f"layer_{i}", "moe", "experts"),
                      {k: v[ids] for k, v in moe["experts"].items()})
    variables = replaced(variables, ("params", f"layer_{i}", "moe", "router", "gate", "kernel"),
                      moe["router"]["gate"]["kernel"][:, ids])
    if "moe_bias" in variables:
      path = ("moe_bias", f"layer_{i}", "moe", "router", "e_score_correction_bias")
      variables = replaced(variables, path, _moe(variables["moe_bias"], i)["router"][path[-1]][ids])
  return _rebuilt(model, variables, num_experts=count)


def duplicate(model: LoadedModel) -> LoadedModel:
  """A merged model as E experts (each slot's merged expert copied), no slot map: equal."""
  variables = {k: v for k, v in nn.unbox(model.variables).items() if k != SLOTS}
  for i, slot_map in zip(model.cfg.moe_layer_ids(), slot_maps(model)):
    copies = merging.duplicate_to_slots(experts(model, i), slot_map)
    variables = replaced(variables, ("params", f"layer_{i}", "moe", "experts"),
                      {k: jnp.asarray(v) for k, v in copies.items()})
  return _rebuilt(model, variables, num_experts=model.cfg.moe.num_slots, num_slots=0)


def _distinct_experts(weights: dict[str, np.ndarray]) -> np.ndarray:
  """[E] index of each expert's first bitwise-identical copy among weights[name][E, ...]."""
  e = len(next(iter(weights.values())))
  flat = np.concatenate([np.ascontiguousarray(w).reshape(e, -1).view(np.uint8)
                         for w in weights.values()], axis=-1)
  _, first, inverse = np.unique(flat, axis=0, return_index=True, return_inverse=True)
  return first[inverse.reshape(-1)]


def deduplicate(model: LoadedModel) -> LoadedModel:
  """Identical experts of each layer stored once (in the order of their first slot), the slots
  pointing at them: the same function."""
  _check_plain(model)
  stored, maps = [], []
  for i in model.cfg.moe_layer_ids():
    weights = experts(model, i)
    first = _distinct_experts(weights)
    ids = np.unique(first)  # each distinct expert's first slot, ascending
    stored.append({k: w[ids] for k, w in weights.items()})
    maps.append(np.searchsorted(ids, first))
  return with_slot_maps(model, stored, maps)
