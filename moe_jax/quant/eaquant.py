"""EAQuant (arXiv 2506.13329): W4A4 / W3A4 post-training quantization of an MoE LM, a rotation
base and the paper's three expert-aware pieces.

Legend: N calibration windows, S tokens per window, T = N S, D model width, E experts, K experts
per token, L MoE layers.

`quantize(model, recipe, windows, more_windows)`:
  0. rotation (eaquant_rotation): RMSNorm weights folded, residual stream rotated by Q (exact);
  1. the rotated float model's FFN inputs y [T, D] and routing on the N windows (with `balance`,
     further passes of new windows until every expert has its target: eaquant_balance);
  2. `smooth`: per MoE layer the aggregated vector s folded (eaquant_smooth; exact);
  3. GPTQ of every linear (moe_jax.quant.apply: symmetric, per channel or group, MSE clip) on
     the calibration windows (with `balance`, plus the top-up windows);
  4. every router's kernel at act.router_bits: min-max, or with `align` the clip ratio whose
     top-k KL to the float routing is lowest (eaquant_router), layer after layer, each on the
     router inputs of the quantized model with the routers before it already set;
  5. the model runs as activation.ActQuantLM: every linear input at act.bits per token, the
     router's at act.router_bits.
The baseline (QuaRot-style rotation + GPTQ, per-token activations, min-max W8A8 router) is 0, 1,
3, 4, 5 with every piece off.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from moe_jax.models.loading import LoadedModel
from moe_jax.quant import activation, apply, calibrate, core
from moe_jax.quant import eaquant_balance as balance
from moe_jax.quant import eaquant_router as router
from moe_jax.quant import eaquant_smooth as smooth
from moe_jax.quant.eaquant_rotation import ROTATIONS, rotate
from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_choice, check_positive, require


@dataclasses.dataclass(frozen=True)
class EAQuantRecipe(Section):
  """w_bits, group_size (0: per channel): GPTQ's weights; act: activations and router input;
  rotation "hadamard" | "random" | "none" with seed; smooth with alpha and router_term (the
  router's own term in the max; the code's default `--fc1_scale_merge max` leaves it out);
  align with clip_low, clip_grid, mse_weight; balance with balance_ratio and max_passes;
  options: GPTQ's (moe_jax.quant.apply.QuantOptions)."""
  w_bits: int = 4
  group_size: int = 0
  act: activation.ActQuantConfig = activation.ActQuantConfig()
  rotation: str = "hadamard"
  seed: int = 0
  smooth: bool = False
  alpha: float = 0.6
  router_term: bool = True
  align: bool = False
  clip_low: float = 0.35
  clip_grid: int = 101
  mse_weight: float = 0.0
  balance: bool = False
  balance_ratio: float = 2.0
  max_passes: int = 2
  options: apply.QuantOptions = apply.QuantOptions()

  def __post_init__(self):
    check_choice("rotation", self.rotation, ROTATIONS)
    require(0 < self.alpha < 1, "alpha", f"must be in (0, 1), got {self.alpha}", "use 0.6")
    require(0 < self.clip_low <= 1, "clip_low", f"must be in (0, 1], got {self.clip_low}",
            "use 0.35")
    check_positive("clip_grid", self.clip_grid)
    check_positive("balance_ratio", self.balance_ratio)
    require(self.max_passes >= 0, "max_passes", f"must be >= 0, got {self.max_passes}",
            "use e.g. 2")
    require(not self.align or self.act.router_bits, "align", "searches the quantized "
            "router's clip, and act.router_bits=0 keeps the router in float",
            "set act.router_bits=8 or align=false")
    self.weights()

  def weights(self) -> apply.QuantRecipe:
    return apply.QuantRecipe(method="gptq", bits=self.w_bits, group_size=self.group_size,
                             options=self.options)


@dataclasses.dataclass(frozen=True)
class EAQuantModel:
  """model: the quantized LM run by ActQuantLM; report: calibration, smoothing, routers, GPTQ."""
  model: LoadedModel
  report: dict


def capture(model: LoadedModel, windows: np.ndarray, batch_size: int) -> dict:
  """{"layer_l": calibrate.FFNInputs} of every MoE layer of `model` on windows [N, S]."""
  variables, cfg = nn.unbox(model.variables), model.cfg
  x, out, moe = calibrate.embed(variables, cfg, windows), {}, set(cfg.moe_layer_ids())
  for i in range(cfg.num_layers):
    p = calibrate.run_block(calibrate.block_module(cfg, i), calibrate.layer_variables(
        variables, i), x, batch_size, ffn=i in moe)
    if i in moe:
      out[f"layer_{i}"] = p.ffn
    x = p.out
  return out


def _append(layers: dict, extra: dict, pick: list[int], seq_len: int) -> dict:
  """layers {name: (y, token, expert)} with the windows `pick` of a capture appended."""
  out = {}
  for name, (y, token, expert) in layers.items():
    f = extra[name]
    rows = (np.asarray(pick)[:, None] * seq_len + np.arange(seq_len)).reshape(-1)
    where = np.full(int(f.y.shape[0]) // seq_len, -1)
    where[pick] = np.arange(len(pick))
    keep = where[f.token // seq_len] >= 0
    new_token = where[f.token[keep] // seq_len] * seq_len + f.token[keep] % seq_len
    out[name] = (jnp.concatenate([y, f.y[rows]]), np.concatenate([token, new_token + y.shape[0]]),
                 np.concatenate([expert, f.expert[keep]]))
  return out


def calibration(model: LoadedModel, recipe: EAQuantRecipe, windows: np.ndarray,
                more_windows: Callable[[int], np.ndarray] | None, batch_size: int):
  """(GPTQ windows, {layer: (y [T', D], token, expert)} for smoothing, report) (steps 1, 3)."""
  layers = {n: (f.y, f.token, f.expert) for n, f in capture(model, windows, batch_size).items()}
  num_experts, seq_len = model.cfg.moe.num_experts, windows.shape[1]
  counts = lambda: np.stack([np.bincount(e, minlength=num_experts) for _, _, e in
                             layers.values()])
  report = {"windows": len(windows), "top_up_windows": 0, "passes": 0}
  if not recipe.balance:
    report["tokens_per_expert"] = counts().tolist()
    return windows, layers, report
  require(more_windows is not None, "more_windows", "balance needs further calibration passes",
          "pass a function giving the windows of pass p")
  limit = balance.target(model.cfg.moe.top_k, num_experts, seq_len, recipe.balance_ratio)
  chosen = [windows]
  for p in range(1, recipe.max_passes + 1):
    need = np.maximum(limit - counts(), 0)
    if not need.any():
      break
    extra = np.asarray(more_windows(p))
    found = capture(model, extra, batch_size)
    per_window = np.stack([balance.window_counts(found[n].token, found[n].expert, seq_len,
                                                 len(extra), num_experts) for n in layers], 1)
    pick = balance.select_windows(per_window, need)
    report["passes"] = p
    if pick:
      layers = _append(layers, found, pick, seq_len)
      chosen.append(extra[pick])
      report["top_up_windows"] += len(pick)
  for name, (y, token, expert) in layers.items():
    keep = balance.capped(expert, num_experts, limit)
    layers[name] = (y, token[keep], expert[keep])
  report.update(target=limit, tokens_per_expert=counts().tolist())
  return np.concatenate(chosen), layers, report


def smooth_model(model: LoadedModel, layers: dict, recipe: EAQuantRecipe) -> LoadedModel:
  """Step 2: every MoE layer's aggregated smoothing vector folded into `model`."""
  params = nn.unbox(model.variables)["params"]
  for name, (y, token, expert) in layers.items():
    terms = smooth.layer_terms(params[name]["moe"], y, token, expert, recipe.alpha,
                               recipe.router_term)
    params = smooth.fold(params, name, smooth.aggregate(terms))
  return LoadedModel(model.module, {**nn.unbox(model.variables), "params": params}, model.source)


def set_routers(quantized: LoadedModel, reference: LoadedModel, recipe: EAQuantRecipe,
                windows: np.ndarray, batch_size: int) -> tuple[LoadedModel, dict]:
  """Step 4: each router at act.router_bits, min-max or KL-aligned; report per layer: the clip
  ratio, and with `align` the calibration top-k KL and top-k agreement at it and at min-max."""
  bits, k = recipe.act.router_bits, quantized.cfg.moe.top_k
  params = nn.unbox(quantized.variables)["params"]
  report = {}
  if not bits:
    return activation.with_activations(quantized, recipe.act), report
  y_fp = activation.router_inputs(reference, windows, batch_size) if recipe.align else None
  for name in (f"layer_{i}" for i in quantized.cfg.moe_layer_ids()):
    gate = params[name]["moe"]["router"]["gate"]
    w = jnp.asarray(gate["kernel"], jnp.float32)
    ratio = 1.0
    if recipe.align:
      current = activation.with_activations(quantized, recipe.act,
                                            {**quantized.variables, "params": params})
      y_q = activation.router_inputs(current, windows, batch_size)[name]
      grid = jnp.asarray(router.ratios(recipe.clip_low, recipe.clip_grid), jnp.float32)
      best, losses = router.search(y_fp[name], y_q, w, k, bits, recipe.act.spec(bits, False),
                                   grid, recipe.mse_weight)
      ratio = float(best)
      z_fp = y_fp[name] @ w
      x_q = core.fake_quant_activations(y_q, recipe.act.spec(bits, False))
      agree = lambda r: float(router.topk_agreement(
          z_fp, x_q @ router.fake_quant_router(w, bits, r), k))
      report[name] = {"ratio": ratio, "kl": float(jnp.min(losses)), "kl_minmax": float(losses[0]),
                      "agreement": agree(ratio), "agreement_minmax": agree(1.0)}
    else:
      report[name] = {"ratio": ratio}
    gate = {**gate, "kernel": router.fake_quant_router(w, bits, ratio).astype(gate["kernel"].dtype)}
    params = {**params, name: {**params[name], "moe": {**params[name]["moe"], "router": {
        **params[name]["moe"]["router"], "gate": gate}}}}
  return activation.with_activations(quantized, recipe.act,
                                     {**nn.unbox(quantized.variables), "params": params}), report


def quantize(model: LoadedModel, recipe: EAQuantRecipe, windows: np.ndarray,
             more_windows: Callable[[int], np.ndarray] | None = None,
             batch_size: int = 16) -> EAQuantModel:
  """The pipeline of the module docstring on calibration windows [N, S]; `more_windows(p)` gives
  the windows of further pass p (needed with `balance`)."""
  start = time.perf_counter()
  windows = np.asarray(windows)
  require(windows.ndim == 2 and windows.size > 0, "windows", f"shape {windows.shape} is not "
          "[N, S]", "pass calibration windows [N, S]")
  rotated = rotate(model, recipe.rotation, recipe.seed)
  gptq_windows, report = windows, {"calibration": {"windows": len(windows)}}
  if recipe.smooth or recipe.balance:
    gptq_windows, layers, report["calibration"] = calibration(rotated, recipe, windows,
                                                              more_windows, batch_size)
    if recipe.smooth:
      rotated = smooth_model(rotated, layers, recipe)
  quantized = apply.quantize_model(rotated, recipe.weights(), gptq_windows)
  out, report["routers"] = set_routers(quantized.model, rotated, recipe, windows, batch_size)
  report.update(gptq_tokens_per_expert=quantized.report["tokens_per_expert"],
                rtn_fallback=quantized.report["rtn_fallback"],
                seconds=time.perf_counter() - start)
  return EAQuantModel(out, report)
