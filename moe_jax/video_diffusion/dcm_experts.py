"""DCM's two experts as parameter sets of one network, and the routing between them.

The semantic expert is the full student (initialised from the teacher). The detail expert shares its
frozen weights and adds (DCM code, `distill_dcm_*_detail_expert.py`): LoRA adapters on every
attention projection (`to_q`, `to_k`, `to_v`, `to_out`; paper r=128, alpha=256) and its own
trainable copies of the timestep embedder (`time_embed`) and of norm_out + proj_out (`final`),
initialised from the semantic expert. Optionally (`VideoDiT.lora_adaln`, our deviation for a
width-48 net, whose timestep reaches each block through a 48-dim embedding) the per-block adaLN
modulation layers carry LoRA adapters too. With zero adapters the detail expert equals the
semantic expert. The `full` form (the paper's two-full-experts comparison) is an unshared copy of
the whole network.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp
from flax import traverse_util

from moe_jax.video_diffusion.schedule import FlowSchedule

DETAIL_COPIES = ("time_embed", "final")
ATTENTIONS = ("space_attn", "time_attn")


def _flat(tree):
  return traverse_util.flatten_dict(tree)


def is_detail_trainable(path: tuple[str, ...]) -> bool:
  """True for LoRA factors and the detail expert's own embedder / output head."""
  return path[-1] in ("lora_a", "lora_b") or path[0] in DETAIL_COPIES


def init_detail_expert(lora_model: nn.Module, semantic_params, rng, x, s):
  """Returns (trainable, frozen) of the LoRA detail expert built on top of `semantic_params`.

  `lora_model` is the student architecture with lora_rank > 0; its fresh LoRA A factors are kept,
  its B factors are zero, and every other leaf (including the copies) is taken from the semantic
  expert.
  """
  fresh = _flat(lora_model.init(rng, x, s)["params"])
  sem = _flat(semantic_params)
  merged = {k: (sem[k] if k in sem else v) for k, v in fresh.items()}
  trainable = {k: v for k, v in merged.items() if is_detail_trainable(k)}
  frozen = {k: v for k, v in merged.items() if not is_detail_trainable(k)}
  return traverse_util.unflatten_dict(trainable), traverse_util.unflatten_dict(frozen)


def merge(frozen, trainable):
  """Joins the frozen and trainable halves of one expert back into a params tree."""
  return traverse_util.unflatten_dict({**_flat(frozen), **_flat(trainable)})


def expert_apply(model: nn.Module) -> Callable:
  """(trainable, frozen, x, s) -> v for experts of `model` whose weights are split in two halves.

  Build it once per architecture: jitted steps take it as a static argument and cache on it.
  """
  def apply(trainable, frozen, x, s, **kwargs):
    return model.apply({"params": merge(frozen, trainable)}, x, s, **kwargs)
  return apply


def dual_velocity(schedule: FlowSchedule, semantic: Callable, detail: Callable) -> Callable:
  """v(x, s) for one sampler step at scalar noise level s, routed by the phase split."""
  def velocity(x, s: float):
    fn = detail if schedule.is_detail(s) else semantic
    return fn(x, jnp.full((x.shape[0],), s, jnp.float32))
  return velocity


def layer_group(path: tuple[str, ...]) -> str:
  """The layer a parameter belongs to, shared across blocks: ("blocks_2", "time_attn", "to_q",
  "base", "kernel") -> "to_q"; ("time_embed", "Dense_0", "bias") -> "time_embed"."""
  return next(p for p in path if not p.startswith("blocks_") and p not in ATTENTIONS)


def weight_difference(reference, other) -> dict[str, float]:
  """||other - reference|| / ||reference|| per layer group, over the leaves `other` shares with
  `reference` (the paper's look at where two experts trained apart differ, which motivates what
  the detail expert owns)."""
  ref, oth = _flat(reference), _flat(other)
  sums: dict[str, list[float]] = {}
  for key in ref.keys() & oth.keys():
    acc = sums.setdefault(layer_group(key), [0.0, 0.0])
    acc[0] += float(jnp.sum((oth[key] - ref[key]) ** 2))
    acc[1] += float(jnp.sum(ref[key] ** 2))
  return {g: (d / r) ** 0.5 for g, (d, r) in sums.items()}
