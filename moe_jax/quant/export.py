"""A weight-only quantized LM as a Hugging Face directory in compressed-tensors' "pack-quantized"
format (what llm-compressor writes and transformers + compressed-tensors and vLLM read), and back.

Legend: O output rows and I input width of a linear (torch's weight [O, I]), G = I / g groups,
P = 32 / b values per int32 word.

Every quantized linear `P` (`moe_jax.quant.apply`: attention, dense FFNs, routed and shared
experts) is stored as
  P.weight_packed  int32 [O, I / P]   the integers q, packed (`moe_jax.quant.pack`),
  P.weight_scale   [O, G]             in the model dtype (one column per channel: G = 1),
  P.weight_shape   int64 [2]          [O, I],
and config.json gets a `quantization_config` (`format: pack-quantized`, one config group with the
recipe's bits, strategy "channel" or "group", symmetric) whose `ignore` list holds what stays in
float: lm_head, the routers' gates and the shared experts' sigmoid gates. Everything else (the
embedding, norms, biases, gates) is written as `save_pretrained` writes it, Mixtral's and
PhiMoE's experts under the Hub's w1/w3/w2 names (transformers leaves gate/up/down_proj-named
Mixtral experts random). Refused, with the fix: zero points (transformers does not load
asymmetric expert weights), widths other than 2, 4 and 8 bits (compressed-tensors packs the others
across word boundaries), an input width that is not a multiple of P.

`load_pretrained` (and so `load_model`) reads such a directory back into moe_jax through
`PackedCheckpoint`: each packed weight dequantized, w = scale * q, in the requested dtype; in
float32 it is the fake-quantized model `save_quantized` was given.
"""
from __future__ import annotations

import json
import os
import re

import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file, save_file

from moe_jax.convert import hf_config
from moe_jax.convert.hf import INDEX, Checkpoint, save_pretrained
from moe_jax.convert.hf_tensors import tensor_map
from moe_jax.quant import core, pack
from moe_jax.quant.apply import QuantizedModel, QuantRecipe
from moe_jax.utils.errors import require

PARTS = ("weight_packed", "weight_scale", "weight_shape")
HUB_EXPERTS = {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}
# Linear modules kept in float, as transformers names them in memory (Mixtral's and PhiMoE's
# routers live at mlp.gate / mlp.router there, whatever the checkpoint calls them).
IGNORE = ("lm_head", r"re:.*mlp\.gate$", r"re:.*block_sparse_moe\.gate$", r"re:.*mlp\.router$",
          r"re:.*shared_expert_gate$")


def quantization_config(recipe: QuantRecipe) -> dict:
  """The config.json entry of a recipe's weights (compressed-tensors' QuantizationConfig)."""
  g = recipe.group_size or None
  weights = {"num_bits": recipe.bits, "type": "int", "symmetric": True,
             "strategy": "group" if g else "channel", "group_size": g, "dynamic": False,
             "actorder": None, "observer": "minmax", "observer_kwargs": {},
             "block_structure": None}
  return {"quant_method": "compressed-tensors", "format": "pack-quantized",
          "quantization_status": "compressed", "global_compression_ratio": None,
          "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights,
                                        "input_activations": None, "output_activations": None,
                                        "format": "pack-quantized"}},
          "ignore": list(IGNORE), "kv_cache_scheme": None, "sparsity_config": {}}


def _check(qm: QuantizedModel) -> QuantRecipe:
  recipe = QuantRecipe.from_dict(qm.report["recipe"])
  require(recipe.bits in pack.PACK_BITS, "bits", f"{recipe.bits}-bit weights are packed across "
          "int32 words by compressed-tensors, which is not written here",
          f"export {', '.join(map(str, pack.PACK_BITS))}-bit models")
  require(recipe.options.symmetric and not any(np.any(l.zero) for l in qm.linears.values()),
          "quant.symmetric", "zero points: transformers does not load asymmetric expert weights "
          "of a pack-quantized checkpoint", "quantize with symmetric=true to export")
  per_word = 32 // recipe.bits
  for name, lin in qm.linears.items():
    require(lin.q.shape[-1] % per_word == 0, name, f"input width {lin.q.shape[-1]} is not a "
            f"multiple of {per_word} {recipe.bits}-bit values per int32 word",
            f"export a model whose linear widths are multiples of {per_word}")
  return recipe


def _packed(qm: QuantizedModel, bits: int, arch: str, dtype: str) -> dict:
  """HF weight name -> {part: array} of every quantized linear."""
  out = {}
  for t in tensor_map(qm.model.cfg, arch):
    lin = qm.linears.get("/".join(t.path)) if t.collection == "params" else None
    if lin is None:
      continue
    q, scale = (lin.q, lin.scale) if lin.stacked else (lin.q[None], lin.scale[None])
    for name, qe, se in zip(t.names, q, scale):
      out[name] = {"weight_packed": np.asarray(pack.pack(jnp.asarray(qe), bits)),
                   "weight_scale": np.asarray(se).astype(jnp.dtype(dtype)),
                   "weight_shape": np.asarray(qe.shape, np.int64)}
  return out


def save_quantized(qm: QuantizedModel, path: str, architecture: str | None = None,
                   dtype: str | None = None, max_shard_bytes: int = 5 * 2**30) -> None:
  """Writes `qm` (from `apply.quantize_model`) to `path` as a pack-quantized HF directory.

  architecture, dtype, max_shard_bytes: as `save_pretrained` takes them (default: inferred,
  the param dtype; shards are cut from the float weights, then each is packed).
  """
  recipe = _check(qm)
  cfg = qm.model.cfg
  arch = architecture or hf_config.infer_architecture(cfg)
  dtype = dtype or cfg.param_dtype
  save_pretrained(qm.model.module, qm.model.variables, path, arch, dtype, max_shard_bytes)
  packed = _packed(qm, recipe.bits, arch, dtype)
  index_path = os.path.join(path, INDEX)
  index = None
  if os.path.exists(index_path):
    with open(index_path) as f:
      index = json.load(f)
  files = sorted(set(index["weight_map"].values())) if index else ["model.safetensors"]
  weight_map, total = {}, 0
  for file in files:
    tensors = load_file(os.path.join(path, file))
    for name in [n for n in tensors if n in packed]:
      require(tuple(tensors.pop(name).shape) == tuple(packed[name]["weight_shape"]), name,
              "the saved weight's shape differs from its integers'", "report this as a bug")
      prefix = name[:-len("weight")]
      tensors.update({prefix + part: a for part, a in packed[name].items()})
    weight_map.update(dict.fromkeys(tensors, file))
    total += sum(a.nbytes for a in tensors.values())
    tmp = os.path.join(path, file + ".tmp")
    save_file(tensors, tmp, metadata={"format": "pt"})
    os.replace(tmp, os.path.join(path, file))
  if index:
    index.update(weight_map=weight_map, metadata={**index.get("metadata", {}), "total_size": total})
    with open(index_path, "w") as f:
      json.dump(index, f, indent=2)
  with open(os.path.join(path, "config.json")) as f:
    config = json.load(f)
  config["quantization_config"] = quantization_config(recipe)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f, indent=2, sort_keys=True)


def _weight_name(prefix: str) -> str:
  """The float weight a packed "P." stands for: P.weight, but Mixtral's experts, which
  llm-compressor names gate/up/down_proj, as the w1/w3/w2 of the Hub's layout."""
  m = re.match(r"(.*\.block_sparse_moe\.experts\.\d+\.)(gate_proj|up_proj|down_proj)\.$", prefix)
  return (m.group(1) + HUB_EXPERTS[m.group(2)] if m else prefix[:-1]) + ".weight"


class PackedCheckpoint(Checkpoint):
  """A pack-quantized checkpoint seen as a float one: `P.weight` is w = scale * q from
  P.weight_packed, P.weight_scale and P.weight_shape; `config` is its quantization_config
  (ours or llm-compressor's: symmetric integer weights of one bit width)."""

  def __init__(self, path: str, config: dict):
    groups = [g.get("weights") or {} for g in (config.get("config_groups") or {}).values()]
    bits = {g.get("num_bits") for g in groups}
    require(len(bits) == 1 and bits <= set(pack.PACK_BITS) and all(
        g.get("symmetric") and g.get("type") == "int" for g in groups),
        f"{path}/config.json: quantization_config", "only symmetric integer weights of one bit "
        f"width ({', '.join(map(str, pack.PACK_BITS))}) are read", "dequantise it first")
    super().__init__(path)
    self.bits = bits.pop()
    self.raw = self.location
    self.packed = {_weight_name(n[:-len("weight_packed")]): n[:-len("weight_packed")]
                   for n in self.raw if n.endswith(".weight_packed")}  # P.weight -> "P."
    self.location = {n: f for n, f in self.raw.items() if not n.endswith(PARTS)}
    self.location.update({w: self.raw[p + "weight_packed"] for w, p in self.packed.items()})

  def _raw(self, name: str) -> np.ndarray:
    require(name in self.raw, f"{self.path}: {name}", "missing from the checkpoint",
            "re-export the model")
    return self._files[self.raw[name]].get_tensor(name)

  def shape(self, name: str) -> tuple[int, ...]:
    if name not in self.packed:
      return super().shape(name)
    return tuple(int(s) for s in self._raw(self.packed[name] + "weight_shape"))

  def read(self, name: str, dtype, expected=None) -> np.ndarray:
    if name not in self.packed:
      return super().read(name, dtype, expected)
    prefix = self.packed[name]
    q = pack.unpack(jnp.asarray(self._raw(prefix + "weight_packed")), self.bits)
    scale = jnp.asarray(self._raw(prefix + "weight_scale").astype(np.float32))
    shape = self.shape(name)
    require(tuple(q.shape) == shape and (expected is None or shape == tuple(expected)), name,
            f"unpacks to {list(q.shape)} (weight_shape {list(shape)}), the config implies "
            f"{list(expected or shape)}", "check config.json against the weights")
    return np.asarray(core.dequantize(q, scale, jnp.zeros(scale.shape, jnp.int8))).astype(dtype)
