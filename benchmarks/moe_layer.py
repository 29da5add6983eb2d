"""Times the MoE layer per dispatch against transformers' MoE blocks and the machine's limit,
with both sides held to the same CPU threads.

  python -m benchmarks.moe_layer [--threads=1,all] [--tokens=4096] [--reps=5] [--workdir=DIR]

Each thread setting runs in its own process, started pinned to that many cores
(os.sched_setaffinity) with XLA, torch and NumPy's BLAS all on that many threads: "1" also sets
XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1 (read only when
JAX starts, hence the process), torch.set_num_threads and OMP/OPENBLAS/MKL_NUM_THREADS follow
the setting; "all" is every core this process may use.
In each process, for each shape (Mixtral-like: D=512, F=1024, E=8, K=2; OLMoE-like: D=512,
F=256, E=64, K=8), float32, T tokens, forward and forward+backward (the output and its gradients
w.r.t. x and every weight):
  moe_jax dispatches: dropless with the "tiled" and "ragged_dot" grouped matmuls, capacity
    (factor 1.25) and dense (GShard one-hot, factor 1.25);
  transformers: MixtralSparseMoeBlock / OlmoeSparseMoeBlock with the same weights copied in
    (outputs checked against ours first), "eager" (loop over experts) and "grouped_mm" expert
    implementations; the reference is the faster of the two;
  the limit: the dense SwiGLU chain y = (silu(x W0) * (x W1)) W2 on x[T*K, D], W0, W1 [D, F],
    W2 [F, D] (the same useful FLOPs with no routing), in XLA, in torch and in NumPy (its
    BLAS, backward written out): the fastest of the three is the limit (the table says which).
Useful FLOPs = 2 * T * K * 3 * D * F forward (x3 for forward+backward); router FLOPs excluded.
Repetitions are interleaved (every implementation runs once per round) because other processes
may share the CPU; each ratio is the median over rounds of the per-round ratio. Other dispatches
over 8x slower than the limit (ragged_dot, dense one-hot on CPU) run only `--slow_reps` rounds.
The last two lines are `moe_layer fwd+bwd: ...` and `moe_layer: vs_transformers=<r>x
vs_limit=<r>`: the default dispatch, forward+backward then forward, the worst over shapes and
thread settings (vs_transformers: the reference's time / ours; vs_limit: the limit's time / ours).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
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
from moe_jax.utils.reporting import jsonable, markdown_table, progress, write_results

SHAPES = {
    # name: (d_model, d_ff, experts, top_k, renormalise top-k weights, transformers block)
    "mixtral": (512, 1024, 8, 2, True, "mixtral"),
    "olmoe": (512, 256, 64, 8, False, "olmoe"),
    "tiny": (16, 8, 8, 4, False, "olmoe"),  # the tests' end-to-end run
}
JAX_IMPLS = {
    # name: MoE fields
    "dropless/tiled": dict(dispatch="dropless", gmm_impl="tiled"),
    "dropless/ragged_dot": dict(dispatch="dropless", gmm_impl="ragged_dot"),
    "capacity/1.25": dict(dispatch="capacity", capacity_factor=1.25),
    "dense/1.25": dict(dispatch="dense", capacity_factor=1.25),
}
TORCH_IMPLS = ("eager", "grouped_mm")
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
MODES = ("forward", "forward_backward")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_impl() -> str:
  """The JAX_IMPLS key that MoE(dispatch='auto', gmm_impl='auto') runs on this backend."""
  name = dispatch_lib.default_dispatch()
  if name == "dropless":
    return f"dropless/{grouped_matmul.default_impl()}"
  return f"{name}/1.25"


def _compile(fn, args, cot):
  """{mode: compiled}: y = fn(*args), and y with the gradients of <y, cot> w.r.t. every
  argument (y kept, as a training step needs it and torch computes it, so XLA cannot drop it)."""

  def forward_backward(*a):
    y, vjp = jax.vjp(fn, *a)
    return y, vjp(cot)

  return {m: jax.jit(g).lower(*args).compile() for m, g in zip(MODES, (fn, forward_backward))}


def _jax_layer(d, f, e, k, normalize, fields, x, cot, seed):
  """(params, {mode: compiled}) of one MoE config."""
  layer = MoE(MoEConfig(num_experts=e, top_k=k, d_ff=f, normalize_topk=normalize, **fields))
  params = nn.unbox(layer.init(jax.random.key(seed), x[:, :8])["params"])
  return params, _compile(lambda p, x: layer.apply({"params": p}, x), (params, x), cot)


def _swiglu(silu, w, x):
  return (silu(x @ w[0]) * (x @ w[1])) @ w[2]


def _dense_chains(w, x, cot):
  """The dense SwiGLU chain on x[R, D] in XLA, torch and NumPy: {name: {mode: thunk}}."""
  import torch  # pylint: disable=g-import-not-at-top
  wj, xj = [jnp.asarray(a) for a in w], jnp.asarray(x)
  xla = _compile(lambda w, x: _swiglu(jax.nn.silu, w, x), (wj, xj), jnp.asarray(cot))
  wt, xt, ct = [torch.tensor(a) for a in w], torch.tensor(x), torch.tensor(cot)

  def torch_forward():
    with torch.no_grad():
      return _swiglu(torch.nn.functional.silu, wt, xt)

  def torch_forward_backward():
    leaves = [a.detach().requires_grad_(True) for a in (*wt, xt)]
    return torch.autograd.grad(_swiglu(torch.nn.functional.silu, leaves[:3], leaves[3]),
                               leaves, ct)

  def numpy_forward_backward(backward=True):
    a, b = x @ w[0], x @ w[1]
    s = 1 / (1 + np.exp(-a))
    h = a * s * b
    y = h @ w[2]
    if not backward:
      return y
    dh = cot @ w[2].T
    da, db = dh * b * s * (1 + a * (1 - s)), dh * a * s
    return da @ w[0].T + db @ w[1].T, x.T @ da, x.T @ db, h.T @ cot, y

  return {"limit/xla": {m: (lambda c=c: c(wj, xj)) for m, c in xla.items()},
          "limit/torch": {"forward": torch_forward, "forward_backward": torch_forward_backward},
          "limit/numpy": {"forward": lambda: numpy_forward_backward(False),
                          "forward_backward": numpy_forward_backward}}


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


def _torch_fns(block, x_np, cotangent_np):
  """{mode: thunk}: the block's forward (inference) and forward+backward."""
  import torch  # pylint: disable=g-import-not-at-top
  x = torch.tensor(x_np)
  cot = torch.tensor(cotangent_np)

  def forward():
    with torch.no_grad():
      return block(x)

  def forward_backward():
    xg = x.clone().requires_grad_(True)
    block.zero_grad(set_to_none=True)
    (block(xg) * cot).sum().backward()
    return xg.grad

  return {"forward": forward, "forward_backward": forward_backward}


def _timed(fn):
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def _numpy(out):
  return np.asarray(out.numpy() if hasattr(out, "numpy") else out)


def _check(outputs, pairs, shape):
  """Relative max abs difference of each (name, reference) pair; raises over 1e-4."""
  errors = {}
  for n, ref in pairs:
    if n in outputs and ref in outputs:
      scale = float(np.abs(outputs[ref]).max())
      errors[n] = float(np.abs(outputs[n] - outputs[ref]).max()) / scale
      if errors[n] > 1e-4:
        raise AssertionError(f"{shape}: {n} differs from {ref} by {errors[n]:.2e} "
                             "(relative max abs): the comparison would not be fair")
  return errors


def run(tokens: int = 4096, reps: int = 5, slow_reps: int = 1, shapes=("mixtral", "olmoe"),
        jax_impls=None, torch_impls=TORCH_IMPLS, max_temp_gb: float = 3.0,
        seed: int = 0) -> dict:
  """Benchmarks every implementation at each shape, in this process's threads.

  Returns {shape: {"seconds": {impl: {mode: [s, ...]}}, "skipped": {impl: {mode: why}}, ...}}.
  A JAX program whose scratch memory exceeds `max_temp_gb` is not run (ragged_dot on CPU
  allocates [G, M, N] products). `jax_impls`: names from JAX_IMPLS (default: all; the default
  dispatch is always run).
  """
  jax_impls = {n: JAX_IMPLS[n] for n in (jax_impls or JAX_IMPLS) if n != default_impl()}
  jax_impls = {default_impl(): JAX_IMPLS[default_impl()], **jax_impls}
  results = {}
  for shape in shapes:
    d, f, e, k, normalize, kind = SHAPES[shape]
    logging.info("%s: compiling", shape)
    rng = np.random.default_rng(seed)
    x_np = rng.standard_normal((1, tokens, d)).astype(np.float32)
    cot_np = rng.standard_normal((1, tokens, d)).astype(np.float32)
    x, cot = jnp.asarray(x_np), jnp.asarray(cot_np)
    candidates = {}  # name -> {mode: thunk}
    skipped = {}  # name -> {mode: why}
    params = None
    for name, fields in jax_impls.items():
      p, compiled = _jax_layer(d, f, e, k, normalize, fields, x, cot, seed)
      params = p  # same seed and shapes: every dispatch holds the same weights
      candidates[name] = {}
      for mode, fn in compiled.items():
        temp_gb = fn.memory_analysis().temp_size_in_bytes / 1e9
        if temp_gb > max_temp_gb:
          skipped.setdefault(name, {})[mode] = f"needs {temp_gb:.1f} GB scratch memory"
        else:
          candidates[name][mode] = lambda fn=fn, p=p: fn(p, x)
    w = [(rng.standard_normal(s) * s[0] ** -0.5).astype(np.float32)
         for s in ((d, f), (d, f), (f, d))]
    candidates.update(_dense_chains(w, rng.standard_normal((tokens * k, d)).astype(np.float32),
                                    rng.standard_normal((tokens * k, d)).astype(np.float32)))
    for impl in torch_impls:
      block = _torch_block(kind, d, f, e, k, params, impl)
      candidates[f"transformers/{impl}"] = _torch_fns(block, x_np, cot_np)
    # One forward each (and a forward+backward to warm up torch and NumPy; the layers are
    # compiled already): the outputs to check and a first timing.
    logging.info("%s: checking outputs", shape)
    outputs, first = {}, {}
    for n, modes in candidates.items():
      if n not in jax_impls:
        modes["forward_backward"]()
      if "forward" in modes:
        start = time.perf_counter()
        outputs[n] = _numpy(jax.block_until_ready(modes["forward"]()))
        first[n] = time.perf_counter() - start
    # Dropless outputs must agree with transformers' (and the two capacity-bound ones with each
    # other, the limit's three with XLA's) before any timing means something.
    dropless = [n for n in outputs if n.startswith("dropless/")]
    errors = _check(outputs, [("dense/1.25", "capacity/1.25"), ("limit/torch", "limit/xla"),
                              ("limit/numpy", "limit/xla")]
                    + [(n, dropless[0]) for n in dropless[1:]]
                    + [(n, dropless[0]) for n in outputs if n.startswith("transformers/")], shape)
    # Only the other dispatches may run fewer rounds: the default and the references always
    # run all of them, whatever one first call under load took.
    fastest_limit = min(first[n] for n in first if n.startswith("limit/"))
    rounds = {n: min(reps, slow_reps) if n in jax_impls and n != default_impl()
              and first.get(n, 0) > 8 * fastest_limit else reps for n in candidates}
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


def _cores(threads: str) -> list[int]:
  """The cores a setting is pinned to: the first n this process may use ("all": every one)."""
  mine = sorted(os.sched_getaffinity(0))
  if threads != "all" and not (threads.isdigit() and 1 <= int(threads) <= len(mine)):
    raise ValueError(f"--threads: {threads!r} is not 'all' or 1..{len(mine)} (cores available)")
  return mine if threads == "all" else mine[:int(threads)]


def run_setting(threads: str, **run_kwargs) -> dict:
  """`run(**run_kwargs)` in a fresh process pinned to `threads` cores, everything on as many
  threads; returns {"process": what it ran on, "shapes": run's result}."""
  cores = _cores(threads)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
  for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    env[var] = str(len(cores))
  if len(cores) == 1:
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {XLA_ONE_THREAD}".strip()
  with tempfile.TemporaryDirectory() as tmp:
    with open(os.path.join(tmp, "args.json"), "w") as fp:
      json.dump(run_kwargs, fp)
    subprocess.run([sys.executable, "-m", "benchmarks.moe_layer", f"--worker={tmp}"], env=env,
                   cwd=ROOT, check=True, preexec_fn=lambda: os.sched_setaffinity(0, cores))
    with open(os.path.join(tmp, "results.json")) as fp:
      return json.load(fp)


def _worker(tmp: str) -> None:
  """The child of `run_setting`: runs `run` with the arguments in tmp/args.json."""
  import torch  # pylint: disable=g-import-not-at-top
  threads = len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  with open(os.path.join(tmp, "args.json")) as fp:
    shapes = run(**json.load(fp))
  process = dict(cores=sorted(os.sched_getaffinity(0)), torch_threads=torch.get_num_threads(),
                 xla_flags=os.environ.get("XLA_FLAGS", ""),
                 blas_threads=os.environ["OPENBLAS_NUM_THREADS"])
  with open(os.path.join(tmp, "results.json"), "w") as fp:
    json.dump(jsonable({"process": process, "shapes": shapes}), fp)


def _paired_ratio(num, den):
  """Median over the rounds both ran of num[r] / den[r]."""
  n = min(len(num), len(den))
  return float(np.median(np.asarray(num[:n]) / np.asarray(den[:n])))


def _fastest(times, prefix, mode):
  names = [n for n in times if n.startswith(prefix) and mode in times[n]]
  return min(names, key=lambda n: np.median(times[n][mode])) if names else None


def _rate(r, times, name, mode):
  """Useful GFLOP/s of `name` in `mode` at its median time."""
  return r["useful_gflop_forward"] * (1 if mode == "forward" else 3) / np.median(
      times[name][mode])


def summarize(settings: dict) -> tuple[dict, str]:
  """settings: {threads: run_setting's result}. Adds ratios; returns (results, markdown)."""
  default = default_impl()
  rows, refs = [], []
  headline = {m: {"vs_transformers": np.inf, "vs_limit": np.inf} for m in MODES}
  for threads, setting in settings.items():
    for shape, r in setting["shapes"].items():
      times = r["seconds"]
      r["reference"] = best = {m: {"transformers": _fastest(times, "transformers/", m),
                                   "limit": _fastest(times, "limit/", m)} for m in MODES}
      refs.append([threads, shape] + [
          f"{best[m]['limit']} ({_rate(r, times, best[m]['limit'], m):.0f} GFLOP/s), "
          f"{best[m]['transformers']}" for m in MODES])
      for n, t in times.items():
        row = [threads, shape, n + (" (default)" if n == default else "")]
        for mode in MODES:
          if mode not in t:
            row += [f"skipped: {r['skipped'][n][mode]}"] + [float("nan")] * 3
            continue
          ts = np.asarray(t[mode]) * 1e3
          row += [f"{np.median(ts):.0f} ({ts.min():.0f}-{ts.max():.0f}, n={ts.size})",
                  _rate(r, times, n, mode)]
          row += [_paired_ratio(times[best[mode][ref]][mode], t[mode]) if best[mode][ref]
                  else float("nan") for ref in ("limit", "transformers")]
        rows.append(row)
      for mode in MODES:
        for key, ref in (("vs_transformers", "transformers"), ("vs_limit", "limit")):
          if best[mode][ref] and mode in times[default]:
            value = _paired_ratio(times[best[mode][ref]][mode], times[default][mode])
            r.setdefault("default_" + key, {})[mode] = value
            if value < headline[mode][key]:
              headline[mode][key] = value
              headline[mode][key + "_at"] = f"{threads} threads, {shape}"
  cols = ["ms median (min-max, rounds)", "GFLOP/s", "limit/this", "transformers/this"]
  headers = (["threads", "shape", "implementation"] + [f"fwd {c}" for c in cols]
             + [f"fwd+bwd {c}" for c in cols])
  tokens = next(iter(next(iter(settings.values()))["shapes"].values()))["shape"]["tokens"]
  procs = "; ".join(f"{th}: cores {s['process']['cores']}, torch {s['process']['torch_threads']} "
                    f"threads, XLA_FLAGS '{s['process']['xla_flags']}'"
                    for th, s in settings.items())
  header = (f"MoE layer, float32, {tokens} tokens, random weights and inputs (synthetic), jax "
            f"{jax.__version__} on {jax.default_backend()}, one process per thread setting "
            f"({procs}), interleaved rounds. GFLOP/s count useful FLOPs (2*T*K*3*D*F per "
            "forward, x3 with backward) at the median time; ratios are medians of per-round "
            "ratios (>1: this row is faster) against the fastest dense chain (limit) and the "
            "faster transformers implementation, both in the same process.")
  ref_table = markdown_table(["threads", "shape", "fwd: limit (rate), transformers reference",
                              "fwd+bwd: limit (rate), transformers reference"], refs)
  line = lambda m: (f"vs_transformers={headline[m]['vs_transformers']:.2f}x "
                    f"vs_limit={headline[m]['vs_limit']:.2f}")
  markdown = (f"{header}\n\n{markdown_table(headers, rows, floatfmt='.2f')}\n\n{ref_table}\n\n"
              f"moe_layer fwd+bwd: {line('forward_backward')}\nmoe_layer: {line('forward')}")
  results = {"settings": settings, "default": default, **headline["forward"],
             "forward_backward": headline["forward_backward"]}
  return results, markdown


def benchmark(threads=("1", "all"), **run_kwargs) -> tuple[dict, str]:
  """run_setting for each thread setting, then summarize."""
  return summarize({th: run_setting(th, **run_kwargs) for th in threads})


FLAGS = flags.FLAGS


def define_flags():
  """The command line's flags, defined only when run as a program (the tests import the module
  next to the experiments' own --workdir)."""
  flags.DEFINE_list("threads", ["1", "all"], "Thread settings, each in its own pinned process.")
  flags.DEFINE_integer("tokens", 4096, "Tokens per call (batch 1 x sequence).")
  flags.DEFINE_integer("reps", 5, "Interleaved timing rounds.")
  flags.DEFINE_integer("slow_reps", 1, "Rounds for other dispatches over 8x slower than the limit.")
  flags.DEFINE_list("shapes", ["mixtral", "olmoe"], f"Shapes, from {list(SHAPES)}.")
  flags.DEFINE_list("impls", list(JAX_IMPLS), "moe_jax implementations (default always runs).")
  flags.DEFINE_list("torch_impls", list(TORCH_IMPLS), "transformers expert implementations.")
  flags.DEFINE_float("max_temp_gb", 3.0, "Skip JAX programs needing more scratch memory.")
  flags.DEFINE_string("workdir", None, "If set, writes results.json and results.md here.")
  flags.DEFINE_string("worker", None, "Internal: the directory of one setting's process.")


def main(argv):
  del argv
  if FLAGS.worker:
    _worker(FLAGS.worker)
    return
  results, markdown = benchmark(
      FLAGS.threads, tokens=FLAGS.tokens, reps=FLAGS.reps, slow_reps=FLAGS.slow_reps,
      shapes=FLAGS.shapes, jax_impls=FLAGS.impls, torch_impls=FLAGS.torch_impls,
      max_temp_gb=FLAGS.max_temp_gb)
  if FLAGS.workdir:
    write_results(FLAGS.workdir, results, markdown)
  else:
    print(markdown)


if __name__ == "__main__":
  define_flags()
  app.run(main)
