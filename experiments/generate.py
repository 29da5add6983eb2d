r"""Greedy generation with Hugging Face MoE checkpoints, checked against transformers.

  python -m experiments.generate --config=configs/generate.py[:quick] --workdir=DIR
  python -m experiments.generate --config=configs/generate.py \
      --config.hf_path=/models/Mixtral-8x7B-v0.1 --config.dtype=bfloat16 --workdir=DIR

Without `hf_path`, builds each family's random model (moe_jax.convert.tiny, widened by the
config), saves it with transformers, loads it with moe_jax.convert.hf.load_pretrained and
compares: logits (relative max error), greedy continuations (identical or first differing
step), load time and decode speed. With `hf_path`, runs that checkpoint (compared against
transformers when `compare` is set and the machine holds both copies).

With `count_published`, also tabulates the total/active parameters of the full-size published
models (moe_jax.convert.zoo) by jax.eval_shape against the published counts.

Writes DIR/results.json ({"models": {name: {...}}, "published": {...}}), DIR/results.md and
DIR/parity.png.
"""
from __future__ import annotations

import os
import time

from absl import flags
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import jax
from ml_collections import config_flags
import numpy as np

from moe_jax.convert import tiny
from moe_jax.convert.hf import count_params, load_pretrained
from moe_jax.convert.hf_config import from_hf, infer_architecture
from moe_jax.convert.zoo import ZOO
from moe_jax.models.generate import generate
from moe_jax.utils import cli
from moe_jax.utils.errors import require
from moe_jax.utils.reporting import markdown_table, progress, save_figure, write_results

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/generate.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)
flags.mark_flags_as_required(["config"])


def _torch():
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  return torch, transformers


def _version() -> str:
  try:
    return _torch()[1].__version__
  except ImportError:
    return "(not installed)"


def _reference(path: str, prompt: np.ndarray, tokens: np.ndarray, new: int) -> dict:
  """transformers' float32 logits of `tokens` and its greedy continuation (generate, KV
  cache) of `prompt`."""
  torch, transformers = _torch()
  model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
  with torch.no_grad():
    logits = model(torch.tensor(tokens)).logits.numpy()
    out = model.generate(torch.tensor(prompt), max_new_tokens=new, min_new_tokens=new,
                         do_sample=False).numpy()
  return {"logits": logits, "tokens": out}


def run_one(path: str, cfg, rng: np.random.Generator) -> dict:
  """Loads `path`, generates greedily, and (if cfg.compare) checks against transformers."""
  start = time.perf_counter()
  module, variables = load_pretrained(path, dtype=cfg.dtype, progress=progress)
  load_s = time.perf_counter() - start
  mcfg = module.cfg
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))
  tokenizer = None
  if cfg.prompt_text:
    tokenizer = _torch()[1].AutoTokenizer.from_pretrained(path)
    prompt = np.asarray(tokenizer(cfg.prompt_text)["input_ids"])[None]
  else:
    prompt = np.asarray(cfg.prompt or rng.integers(0, mcfg.vocab_size, cfg.prompt_len))[None]
  prompt = np.repeat(prompt, cfg.batch, axis=0)
  tokens = rng.integers(0, mcfg.vocab_size, (cfg.batch, cfg.check_len))
  ours = np.asarray(generate(mcfg, variables, prompt, cfg.max_new_tokens))  # compiles
  start = time.perf_counter()
  np.asarray(generate(mcfg, variables, prompt, cfg.max_new_tokens))
  decode_s = time.perf_counter() - start
  result = {"architecture": infer_architecture(mcfg), "params": n_params, "load_s": load_s,
            "tokens_per_s": cfg.batch * cfg.max_new_tokens / decode_s,
            "continuation": ours[0, prompt.shape[1]:].tolist()}
  if tokenizer is not None:
    result["text"] = tokenizer.decode(ours[0])
  if cfg.compare:
    ref = _reference(path, prompt, tokens, cfg.max_new_tokens)
    logits = np.asarray(jax.jit(module.apply)(variables, tokens))
    result["rel_err"] = float(np.max(np.abs(logits - ref["logits"])) /
                              np.max(np.abs(ref["logits"])))
    differ = np.flatnonzero(np.any(ours != ref["tokens"], axis=0))
    result["first_diff"] = int(differ[0] - prompt.shape[1]) if differ.size else -1
    result["identical"] = not differ.size
  return result


def published_counts() -> tuple[dict, str]:
  """Total / active parameters of the full-size published models (jax.eval_shape)."""
  counts, rows = {}, []
  for name, entry in ZOO.items():
    total, active = count_params(from_hf(entry.config)[0])
    counts[name] = {"total": total, "active": active, "published_total": entry.total,
                    "published_active": entry.active}
    rows.append([entry.repo, f"{total:,}", f"{total / 1e9:.2f}B", f"{entry.total / 1e9:.4g}B",
                 f"{active / 1e9:.2f}B", f"{entry.active / 1e9:.4g}B", entry.source])
  table = markdown_table(["checkpoint", "total (eval_shape)", "total", "published total",
                          "active", "published active", "published in"], rows)
  return counts, ("## Full-size configs: parameters by jax.eval_shape vs published\n\n"
                  "Active = total minus the idle routed experts of every MoE layer "
                  "(embeddings and head counted).\n\n" + table + "\n")


def plot(results: dict, workdir: str) -> None:
  names = [n for n in results if "rel_err" in results[n]]
  fig, ax = plt.subplots(figsize=(6, 3.5))
  ax.bar(names, [max(results[n]["rel_err"], 1e-12) for n in names], color="tab:blue")
  ax.axhline(1e-4, color="tab:red", ls="--", label="bound 1e-4")
  ax.set_yscale("log")
  ax.set_ylabel("logits rel. max error vs transformers")
  ax.tick_params(axis="x", rotation=30)
  ax.legend()
  save_figure(fig, workdir, "parity")


def main(argv):
  del argv
  cfg, workdir = _CONFIG.value, _WORKDIR.value
  rng = np.random.default_rng(cfg.seed)
  results = {}
  if cfg.hf_path:
    require(os.path.isdir(cfg.hf_path), "hf_path", f"{cfg.hf_path} is not a directory",
            "point it at a local Hugging Face model directory")
    results[os.path.basename(os.path.normpath(cfg.hf_path))] = run_one(cfg.hf_path, cfg, rng)
    data = f"checkpoint {cfg.hf_path}"
  else:
    for name in progress(list(cfg.families), desc="families"):
      path = os.path.join(workdir, "models", name)
      tiny.build(name, path, seed=cfg.seed, **cfg.overrides.to_dict())
      results[name] = run_one(path, cfg, rng)
    data = (f"random transformers models (moe_jax.convert.tiny, overrides "
            f"{cfg.overrides.to_dict()}), random prompts")
  rows = [[n, r["params"], r.get("rel_err", float("nan")), r.get("identical", "-"),
           r.get("first_diff", "-"), r["load_s"], r["tokens_per_s"]] for n, r in results.items()]
  table = markdown_table(
      ["model", "params", "logits rel err", "greedy identical", "first diff",
       "load s", "decode tok/s"], rows, floatfmt=".3g")
  md = (f"# Greedy generation vs transformers ({cfg.dtype}, batch {cfg.batch}, "
        f"{cfg.max_new_tokens} new tokens)\n\nData: {data}. Reference: transformers "
        f"{_version()} in float32. Decode speed: JAX, this host's CPU, after compilation "
        f"(batch x new tokens / s).\n\n{table}\n")
  summary = {"models": results, "dtype": cfg.dtype}
  if cfg.count_published:
    summary["published"], counts_md = published_counts()
    md += "\n" + counts_md
  write_results(workdir, summary, md)
  if any("rel_err" in r for r in results.values()):
    plot(results, workdir)


if __name__ == "__main__":
  cli.run(main)
