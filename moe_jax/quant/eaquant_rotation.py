"""The rotation EAQuant's W4A4 base builds on: an orthogonal Q folded into the residual stream.

Legend: V vocabulary, D model width, E experts, F hidden width, Q [D, D] orthogonal.

QuaRot (Ashkboos et al. 2024, Sec. 4; its offline rotation R1): with every RMSNorm's weight
folded into the linears that read its output (W <- diag(w) W, w <- 1), RMSNorm(x Q) =
RMSNorm(x) Q, so the model with
  embedding E <- E Q;  every linear reading the stream (q/k/v, latent q_a/kv_a, routers,
  experts' and FFNs' wi_gate/wi_up, the shared expert's gate, the head) W <- Q^T W;
  every linear writing it (o_proj and its bias, every FFN's wo) W <- W Q
computes the same function, while the residual stream and every activation read from it are
spread over all D channels (outlier channels removed), which is what 4-bit per-token activations
need. Q: a Sylvester Hadamard matrix / sqrt(D) where D is a power of two ("hadamard"), a random
orthogonal one (QR of a Gaussian, sign-fixed) otherwise or with "random"; "none" only folds the
norms. A tied head is untied first (logits = x (E^T / sqrt(D) if scaled)). LayerNorm models are
refused (its mean subtraction does not commute with Q).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import numpy as np
from flax import traverse_util

from moe_jax.models.loading import LoadedModel
from moe_jax.utils.errors import check_choice, require

ROTATIONS = ("hadamard", "random", "none")
ATTENTION_INPUTS = ("q_proj", "k_proj", "v_proj", "q_a_proj", "kv_a_proj")


def orthogonal(n: int, kind: str, seed: int = 0) -> np.ndarray:
  """Q [n, n] float64 with Q^T Q = I (module docstring); "none" gives I."""
  check_choice("rotation", kind, ROTATIONS)
  if kind == "none":
    return np.eye(n)
  if kind == "hadamard" and n & (n - 1) == 0:
    h = np.ones((1, 1))
    while h.shape[0] < n:
      h = np.block([[h, h], [h, -h]])
    return h / np.sqrt(n)
  q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
  return q * np.sign(np.diag(r))


def contract(w: np.ndarray, axis: int, q: np.ndarray) -> np.ndarray:
  """w with its axis `axis` (of size D) replaced by (that axis) @ q: W Q on an output axis,
  Q^T W on an input axis alike."""
  return np.moveaxis(np.tensordot(w, q, axes=([axis], [0])), -1, axis)


def readers(params: dict, layer: str) -> dict[str, list[tuple[str, int]]]:
  """{norm path: [(kernel path, axis of D), ...]}: the linears reading each norm's output."""
  flat = traverse_util.flatten_dict(params, sep="/")
  out = {f"{layer}/attn_norm/scale": [], f"{layer}/ffn_norm/scale": []}
  for path in flat:
    parts = path.split("/")
    if parts[0] != layer or parts[-1] != "kernel" and parts[-1] not in ("wi_gate", "wi_up"):
      continue
    if parts[1] == "attn" and parts[2] in ATTENTION_INPUTS:
      out[f"{layer}/attn_norm/scale"].append((path, 0))
    elif parts[1] == "moe" and parts[2] == "experts":
      out[f"{layer}/ffn_norm/scale"].append((path, 1))
    elif parts[1] in ("moe", "mlp") and (parts[-1] != "kernel" or "router" in parts or
                                         parts[-2] == "gate"):
      out[f"{layer}/ffn_norm/scale"].append((path, 0))
  return out


def writers(params: dict, layer: str) -> list[tuple[str, int]]:
  """[(path, axis of D)]: the kernels and biases adding to the residual stream."""
  flat = traverse_util.flatten_dict(params, sep="/")
  ends = ("attn/o_proj/kernel", "attn/o_proj/bias", "/wo")
  return [(p, -1) for p in flat if p.startswith(layer + "/") and p.endswith(ends)]


def untie(model: LoadedModel) -> LoadedModel:
  """A tied head as an explicit lm_head kernel [D, V] (the same logits)."""
  cfg = model.cfg
  if not cfg.tie_embeddings:
    return model
  require(not cfg.lm_head_bias, "model", "a tied head with a bias cannot be untied here",
          "rotate an untied checkpoint")
  params = dict(nn.unbox(model.variables)["params"])
  table = np.asarray(params["embed"]["embedding"], np.float64)
  head = table.T / (np.sqrt(cfg.d_model) if cfg.scale_tied_logits else 1.0)
  params["lm_head"] = {"kernel": head.astype(params["embed"]["embedding"].dtype)}
  module = model.module.clone(cfg=dataclasses.replace(cfg, tie_embeddings=False))
  return LoadedModel(module, {**nn.unbox(model.variables), "params": params}, model.source)


def rotate(model: LoadedModel, kind: str, seed: int = 0) -> LoadedModel:
  """The rotated model (module docstring): the same function, norms folded, stream rotated."""
  require(model.cfg.norm == "rmsnorm", "model", f"norm {model.cfg.norm!r} does not commute "
          "with a rotation (nor folds into the linears)", "quantize an RMSNorm model")
  model = untie(model)
  cfg = model.cfg
  variables = nn.unbox(model.variables)
  flat = {k: np.asarray(v) for k, v in
          traverse_util.flatten_dict(variables["params"], sep="/").items()}
  dtypes = {k: v.dtype for k, v in flat.items()}
  flat = {k: v.astype(np.float64) for k, v in flat.items()}
  q = orthogonal(cfg.d_model, kind, seed)
  norms = {"final_norm/scale": [("lm_head/kernel", 0)]}
  for i in range(cfg.num_layers):
    norms.update(readers(variables["params"], f"layer_{i}"))
  for norm, linears in norms.items():
    for path, axis in linears:
      shape = [1] * flat[path].ndim
      shape[axis] = -1
      flat[path] = flat[path] * flat[norm].reshape(shape)
      flat[path] = contract(flat[path], axis, q)
    flat[norm] = np.ones_like(flat[norm])
  flat["embed/embedding"] = contract(flat["embed/embedding"], 1, q)
  for i in range(cfg.num_layers):
    for path, axis in writers(variables["params"], f"layer_{i}"):
      flat[path] = contract(flat[path], axis, q)
  params = traverse_util.unflatten_dict({k: v.astype(dtypes[k]) for k, v in flat.items()},
                                        sep="/")
  return LoadedModel(model.module, {**variables, "params": params}, model.source)
