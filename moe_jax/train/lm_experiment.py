"""The foundation experiment: an MoE LM against its dense twin at equal active parameters.

The basic sparse-MoE claim (Shazeer et al. 2017; Fedus et al. 2021): at equal steps and equal
active parameters per token, a top-k MoE LM reaches a lower held-out loss than a dense LM.
`run` trains the config's model (and, with `compare_dense`, its dense twin: `d_ff = K x expert
width`) with the resumable loop and reports held-out bits per byte per domain.
"""
from __future__ import annotations

import dataclasses
import os
import platform

import jax

from moe_jax.data.corpus import DataConfig, lm_data
from moe_jax.models.config import LMConfig
from moe_jax.parallel import hosts
from moe_jax.parallel.config import ParallelConfig
from moe_jax.train.loop import TrainConfig, train_lm
from moe_jax.utils.config import Section
from moe_jax.utils.experiment import Claim, Experiment
from moe_jax.utils.reporting import markdown_table, save_figure


@dataclasses.dataclass(frozen=True)
class LMExperimentConfig(Section):
  """An LM training run: model, optimisation, data, device layout; `compare_dense` adds the
  dense twin of equal active parameters, trained on the same batches."""
  model: LMConfig = LMConfig()
  train: TrainConfig = TrainConfig()
  data: DataConfig = DataConfig()
  parallel: ParallelConfig = ParallelConfig()
  compare_dense: bool = False


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


def run(config: LMExperimentConfig, workdir: str) -> dict:
  """Trains (or resumes) each variant under workdir/<variant>; returns the contract's results."""
  hosts.initialize(config.parallel)
  train_cfg = config.train
  train_tokens, eval_sets = lm_data(config.data, train_cfg.seq_len)
  variants = {"moe": config.model}
  if config.compare_dense:
    variants["dense"] = config.model.dense_twin()
  runs = {}
  for name, cfg in variants.items():
    result = train_lm(cfg, train_cfg, train_tokens, eval_sets, os.path.join(workdir, name),
                      desc=name, parallel=config.parallel)
    result["active_params"] = cfg.active_params(result["params"])
    result.pop("state")
    runs[name] = result

  domains = sorted(eval_sets)
  rows = [[name, r["params"], r["active_params"], r["final"]["step"], r["final"]["bpb_all"],
           *[r["final"][f"bpb_{d}"] for d in domains], r["final"]["train_seconds"] / 60]
          for name, r in runs.items()]
  sources = ", ".join(config.data.sources)
  data = (f"shipped: CPython {platform.python_version()}'s help texts and standard library"
          if "files" not in config.data.sources else f"user files ({sources})")
  m = config.model
  scale = (f"{m.num_layers} layers, d_model {m.d_model}, {m.moe.num_experts} experts of width "
           f"{m.moe.d_ff}, top-{m.moe.top_k}; {train_cfg.num_steps} steps x "
           f"{train_cfg.batch_size} x {train_cfg.seq_len} bytes")
  header = (f"Byte-level LM, {scale}; data: {data} ({sources}), held-out split by document; "
            "bits per byte (lower is better).")
  table = markdown_table(["model", "params", "active params", "steps", "bpb all",
                          *[f"bpb {d}" for d in domains], "train minutes"], rows)
  if jax.process_index() == 0:
    plot_curves(runs, workdir)
  return {"runs": runs, "markdown": f"{header}\n\n{table}", "data": data, "scale": scale}


EXPERIMENT = Experiment(
    name="lm_tiny",
    paper="Sparse MoE LM vs its dense twin (Shazeer et al. 2017; Fedus et al. 2021)",
    config="configs/lm_tiny.py",
    run=run,
    claims=(Claim("moe_beats_dense", "MoE LM reaches lower held-out bits per byte than its dense "
                  "twin at equal active parameters and steps", "runs.moe.final.bpb_all", "<",
                  "runs.dense.final.bpb_all",
                  "up to 7x faster pre-training than T5 at equal FLOPs per token (Fedus et al. 2021)"),),
)
