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

Every failure to load names the file and the field or tensor (`_reading`): a missing or
malformed config.json or index, a truncated or missing shard, a tensor of another shape, an
integer tensor where float weights belong, and tensors the config does not use (a config.json
with fewer layers than the weights; only DeepSeek-V3's multi-token-prediction layers past
num_hidden_layers are skipped, being no part of the next-token model). `save_pretrained`
writes into a fresh folder beside `path` and swaps it in, so no shard or index of an earlier
save survives to shadow the new weights (the folder's other files, e.g. a tokenizer, are kept).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import uuid
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from moe_jax.convert import hf_config
from moe_jax.convert.hf_tensors import Tensor, tensor_map
from moe_jax.models.config import DTYPES, LMConfig
from moe_jax.models.lm import MoELM
from moe_jax.utils.errors import ConfigError, check_choice, one_line, require
from moe_jax.utils.trees import param_count

_IGNORED = re.compile(r".*rotary_emb\.inv_freq$")
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # safetensors' names of float weights
INDEX = "model.safetensors.index.json"
_WEIGHTS = re.compile(r"(.*\.(safetensors|bin|pt|pth|ckpt|h5|msgpack)|.*\.index\.json|"
                      r"config\.json)$")  # what save_pretrained replaces in a folder


@contextlib.contextmanager
def _reading(path: str, fix: str = "re-download or re-save the checkpoint"):
  """Any failure while reading `path` becomes one ConfigError that names the file."""
  try:
    yield
  except ConfigError as e:
    raise ConfigError(f"{path}: {e}") from None
  except FileNotFoundError:
    raise ConfigError(f"{path}: missing. Fix: {fix}") from None
  except json.JSONDecodeError as e:
    raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})."
                      f" Fix: {fix}") from None
  except (OSError, ValueError, TypeError, KeyError, SafetensorError) as e:
    raise ConfigError(f"{path}: cannot be read ({one_line(e)}). Fix: {fix}") from None


class Checkpoint:
  """The tensors of a local checkpoint directory: model.safetensors or a sharded index."""

  def __init__(self, path: str):
    self.path = path
    index = os.path.join(path, INDEX)
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(index):
      with _reading(index), open(index) as f:
        weight_map = json.load(f)
        require(isinstance(weight_map, dict) and isinstance(weight_map.get("weight_map"), dict),
                "weight_map", "is missing or not a mapping of tensor name -> file",
                "re-save the checkpoint")
        weight_map = weight_map["weight_map"]
    else:
      require(os.path.exists(single), path, f"has no model.safetensors or {INDEX}",
              "point at a Hugging Face model directory")
      with _reading(single), safe_open(single, "np") as f:
        weight_map = {name: "model.safetensors" for name in f.keys()}
    self._files = {}
    for file in sorted(set(weight_map.values())):
      full = os.path.join(path, file)
      names = [n for n, f in weight_map.items() if f == file]
      require(os.path.isfile(full), full, f"missing: {INDEX} names it for {len(names)} tensors "
              f"(first: {names[0]})", "download the missing shard or re-save the checkpoint")
      with _reading(full):
        self._files[file] = safe_open(full, "np")
    self.location = weight_map

  def has(self, name: str) -> bool:
    return name in self.location

  def file(self, name: str) -> str:
    return os.path.join(self.path, self.location[name])

  def shape(self, name: str) -> tuple[int, ...]:
    with _reading(self.file(name)):
      return tuple(self._files[self.location[name]].get_slice(name).get_shape())

  def read(self, name: str, dtype, expected: Optional[tuple[int, ...]] = None) -> np.ndarray:
    """The tensor `name` cast to `dtype`; ConfigError if it is missing, has another shape or
    holds no floating-point values."""
    require(self.has(name), f"{self.path}: {name}", "missing from the checkpoint",
            "check that config.json matches the weights (layers, experts, biases)")
    with _reading(self.file(name)):
      stored = self._files[self.location[name]].get_slice(name)
      require(stored.get_dtype() in FLOAT_DTYPES, name, f"holds {stored.get_dtype()} values "
              "where floating-point weights belong", "re-save the weights as float16, bfloat16 "
              "or float32 (quantised checkpoints are not supported)")
      if expected is not None:
        got = tuple(stored.get_shape())
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
    with _reading(ckpt.file(names[0])):
      require(value.shape == t.shape, names[0], f"gives shape {list(value.shape)} for {t.key}, "
              f"the config implies {list(t.shape)}", "check config.json against the weights")
    return value
  shapes = _hf_shapes(t)
  return t.to_ours([ckpt.read(n, dtype, s) for n, s in zip(t.names, shapes)])


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _hf_json(path: str) -> dict:
  """config.json of a local directory, its failures naming the file."""
  require(os.path.isdir(path), "path", f"{path} is not a directory",
          "point at a Hugging Face model directory (config.json + safetensors)")
  file = os.path.join(path, "config.json")
  with _reading(file, "point at a Hugging Face model directory (config.json + safetensors)"), \
      open(file) as f:
    hf = json.load(f)
  require(isinstance(hf, dict), file, f"holds a JSON {type(hf).__name__}, not an object",
          "restore the model's config.json")
  return hf


def _read_config(path: str, dtype: Optional[str]) -> tuple[LMConfig, str, dict]:
  if dtype is not None:
    check_choice("dtype", dtype, DTYPES)
  hf = _hf_json(path)
  with _reading(os.path.join(path, "config.json"), "correct config.json"):
    cfg, arch = hf_config.from_hf(hf)
    dtype = dtype or hf.get("dtype") or hf.get("torch_dtype") or "float32"
    check_choice("dtype", dtype, DTYPES)
  return dataclasses.replace(cfg, dtype=dtype, param_dtype=dtype), arch, hf


def read_config(path: str, dtype: Optional[str] = None) -> tuple[LMConfig, str]:
  """config.json of a local directory -> (LMConfig with dtype/param_dtype set, architecture)."""
  return _read_config(path, dtype)[:2]


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
  cfg, arch, hf = _read_config(path, dtype)
  if hf.get("quantization_config"):  # pack-quantized (hf_config refuses the rest): dequantized
    from moe_jax.quant.export import PackedCheckpoint  # pylint: disable=g-import-not-at-top
    ckpt = PackedCheckpoint(path, hf["quantization_config"])
  else:
    ckpt = Checkpoint(path)
  place = place or (lambda key, x: jnp.asarray(x))
  np_dtype = jnp.dtype(cfg.param_dtype)
  tensors = tensor_map(cfg, arch)
  variables: dict = {}
  used = set()
  for t in progress(tensors, total=len(tensors), desc="loading"):
    _set(variables, (t.collection,) + t.path, place(t.key, _read_variable(ckpt, t, np_dtype)))
    used.update(t.names if ckpt.has(t.names[0]) else t.fused[0])
  mtp = int(hf.get("num_nextn_predict_layers") or 0) if arch == "DeepseekV3ForCausalLM" else 0
  _check_unused(ckpt, used, cfg, mtp)
  return MoELM(cfg), variables


def _check_unused(ckpt: Checkpoint, used: set, cfg: LMConfig, mtp_layers: int = 0) -> None:
  """Weights the config does not account for mean a config/weights mismatch: refuse them.

  Skipped: RoPE buffers, a tied head's copy, and the `mtp_layers` layers right after
  num_hidden_layers (DeepSeek-V3's multi-token-prediction module, which is not part of the
  next-token model); any other layer past num_hidden_layers is refused."""
  def ignored(name):
    m = re.match(r"model\.layers\.(\d+)\.", name)
    return (_IGNORED.match(name) or
            (m and cfg.num_layers <= int(m.group(1)) < cfg.num_layers + mtp_layers) or
            (cfg.tie_embeddings and name == "lm_head.weight"))
  extra = sorted(n for n in ckpt.location if n not in used and not ignored(n))
  if extra:
    with _reading(ckpt.file(extra[0])):
      require(False, extra[0], f"{len(extra)} checkpoint tensors are not used by the config "
              f"(first: {extra[:3]})", "check config.json (num_hidden_layers, biases, q/k "
              "norms, shared experts) against the weights")


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

  `path` is written whole or not at all: the files go into a fresh folder beside it that then
  replaces it, keeping only the old folder's non-weight files (tokenizer, generation config).
  A file, or a non-empty folder that holds no Hugging Face checkpoint, is refused.
  """
  path = os.path.abspath(path)
  _check_target(path)
  if "params" not in variables:
    variables = {"params": variables}
  cfg, variables = untie_scaled_head(module.cfg, nn.unbox(variables))
  arch = architecture or hf_config.infer_architecture(cfg)
  dtype = dtype or cfg.param_dtype
  check_choice("dtype", dtype, DTYPES)
  hf = hf_config.to_hf(cfg, arch, dtype)
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
  tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"  # beside `path`: the swap is a rename
  os.makedirs(tmp)
  try:
    for name, shard in zip(names, shards):
      save_file(shard, os.path.join(tmp, name), metadata={"format": "pt"})
    if len(shards) > 1:
      total = sum(w.nbytes for s in shards for w in s.values())
      index = {"metadata": {"total_size": total},
               "weight_map": {n: f for f, s in zip(names, shards) for n in s}}
      with open(os.path.join(tmp, INDEX), "w") as f:
        json.dump(index, f, indent=2)
    with open(os.path.join(tmp, "config.json"), "w") as f:
      json.dump(hf, f, indent=2, sort_keys=True)
    _swap_in(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _check_target(path: str) -> None:
  """Refuses a save target that is a file, or a non-empty folder that is no HF checkpoint (it
  would be replaced: a mistyped path must not take a user's folder with it)."""
  require(not os.path.isfile(path), "path", f"{path} is a file",
          "save into a new folder, or the folder of an earlier save")
  if os.path.isdir(path) and os.listdir(path):
    require(os.path.isfile(os.path.join(path, "config.json")), "path", f"{path} is a non-empty "
            "folder that holds no Hugging Face checkpoint (no config.json)",
            "save into a new or empty folder, or the folder of an earlier save")


def _swap_in(tmp: str, path: str) -> None:
  """Moves the old folder's non-weight files into `tmp`, then puts `tmp` in place of `path`."""
  if not os.path.isdir(path):
    os.rename(tmp, path)
    return
  for name in os.listdir(path):
    if not _WEIGHTS.match(name):
      source = os.path.join(path, name)
      (shutil.copytree if os.path.isdir(source) else shutil.copy2)(source, os.path.join(tmp, name))
  old = f"{path}.old-{uuid.uuid4().hex[:8]}"
  os.rename(path, old)
  os.rename(tmp, path)
  shutil.rmtree(old)


def count_params(cfg: LMConfig) -> tuple[int, int]:
  """(total, active per token) parameter counts of MoELM(cfg) by jax.eval_shape (no memory)."""
  shapes = jax.eval_shape(MoELM(cfg).init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
  total = param_count(shapes["params"])
  return total, cfg.active_params(total)
