"""Times the MoE layer per dispatch next to a dense SwiGLU chain and transformers' MoE blocks.

  python -m benchmarks.moe_layer [--tokens=4096] [--reps=5] [--workdir=DIR]

For each shape (Mixtral-like: D=512, F=1024, E=8, K=2; OLMoE-like: D=512, F=256, E=64, K=8),
float32, T tokens, forward and forward+backward (gradients w.r.t. x and every weight):
  moe_jax dispatches: dropless with the "tiled" and "ragged_dot" grouped matmuls, capacity
    (factor 1.25) and dense (GShard one-hot, factor 1.25);
  dense chain: x[T*K, D] through SwiGLU weights [D, F], [D, F], [F, D], the same useful FLOPs as
    the MoE layer with no routing at all: the practical limit of this machine;
  transformers: MixtralSparseMoeBlock / OlmoeSparseMoeBlock on torch CPU with the same weights
    copied in (outputs checked against ours first), with its "eager" (loop over experts) and
    "grouped_mm" (the default inside a model) expert implementations, each on 1 and on all
    torch threads (torch.set_num_threads): on a CPU shared with other jobs, OpenMP with all
    threads can run several times slower than with one, and the reference is the fastest.
Useful FLOPs = 2 * T * K * 3 * D * F forward (x3 for forward+backward); router FLOPs excluded.
Repetitions are interleaved (every implementation runs once per round) because other processes
share the CPU; each ratio is the median over rounds of the per-round ratio. Implementations
over 8x slower than the dense chain (ragged_dot on CPU) run only `--slow_reps` rounds.
The last line is `moe_layer: vs_transformers=<r>x vs_dense=<r>`: forward, the default dispatch,
the worse of the two shapes (vs_transformers: the faster transformers implementation's time /
ours; vs_dense: the dense chain's time / ours). Other processes on the machine change every
number here; the spread (min-max) is part of the result.
"""
from __future__ import annotations

import os
import time

from absl import app
from absl import flags
from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.layers import dispatch as dispatch_lib
from moe_jax.layers import grouped_matmul
from moe_jax.layers.moe import MoE, MoEConfig
from moe_jax.utils.reporting import markdown_table, progress, write_results

SHAPES = {
    # name: (d_model, d_ff, experts, top_k, renormalise top-k weights, transformers block)
    "mixtral": (512, 1024, 8, 2, True, "mixtral"),
    "olmoe": (512, 256, 64, 8, False, "olmoe"),
}
JAX_IMPLS = {
    # name: MoE fields
    "dropless/tiled": dict(dispatch="dropless", gmm_impl="tiled"),
    "dropless/ragged_dot": dict(dispatch="dropless", gmm_impl="ragged_dot"),
    "capacity/1.25": dict(dispatch="capacity", capacity_factor=1.25),
    "dense/1.25": dict(dispatch="dense", capacity_factor=1.25),
}
TORCH_IMPLS = ("eager", "grouped_mm")


def default_impl() -> str:
  """The JAX_IMPLS key that MoE(dispatch='auto', gmm_impl='auto') runs on this backend."""
  name = dispatch_lib.default_dispatch()
  if name == "dropless":
    return f"dropless/{grouped_matmul.default_impl()}"
  return f"{name}/1.25"


def _jax_fns(d, f, e, k, normalize, fields, x, cotangent, seed):
  """(params, forward(params, x), forward+backward(params, x)), compiled, for one MoE config."""
  layer = MoE(MoEConfig(num_experts=e, top_k=k, d_ff=f, normalize_topk=normalize, **fields))
  params = nn.unbox(layer.init(jax.random.key(seed), x[:, :8])["params"])
  forward = lambda p, x: layer.apply({"params": p}, x)

  def forward_backward(p, x):
    _, vjp = jax.vjp(forward, p, x)
    return vjp(cotangent)

  compile_ = lambda fn: jax.jit(fn).lower(params, x).compile()
  return params, compile_(forward), compile_(forward_backward)


def _dense_fns(d, f, x, seed):
  """The dense SwiGLU chain on x[rows, D]: forward and forward+backward, compiled."""
  keys = jax.random.split(jax.random.key(seed), 3)
  w = (jax.random.normal(keys[0], (d, f)) * d ** -0.5, jax.random.normal(keys[1], (d, f)) *
       d ** -0.5, jax.random.normal(keys[2], (f, d)) * f ** -0.5)

  def forward(w, x):
    return (jax.nn.silu(x @ w[0]) * (x @ w[1])) @ w[2]

  def forward_backward(w, x):
    y, vjp = jax.vjp(forward, w, x)
    return vjp(jnp.ones_like(y))

  compile_ = lambda fn: jax.jit(fn).lower(w, x).compile()
  return w, compile_(forward), compile_(forward_backward)


def _torch_block(kind, d, f, e, k, params, impl):
  """transformers' sparse MoE block with our weights copied in."""
  import torch  # pylint: disable=g-import-not-at-top
  if kind == "mixtral":
    from transformers import MixtralConfig  # pylint: disable=g-import-not-at-top
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
    config = MixtralConfig(hidden_size=d, intermediate_size=f, num_local_experts=e,
                           num_experts_per_tok=k)
    block_cls = MixtralSparseMoeBlock
  else:
    from transformers import OlmoeConfig  # pylint: disable=g-import-not-at-top
    from transformers.models.olmoe.modeling_olmoe import OlmoeSparseMoeBlock
    config = OlmoeConfig(hidden_size=d, intermediate_size=f, num_experts=e,
                         num_experts_per_tok=k, norm_topk_prob=False)
    block_cls = OlmoeSparseMoeBlock
  config._experts_implementation = impl  # pylint: disable=protected-access
  block = block_cls(config)
  ex = {n: np.asarray(v) for n, v in params["experts"].items()}
  t = lambda a: torch.tensor(np.ascontiguousarray(a))
  with torch.no_grad():
    block.gate.weight.copy_(t(np.asarray(params["router"]["gate"]["kernel"]).T))
    block.experts.gate_up_proj.copy_(t(np.concatenate(
        [ex["wi_gate"].transpose(0, 2, 1), ex["wi_up"].transpose(0, 2, 1)], axis=1)))
    block.experts.down_proj.copy_(t(ex["wo"].transpose(0, 2, 1)))
  return block


def _torch_fns(block, x_np, cotangent_np, threads):
  """Forward (inference) and forward+backward thunks running on `threads` torch threads."""
  import torch  # pylint: disable=g-import-not-at-top
  x = torch.tensor(x_np)
  cot = torch.tensor(cotangent_np)

  def forward():
    torch.set_num_threads(threads)
    with torch.no_grad():
      return block(x)

  def forward_backward():
    torch.set_num_threads(threads)
    xg = x.clone().requires_grad_(True)
    block.zero_grad(set_to_none=True)
    (block(xg) * cot).sum().backward()
    return xg.grad

  return forward, forward_backward


def _timed(fn):
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def _temp_gb(compiled) -> float:
  return compiled.memory_analysis().temp_size_in_bytes / 1e9


def run(tokens: int = 4096, reps: int = 5, slow_reps: int = 1, shapes=None, jax_impls=None,
        torch_impls=TORCH_IMPLS, torch_threads=(1, None), max_temp_gb: float = 3.0,
        seed: int = 0) -> dict:
  """Benchmarks every implementation at each shape.

  Returns {shape: {"seconds": {impl: {mode: [s, ...]}}, "skipped": {impl: {mode: why}}, ...}}.
  A JAX program whose scratch memory exceeds `max_temp_gb` is not run (ragged_dot on CPU
  allocates [G, M, N] products). `jax_impls`: names from JAX_IMPLS (default: all; the default
  dispatch is always run); `torch_threads`: thread counts for transformers (None: all cores).
  """
  shapes = shapes or SHAPES
  jax_impls = {n: JAX_IMPLS[n] for n in (jax_impls or JAX_IMPLS) if n != default_impl()}
  jax_impls = {default_impl(): JAX_IMPLS[default_impl()], **jax_impls}
  results = {}
  for shape, (d, f, e, k, normalize, kind) in shapes.items():
    logging.info("%s: compiling", shape)
    rng = np.random.default_rng(seed)
    x_np = rng.standard_normal((1, tokens, d)).astype(np.float32)
    cot_np = rng.standard_normal((1, tokens, d)).astype(np.float32)
    x, cot = jnp.asarray(x_np), jnp.asarray(cot_np)
    candidates = {}  # name -> {mode: thunk}
    skipped = {}  # name -> {mode: why}
    params = None
    for name, fields in jax_impls.items():
      p, fwd, fwd_bwd = _jax_fns(d, f, e, k, normalize, fields, x, cot, seed)
      params = p  # same seed and shapes: every dispatch holds the same weights
      candidates[name] = {}
      for mode, fn in (("forward", fwd), ("forward_backward", fwd_bwd)):
        if _temp_gb(fn) > max_temp_gb:
          skipped.setdefault(name, {})[mode] = f"needs {_temp_gb(fn):.1f} GB scratch memory"
        else:
          candidates[name][mode] = lambda fn=fn, p=p: fn(p, x)
    xd = jnp.asarray(rng.standard_normal((tokens * k, d)).astype(np.float32))
    w, dfwd, dfwd_bwd = _dense_fns(d, f, xd, seed)
    candidates["dense chain"] = {"forward": lambda: dfwd(w, xd),
                                 "forward_backward": lambda: dfwd_bwd(w, xd)}
    for impl in torch_impls:
      block = _torch_block(kind, d, f, e, k, params, impl)
      for threads in sorted({t or os.cpu_count() for t in torch_threads}):
        tf, tfb = _torch_fns(block, x_np, cot_np, threads)
        tf(), tfb()  # warm up
        candidates[f"transformers/{impl}/{threads}t"] = {"forward": tf, "forward_backward": tfb}
    # One forward each (compiled already): the outputs to check and a first timing.
    logging.info("%s: checking outputs", shape)
    outputs, first = {}, {}
    for n, modes in candidates.items():
      if "forward" in modes:
        start = time.perf_counter()
        out = jax.block_until_ready(modes["forward"]())
        first[n] = time.perf_counter() - start
        outputs[n] = np.asarray(out.numpy() if hasattr(out, "numpy") else out)
    # Dropless outputs must agree with transformers' (and the two capacity-bound ones with
    # each other) before any timing means something.
    scale = float(np.abs(outputs[default_impl()]).max())
    errors = {}
    dropless = [n for n in outputs if n.startswith("dropless/")]
    pairs = [("dense/1.25", "capacity/1.25")] + [(n, dropless[0]) for n in dropless[1:]] + [
        (n, dropless[0]) for n in outputs if n.startswith("transformers/")]
    for n, ref in pairs:
      if n in outputs and ref in outputs:
        errors[n] = float(np.abs(outputs[n] - outputs[ref]).max()) / scale
        if errors[n] > 1e-4:
          raise AssertionError(f"{shape}: {n} differs from {ref} by {errors[n]:.2e} "
                               "(relative max abs): the comparison would not be fair")
    # Implementations over 8x slower than the dense chain (ragged_dot on CPU) run fewer rounds.
    rounds = {n: reps if first.get(n, 0) < 8 * first["dense chain"] else min(reps, slow_reps)
              for n in candidates}
    times = {n: {mode: [] for mode in modes} for n, modes in candidates.items()}
    for r in progress(range(reps), desc=f"{shape} rounds"):
      for n, modes in candidates.items():
        if r < rounds[n]:
          for mode, fn in modes.items():
            times[n][mode].append(_timed(fn))
    results[shape] = {"shape": dict(d_model=d, d_ff=f, experts=e, top_k=k, tokens=tokens),
                      "useful_gflop_forward": 2 * tokens * k * 3 * d * f / 1e9,
                      "relative_max_error": errors, "seconds": times, "skipped": skipped}
  return results


def _paired_ratio(num, den):
  """Median over the rounds both ran of num[r] / den[r]."""
  n = min(len(num), len(den))
  return float(np.median(np.asarray(num[:n]) / np.asarray(den[:n])))


def summarize(results: dict) -> tuple[dict, str]:
  """Adds ratios to `results`; returns (results, markdown)."""
  default = default_impl()
  rows = []
  headline = {"vs_transformers": np.inf, "vs_dense": np.inf}
  for shape, r in results.items():
    times = r["seconds"]
    torch_names = [n for n in times if n.startswith("transformers/")]
    best_torch = {mode: min(torch_names, key=lambda m, mode=mode: np.median(times[m][mode]))
                  for mode in ("forward", "forward_backward")} if torch_names else {}
    for n, t in times.items():
      row = [shape, n + (" (default)" if n == default else "")]
      for mode, flop_mult in (("forward", 1), ("forward_backward", 3)):
        if mode not in t:
          row += [f"skipped: {r['skipped'][n][mode]}", float("nan"), float("nan"), float("nan")]
          continue
        ts = np.asarray(t[mode]) * 1e3
        med = float(np.median(ts))
        row += [f"{med:.0f} ({ts.min():.0f}-{ts.max():.0f}, n={ts.size})",
                r["useful_gflop_forward"] * flop_mult / med * 1e3,
                _paired_ratio(times["dense chain"][mode], t[mode]),
                _paired_ratio(times[best_torch[mode]][mode], t[mode]) if torch_names
                else float("nan")]
      rows.append(row)
    fwd = lambda n: times[n]["forward"]
    r["default_vs_dense"] = _paired_ratio(fwd("dense chain"), fwd(default))
    headline["vs_dense"] = min(headline["vs_dense"], r["default_vs_dense"])
    if torch_names:
      r["transformers_reference"] = best_torch["forward"]
      r["default_vs_transformers"] = _paired_ratio(fwd(best_torch["forward"]), fwd(default))
      headline["vs_transformers"] = min(headline["vs_transformers"],
                                        r["default_vs_transformers"])
  headers = ["shape", "implementation", "fwd ms median (min-max, rounds)", "fwd GFLOP/s",
             "fwd: dense/this", "fwd: transformers/this", "fwd+bwd ms median (min-max, rounds)",
             "fwd+bwd GFLOP/s", "fwd+bwd: dense/this", "fwd+bwd: transformers/this"]
  tokens = next(iter(results.values()))["shape"]["tokens"]
  header = (f"MoE layer, float32, {tokens} tokens, random weights and inputs (synthetic), "
            f"{os.cpu_count()} CPU cores shared with other jobs, jax {jax.__version__} on "
            f"{jax.default_backend()}, interleaved rounds. GFLOP/s count useful FLOPs "
            "(2*T*K*3*D*F per forward, x3 with backward) at the median time; ratios are "
            "medians of per-round ratios (>1: this row is faster); transformers/this uses the "
            "fastest of transformers' eager and grouped_mm experts over the torch thread counts "
            "shown.")
  line = (f"moe_layer: vs_transformers={headline['vs_transformers']:.2f}x "
          f"vs_dense={headline['vs_dense']:.2f}")
  table = markdown_table(headers, rows, floatfmt=".2f")
  results = {"shapes": results, "default": default, **headline}
  return results, f"{header}\n\n{table}\n\n{line}"


FLAGS = flags.FLAGS


def define_flags():
  """The command line's flags, defined only when run as a program (the tests import `run`
  next to the experiments' own --workdir)."""
  flags.DEFINE_integer("tokens", 4096, "Tokens per call (batch 1 x sequence).")
  flags.DEFINE_integer("reps", 5, "Interleaved timing rounds.")
  flags.DEFINE_integer("slow_reps", 1, "Rounds for implementations over 8x slower than dense.")
  flags.DEFINE_list("shapes", list(SHAPES), "Which shapes to run.")
  flags.DEFINE_list("torch_threads", ["1", "all"], "torch thread counts to time transformers on.")
  flags.DEFINE_float("max_temp_gb", 3.0, "Skip JAX programs needing more scratch memory.")
  flags.DEFINE_string("workdir", None, "If set, writes results.json and results.md here.")


def main(argv):
  del argv
  results = run(FLAGS.tokens, FLAGS.reps, FLAGS.slow_reps,
                {s: SHAPES[s] for s in FLAGS.shapes},
                torch_threads=[None if t == "all" else int(t) for t in FLAGS.torch_threads],
                max_temp_gb=FLAGS.max_temp_gb)
  results, markdown = summarize(results)
  if FLAGS.workdir:
    write_results(FLAGS.workdir, results, markdown)
  else:
    print(markdown)


if __name__ == "__main__":
  define_flags()
  app.run(main)
