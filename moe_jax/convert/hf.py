"""Load and save Hugging Face MoE checkpoints (safetensors) as `MoELM` variables.

  module, variables = load_pretrained("/path/to/Mixtral-8x7B-v0.1", dtype="bfloat16")
  logits = module.apply(variables, token_ids)          # [batch, seq, vocab] float32
  save_pretrained(module, variables, "/path/out")      # transformers.AutoModelForCausalLM reads it

`variables` is {"params": ...} plus, for DeepSeek-V3, {"moe_bias": ...}: the routing
correction bias is state that training moves without gradients, kept outside the params as in
the rest of moe_jax.

Loading reads one variable at a time (`safe_open`, memory-mapped), casts each checkpoint tensor
to the target dtype as it is read, and hands the result to `place(key, array)`, which by
default copies it to the default device. Pass a `place` that calls
`jax.device_put(array, sharding_for(key))` (or `jax.make_array_from_callback`) to put each
tensor straight onto a mesh: host memory then peaks at about twice the largest variable (its
checkpoint pieces plus the assembled array: for Mixtral-8x7B one layer's stacked experts,
2 x 0.94 GB in bf16), never the whole model. Each host still reads whole variables; reading
only a host's own slices is left to the expert-parallel loader.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from moe_jax.convert import hf_config
from moe_jax.convert.hf_tensors import Tensor, tensor_map
from moe_jax.models.config import DTYPES, LMConfig
from moe_jax.models.lm import MoELM
from moe_jax.utils.errors import check_choice, require
from moe_jax.utils.trees import param_count

_IGNORED = re.compile(r".*rotary_emb\.inv_freq$")


class Checkpoint:
  """The tensors of a local checkpoint directory: model.safetensors or a sharded index."""

  def __init__(self, path: str):
    index = os.path.join(path, "model.safetensors.index.json")
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(index):
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
    else:
      require(os.path.exists(single), "path", f"{path} has no model.safetensors or "
              "model.safetensors.index.json", "point at a Hugging Face model directory")
      with safe_open(single, "np") as f:
        weight_map = {name: "model.safetensors" for name in f.keys()}
    self._files = {file: safe_open(os.path.join(path, file), "np")
                   for file in sorted(set(weight_map.values()))}
    self.location = weight_map

  def has(self, name: str) -> bool:
    return name in self.location

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._files[self.location[name]].get_slice(name).get_shape())

  def read(self, name: str, dtype, expected: Optional[tuple[int, ...]] = None) -> np.ndarray:
    """The tensor `name` cast to `dtype`; ConfigError if it is missing or has another shape."""
    require(self.has(name), name, "missing from the checkpoint",
            "check that config.json matches the weights (layers, experts, biases)")
    if expected is not None:
      got = self.shape(name)
      require(got == tuple(expected), name, f"has shape {list(got)}, the config implies "
              f"{list(expected)}", "check config.json against the weights")
    return self._files[self.location[name]].get_tensor(name).astype(dtype, copy=False)


def _hf_shapes(t: Tensor) -> list[tuple[int, ...]]:
  out = jax.eval_shape(t.to_hf, jax.ShapeDtypeStruct(t.shape, jnp.float32))
  return [tuple(o.shape) for o in out]


def _read_variable(ckpt: Checkpoint, t: Tensor, dtype) -> np.ndarray:
  if t.fused and not ckpt.has(t.names[0]) and all(ckpt.has(n) for n in t.fused[0]):
    names, to_ours = t.fused
    value = to_ours([ckpt.read(n, dtype) for n in names])
    require(value.shape == t.shape, names[0], f"gives shape {list(value.shape)} for {t.key}, "
            f"the config implies {list(t.shape)}", "check config.json against the weights")
    return value
  shapes = _hf_shapes(t)
  return t.to_ours([ckpt.read(n, dtype, s) for n, s in zip(t.names, shapes)])


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def read_config(path: str, dtype: Optional[str] = None) -> tuple[LMConfig, str]:
  """config.json of a local directory -> (LMConfig with dtype/param_dtype set, architecture)."""
  with open(os.path.join(path, "config.json")) as f:
    hf = json.load(f)
  cfg, arch = hf_config.from_hf(hf)
  dtype = dtype or hf.get("dtype") or hf.get("torch_dtype") or "float32"
  check_choice("dtype", dtype, DTYPES)
  return dataclasses.replace(cfg, dtype=dtype, param_dtype=dtype), arch


def load_pretrained(path: str, dtype: Optional[str] = None,
                    place: Optional[Callable[[str, np.ndarray], Any]] = None,
                    progress: Callable = lambda it, **_: it) -> tuple[MoELM, dict]:
  """Reads a local Hugging Face MoE checkpoint.

  Args:
    path: directory with config.json and model.safetensors (or a sharded index).
    dtype: parameter and compute dtype ("float32", "bfloat16", "float16"); default: the
      checkpoint's own dtype.
    place: place(key, array) -> array, called once per variable, e.g. to device_put it with
      its sharding; key is "params/layer_0/moe/experts/wi_gate". Default: jnp.asarray.
    progress: wraps the iteration over variables (e.g. moe_jax.utils.reporting.progress).

  Returns:
    (MoELM module, variables) with module.apply(variables, tokens) -> logits[B, S, V].
  """
  cfg, arch = read_config(path, dtype)
  ckpt = Checkpoint(path)
  place = place or (lambda key, x: jnp.asarray(x))
  np_dtype = jnp.dtype(cfg.param_dtype)
  tensors = tensor_map(cfg, arch)
  variables: dict = {}
  used = set()
  for t in progress(tensors, total=len(tensors), desc="loading"):
    _set(variables, (t.collection,) + t.path, place(t.key, _read_variable(ckpt, t, np_dtype)))
    used.update(t.names if ckpt.has(t.names[0]) else t.fused[0])
  _check_unused(ckpt, used, cfg)
  return MoELM(cfg), variables


def _check_unused(ckpt: Checkpoint, used: set, cfg: LMConfig) -> None:
  """Weights the config does not account for mean a config/weights mismatch: refuse them.

  Skipped: RoPE buffers, a tied head's copy, layers past num_hidden_layers (DeepSeek-V3's
  multi-token-prediction module, which is not part of the next-token model)."""
  def ignored(name):
    m = re.match(r"model\.layers\.(\d+)\.", name)
    return (_IGNORED.match(name) or (m and int(m.group(1)) >= cfg.num_layers) or
            (cfg.tie_embeddings and name == "lm_head.weight"))
  extra = sorted(n for n in ckpt.location if n not in used and not ignored(n))
  require(not extra, extra[0] if extra else "", f"{len(extra)} checkpoint tensors are not "
          f"used by the config (first: {extra[:3]})",
          "check config.json (biases, q/k norms, shared experts, layer count) against the weights")


def untie_scaled_head(cfg: LMConfig, variables: dict) -> tuple[LMConfig, dict]:
  """A tied head with scaled logits (this suite's training default: logits = x E^T / sqrt(D))
  as the equivalent untied head lm_head = E^T / sqrt(D), which every HF family expresses.

  Other configs come back unchanged.
  """
  if not (cfg.tie_embeddings and cfg.scale_tied_logits):
    return cfg, variables
  params = dict(variables["params"])
  embedding = jnp.asarray(params["embed"]["embedding"], jnp.float32)
  dtype = params["embed"]["embedding"].dtype
  head = {"kernel": (embedding.T / np.sqrt(cfg.d_model)).astype(dtype)}
  if cfg.lm_head_bias:
    head["bias"] = params.pop("lm_head_bias")
  params["lm_head"] = head
  untied = dataclasses.replace(cfg, tie_embeddings=False, scale_tied_logits=False)
  return untied, {**variables, "params": params}


def save_pretrained(module: MoELM, variables: dict, path: str,
                    architecture: Optional[str] = None, dtype: Optional[str] = None,
                    max_shard_bytes: int = 5 * 2**30) -> None:
  """Writes config.json and safetensors (sharded above `max_shard_bytes`) for transformers.

  Args:
    module: the MoELM whose config describes `variables` (after a compression that changed the
      number or width of experts, pass a module whose config has the new moe.num_experts /
      moe.d_ff). A tied head with scaled logits is written as its exact untied equivalent
      (`untie_scaled_head`).
    variables: {"params": ...[, "moe_bias": ...]} or the bare params.
    architecture: e.g. "MixtralForCausalLM"; default inferred from the config's layout.
    dtype: dtype of the written tensors; default the config's param_dtype.
  """
  if "params" not in variables:
    variables = {"params": variables}
  cfg, variables = untie_scaled_head(module.cfg, nn.unbox(variables))
  arch = architecture or hf_config.infer_architecture(cfg)
  dtype = dtype or cfg.param_dtype
  check_choice("dtype", dtype, DTYPES)
  hf = hf_config.to_hf(cfg, arch, dtype)
  os.makedirs(path, exist_ok=True)
  shards, current, size = [], {}, 0
  for t in tensor_map(cfg, arch):
    value = variables
    for key in (t.collection,) + t.path:
      require(isinstance(value, dict) and key in value, t.key, "missing from the variables",
              "pass the variables of this module (module.init or load_pretrained)")
      value = value[key]
    require(tuple(value.shape) == t.shape, t.key, f"has shape {list(value.shape)}, the config "
            f"implies {list(t.shape)}", "save with a module whose config matches the params")
    for name, w in zip(t.names, t.to_hf(np.asarray(value).astype(jnp.dtype(dtype)))):
      if current and size + w.nbytes > max_shard_bytes:
        shards.append(current)
        current, size = {}, 0
      current[name] = np.ascontiguousarray(w)
      size += w.nbytes
  shards.append(current)
  names = (["model.safetensors"] if len(shards) == 1 else
           [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
  for name, shard in zip(names, shards):
    save_file(shard, os.path.join(path, name), metadata={"format": "pt"})
  if len(shards) > 1:
    total = sum(w.nbytes for s in shards for w in s.values())
    index = {"metadata": {"total_size": total},
             "weight_map": {n: f for f, s in zip(names, shards) for n in s}}
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
      json.dump(index, f, indent=2)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(hf, f, indent=2, sort_keys=True)


def count_params(cfg: LMConfig) -> tuple[int, int]:
  """(total, active per token) parameter counts of MoELM(cfg) by jax.eval_shape (no memory)."""
  shapes = jax.eval_shape(MoELM(cfg).init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
  total = param_count(shapes["params"])
  return total, cfg.active_params(total)
