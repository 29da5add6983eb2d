"""Greedy generation with Hugging Face MoE checkpoints, checked against transformers.

Without `hf_path`, builds each family's random model (moe_jax.convert.tiny, widened by the
config), saves it with transformers, loads it with moe_jax.convert.hf.load_pretrained and
compares: logits (relative max error), greedy continuations (identical or first differing
step), load time and decode speed. With `hf_path`, runs that checkpoint (compared against
transformers when `compare` is set and the machine holds both copies). With
`count_published`, also tabulates the total / active parameters of the full-size published
models (moe_jax.convert.zoo) by jax.eval_shape against the published counts.
"""
from __future__ import annotations

import dataclasses
import os
import time

import jax
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from moe_jax.convert import tiny
from moe_jax.convert.hf import count_params, load_pretrained
from moe_jax.convert.hf_config import from_hf, infer_architecture
from moe_jax.convert.zoo import ZOO
from moe_jax.models.config import DTYPES
from moe_jax.models.generate import generate
from moe_jax.utils.config import Section
from moe_jax.utils.errors import ConfigError, check_choice, check_positive, one_line, require
from moe_jax.utils.experiment import Claim, Experiment
from moe_jax.utils.reporting import markdown_table, progress, save_figure
from moe_jax.utils.trees import param_count


@dataclasses.dataclass(frozen=True)
class GenerateConfig(Section):
  """hf_path: a local HF model directory; empty: the random models of `families`, with the
  config.json fields `overrides` (e.g. a wider hidden_size).
  compare: check against transformers (needs torch + transformers).
  prompt_text (with hf_path: encoded by the checkpoint's tokenizer) or prompt (token ids) or
  `prompt_len` random ids; check_len: tokens of the logits check.
  count_published: the full-size parameter table (jax.eval_shape, ~30 s)."""
  hf_path: str = ""
  families: tuple[str, ...] = tuple(tiny.FAMILIES)
  overrides: dict[str, int] = dataclasses.field(default_factory=dict)
  dtype: str = "float32"
  compare: bool = True
  prompt_text: str = ""
  prompt: tuple[int, ...] = ()
  prompt_len: int = 8
  batch: int = 2
  max_new_tokens: int = 20
  check_len: int = 32
  seed: int = 0
  count_published: bool = True

  def __post_init__(self):
    check_choice("dtype", self.dtype, DTYPES)
    for name in self.families:
      check_choice("families", name, tiny.FAMILIES)
    for field in ("prompt_len", "batch", "max_new_tokens", "check_len"):
      check_positive(field, getattr(self, field))
    require(not self.prompt_text or self.hf_path, "prompt_text", "needs hf_path (the random "
            "models have no tokenizer)", "set hf_path, or give token ids with prompt=")


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


def load_tokenizer(path: str):
  """transformers' tokenizer of the checkpoint `path`; a folder without one is refused."""
  try:
    return _torch()[1].AutoTokenizer.from_pretrained(path)
  except (OSError, ValueError) as e:
    raise ConfigError(f"prompt_text: {path} holds no tokenizer transformers can load "
                      f"({one_line(e, 120)})."
                      " Fix: copy the model's tokenizer files (tokenizer.json, "
                      "tokenizer_config.json) into it, or give token ids with prompt=") from None


def run_one(path: str, cfg: GenerateConfig, rng: np.random.Generator) -> dict:
  """Loads `path`, generates greedily, and (if cfg.compare) checks against transformers."""
  tokenizer = load_tokenizer(path) if cfg.prompt_text else None  # refused before the weights
  start = time.perf_counter()
  module, variables = load_pretrained(path, dtype=cfg.dtype, progress=progress)
  load_s = time.perf_counter() - start
  mcfg = module.cfg
  n_params = param_count(variables["params"])
  if tokenizer is not None:
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


def run(cfg: GenerateConfig, workdir: str) -> dict:
  """Generates with each model and checks it against transformers; the contract's results."""
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
      tiny.build(name, path, seed=cfg.seed, **cfg.overrides)
      results[name] = run_one(path, cfg, rng)
    data = (f"random transformers models (moe_jax.convert.tiny, overrides "
            f"{cfg.overrides}), random prompts")
  rows = [[n, r["params"], r.get("rel_err", float("nan")), r.get("identical", "-"),
           r.get("first_diff", "-"), r["load_s"], r["tokens_per_s"]] for n, r in results.items()]
  table = markdown_table(
      ["model", "params", "logits rel err", "greedy identical", "first diff",
       "load s", "decode tok/s"], rows, floatfmt=".3g")
  md = (f"# Greedy generation vs transformers ({cfg.dtype}, batch {cfg.batch}, "
        f"{cfg.max_new_tokens} new tokens)\n\nData: {data}. Reference: transformers "
        f"{_version()} in float32. Decode speed: JAX, this host's CPU, after compilation "
        f"(batch x new tokens / s).\n\n{table}\n")
  errors = [r["rel_err"] for r in results.values() if "rel_err" in r]
  summary = {"models": results, "dtype": cfg.dtype, "max_rel_err": max(errors, default=None),
             "data": ("synthetic: " if not cfg.hf_path else "user: ") + data,
             "scale": f"{len(results)} model(s), {cfg.max_new_tokens} new tokens"}
  if cfg.count_published:
    summary["published"], counts_md = published_counts()
    md += "\n" + counts_md
  if errors:
    plot(results, workdir)
  return {**summary, "markdown": md}


EXPERIMENT = Experiment(
    name="generate",
    paper="Model zoo: Mixtral, Qwen2/3-MoE, OLMoE, PhiMoE, DeepSeek-V3 against transformers",
    config="configs/generate.py",
    run=run,
    claims=(Claim("logit_parity", "logits equal transformers' (largest relative max error)",
                  "max_rel_err", "<", 1e-4, "transformers' own implementation"),),
)
