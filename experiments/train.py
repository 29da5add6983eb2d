r"""Trains the MoE LM of a config (and, if asked, its dense twin) and writes the result table.

  python -m experiments.train --config=configs/lm_tiny.py[:quick] --workdir=DIR \
      [--config.train.num_steps=...]

Writes DIR/results.json, DIR/results.md, DIR/learning_curves.png; checkpoints, metrics.jsonl and
TensorBoard events under DIR/moe (and DIR/dense). Re-running with the same DIR resumes.
"""
from __future__ import annotations

import os
import platform

import jax
from absl import flags, logging
from ml_collections import config_flags

from moe_jax.data import corpus
from moe_jax.data.iterator import eval_windows
from moe_jax.models.config import LMConfig
from moe_jax.parallel import hosts
from moe_jax.parallel.config import ParallelConfig
from moe_jax.train.loop import TrainConfig, train_lm
from moe_jax.utils import cli
from moe_jax.utils.reporting import markdown_table, save_figure, write_results

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:preset]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)
flags.mark_flags_as_required(["config"])


def load_data(data_cfg, seq_len: int):
  """Train token stream and eval windows per domain, from the config's `data` section."""
  docs = corpus.load_documents(list(data_cfg.sources), list(data_cfg.files), data_cfg.text_field)
  train_docs, val_docs = corpus.split(docs, data_cfg.val_every)
  eval_sets = {}
  for domain in sorted({d.domain for d in val_docs}):
    tokens = corpus.to_tokens([d for d in val_docs if d.domain == domain])
    eval_sets[domain] = eval_windows(tokens, seq_len, data_cfg.max_eval_windows)
  return corpus.to_tokens(train_docs), eval_sets


def plot_curves(runs: dict, workdir: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, run in runs.items():
    steps = [h["step"] for h in run["history"]]
    ax.plot(steps, [h["bpb_all"] for h in run["history"]], marker="o", label=name)
  ax.set_xlabel("step")
  ax.set_ylabel("held-out bits per byte")
  ax.grid(alpha=0.3)
  ax.legend()
  save_figure(fig, workdir, "learning_curves")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  config, workdir = _CONFIG.value, _WORKDIR.value
  parallel = ParallelConfig.from_dict(config.get("parallel", {}))
  hosts.initialize(parallel)
  model_cfg = LMConfig.from_dict(config.model)
  train_cfg = TrainConfig.from_dict(config.train)
  train_tokens, eval_sets = load_data(config.data, train_cfg.seq_len)
  variants = {"moe": model_cfg}
  if config.get("compare_dense", False):
    variants["dense"] = model_cfg.dense_twin()

  runs = {}
  for name, cfg in variants.items():
    run = train_lm(cfg, train_cfg, train_tokens, eval_sets, os.path.join(workdir, name),
                   desc=name, parallel=parallel)
    run["active_params"] = cfg.active_params(run["params"])
    run.pop("state")
    runs[name] = run

  domains = sorted(eval_sets)
  rows = []
  for name, run in runs.items():
    final = run["final"]
    rows.append([name, run["params"], run["active_params"], final["step"],
                 final["bpb_all"], *[final[f"bpb_{d}"] for d in domains],
                 final["train_seconds"] / 60])
  header = (f"Byte-level LM, {train_cfg.num_steps} steps x {train_cfg.batch_size} x "
            f"{train_cfg.seq_len} tokens; data: CPython {platform.python_version()}'s shipped "
            f"text ({', '.join(config.data.sources)}), held-out split; bits per byte (lower is "
            "better).")
  table = markdown_table(["model", "params", "active params", "steps", "bpb all",
                          *[f"bpb {d}" for d in domains], "train minutes"], rows)
  if jax.process_index():  # on several hosts, the first one writes the results
    return
  write_results(workdir, {"runs": runs, "config": config.to_dict(),
                          "python": platform.python_version()}, f"{header}\n\n{table}")
  plot_curves(runs, workdir)


if __name__ == "__main__":
  cli.run(main)
