"""HoME's reproduction: every multi-task model trained on the same data, seeds and steps.

Wang et al. (arXiv 2408.05430) name three anomalies of multi-gate MoE at Kuaishou (expert
collapse, degradation, underfitting) and build HoME to fix them. `run` trains each entry of
`models` (HoME, its baselines and its ablations) on every seed's data draw at once (train.fit),
scores held-out AUC / GAUC per task, measures the experts (zero activations, output scales, gate
weights) and returns the contract's results; `EXPERIMENT.claims` checks the paper's claims on
them; home_report.py renders the tables and plots.
"""
from __future__ import annotations

import dataclasses
import time
from typing import NamedTuple

import numpy as np

from moe_jax.recsys import home_report, kuairand, metrics, models, synthetic, train
from moe_jax.recsys.home import HoMEConfig
from moe_jax.recsys.kuairand import KuaiRandConfig
from moe_jax.recsys.mmoe import MMoEConfig
from moe_jax.recsys.models import ModelConfig
from moe_jax.recsys.synthetic import SyntheticConfig
from moe_jax.recsys.train import FitConfig
from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_positive, require
from moe_jax.utils.experiment import Claim, Experiment
from moe_jax.utils.trees import param_count


@dataclasses.dataclass(frozen=True)
class HomeExperimentConfig(Section):
  """seeds: one data draw, init and data order each (trained together); embed_dim: width of
  every categorical embedding; sparse_rate: tasks whose train positive rate is <= this are
  "sparse"; diagnostic_rows: test rows the expert diagnostics read; data: the synthetic
  protocol or a KuaiRand log; train: the optimisation every model shares; models: name -> model
  entry (its `kind` picks shared_bottom / mmoe / ple / home)."""
  seeds: tuple[int, ...] = (0,)
  embed_dim: int = 8
  sparse_rate: float = 0.02
  diagnostic_rows: int = 4096
  data: SyntheticConfig | KuaiRandConfig = SyntheticConfig()
  train: FitConfig = FitConfig()
  models: dict[str, ModelConfig] = dataclasses.field(
      default_factory=lambda: {"mmoe": MMoEConfig(), "home": HoMEConfig()})

  def __post_init__(self):
    require(len(self.seeds) > 0, "seeds", "is empty", "give seeds such as 0,1,2")
    check_positive("embed_dim", self.embed_dim)
    require(0 < self.sparse_rate < 1, "sparse_rate", f"must lie in (0, 1), got "
            f"{self.sparse_rate}", "use a positive rate such as 0.02")
    check_positive("diagnostic_rows", self.diagnostic_rows)
    require(len(self.models) > 0, "models", "is empty", "give at least one model entry")


class Tasks(NamedTuple):
  """Per-seed train / test sets (dicts of arrays, see synthetic.py) and what models need."""
  train: list[dict]
  test: list[dict]
  vocab_sizes: tuple[int, ...]
  names: list[str]
  groups: tuple[int, ...]
  description: str  # the contract's "data"


def load_data(config: HomeExperimentConfig) -> Tasks:
  """Synthetic: one draw and random split per seed. KuaiRand: one log, time split, every seed."""
  d, n = config.data, len(config.seeds)
  if isinstance(d, SyntheticConfig):
    sets = [synthetic.split(synthetic.make_synthetic(d, seed), d.test_fraction, seed)
            for seed in config.seeds]
    scales = f" (scales 1..{d.dense_scale_max:g})" if d.dense_form == "lognormal" else ""
    description = (f"synthetic: MMoE protocol, {len(d.groups)} tasks in {max(d.groups) + 1} "
                   f"groups, p_within={d.p_within}, p_across={d.p_across}, dense features "
                   f"{d.dense_form}{scales}, {d.num_rows} rows/seed")
    return Tasks([s[0] for s in sets], [s[1] for s in sets], tuple(d.vocab_sizes), d.names,
                 tuple(d.groups), description)
  data = kuairand.load_kuairand(d)
  tr, te = kuairand.time_split(data, d.test_fraction)
  return Tasks([tr] * n, [te] * n, tuple(data["vocab_sizes"]), data["task_names"],
               tuple(d.label_groups),
               f"user: KuaiRand log {d.path} ({len(data['labels'])} rows, time split)")


def evaluate(name: str, spec: ModelConfig, config: HomeExperimentConfig, tasks: Tasks,
             sparse: np.ndarray) -> tuple[dict, dict]:
  """Trains `spec` on every seed; returns (its results entry, its expert diagnostics)."""
  model = models.build_model(spec, vocab_sizes=tasks.vocab_sizes, embed_dim=config.embed_dim,
                             groups=tasks.groups)
  start = time.time()
  variables = train.fit(model, tasks.train, config.seeds, config.train, desc=name)
  probs = train.predict(model, variables, tasks.test)
  seconds = time.time() - start
  labels = [t["labels"] for t in tasks.test]
  aucs = np.array([[metrics.auc(y[:, k], p[:, k]) for k in range(len(tasks.names))]
                   for y, p in zip(labels, probs)])  # [S, T]
  gaucs = np.array([[metrics.gauc(y[:, k], p[:, k], t["sparse"][:, 0])
                     for k in range(len(tasks.names))]
                    for y, p, t in zip(labels, probs, tasks.test)])
  diag = metrics.expert_diagnostics(
      train.intermediates(model, variables, tasks.test, rows=config.diagnostic_rows),
      models.own_experts(model))
  mean_auc, sparse_auc = np.nanmean(aucs, 1), np.nanmean(aucs[:, sparse], 1)
  entry = {
      "mean_auc": float(mean_auc.mean()), "mean_auc_std": float(mean_auc.std()),
      "sparse_auc": float(sparse_auc.mean()), "sparse_auc_std": float(sparse_auc.std()),
      "mean_gauc": float(np.nanmean(gaucs)), "sparse_gauc": float(np.nanmean(gaucs[:, sparse])),
      "task_auc": aucs.mean(0), "task_gauc": gaucs.mean(0),
      "mean_auc_per_seed": mean_auc, "sparse_auc_per_seed": sparse_auc,
      "max_zero_frac": diag["max_zero_frac"],
      "expert_std_ratio": float(diag["out_std"].max() / max(diag["out_std"].min(), 1e-12)),
      "sparse_own_share": (float(diag["own_share"][sparse].mean())
                           if "own_share" in diag else None),
      "params": param_count(variables["params"]) // len(config.seeds),  # stacked over seeds
      "seconds": seconds, "expert_zero_frac": diag["zero_frac"],
      "expert_out_mean": diag["out_mean"], "expert_out_std": diag["out_std"],
  }
  return entry, diag


def run(config: HomeExperimentConfig, workdir: str) -> dict:
  """Every model of `config.models` on the same data; writes the plots into workdir."""
  tasks = load_data(config)
  rates = np.mean([t["labels"].mean(0) for t in tasks.train], 0)
  sparse = np.flatnonzero(rates <= config.sparse_rate)
  require(sparse.size > 0, "sparse_rate", f"no task has a positive rate <= "
          f"{config.sparse_rate} (rates {np.round(rates, 4).tolist()})", "raise sparse_rate")
  entries, diagnostics = {}, {}
  for name, spec in config.models.items():
    entries[name], diagnostics[name] = evaluate(name, spec, config, tasks, sparse)
  relu = [n for n, spec in config.models.items() if spec.activation == "relu"]
  worst = max(relu, key=lambda n: entries[n]["max_zero_frac"], default=None)
  t = config.train
  results = {
      "models": entries, "tasks": tasks.names, "groups": list(tasks.groups),
      "positive_rates": rates, "sparse_tasks": [tasks.names[k] for k in sparse],
      "collapse": ({"relu_max_zero_frac": entries[worst]["max_zero_frac"], "model": worst}
                   if worst else {}),
      "data": tasks.description,
      "scale": (f"{len(entries)} models, {t.steps} Adam steps x {t.batch_size} rows, "
                f"{len(config.seeds)} seeds"),
  }
  results["markdown"] = home_report.markdown(results, config)
  home_report.plot_gates(diagnostics, tasks.names, workdir)
  home_report.plot_experts(diagnostics, workdir)
  return results


_PAPER = "arXiv 2408.05430, abstract"
_BALANCED = ('"we propose HoME to achieve a simple, efficient and balanced MoE system" '
             f"({_PAPER}; its GAUC tables could not be read here)")
_SPARSE = ('"some data-sparse prediction tasks tend to ignore their specific-experts" '
           f"({_PAPER}: expert underfitting, which HoME fixes)")
_ANOMALIES = (f'"three anomalies that seriously affect model performances" ({_PAPER}; each '
              "component fixes one; the ablation table could not be read here)")
PAPER_ZERO_FRAC = 0.9  # "some experts have over 90% zero activations with ReLU"


def _beats(base: str, title: str, metric: str, paper: str) -> Claim:
  """HoME's seed-mean `metric` ("mean" | "sparse") AUC above that of the model `base`."""
  return Claim(f"home_beats_{base}_{metric}",
               f"HoME beats {title} on {metric.replace('sparse', 'sparse-task')} test AUC",
               f"models.home.{metric}_auc", ">", f"models.{base}.{metric}_auc", paper)


def _helps(part: str, text: str) -> Claim:
  """The ablation `home_no_<part>` below HoME on mean AUC."""
  return Claim(f"{part}_helps", f"Removing {text} lowers HoME's mean test AUC",
               "models.home.mean_auc", ">", f"models.home_no_{part}.mean_auc", _ANOMALIES)


CLAIMS = (
    _beats("mmoe", "MMoE", "mean", _BALANCED), _beats("mmoe", "MMoE", "sparse", _SPARSE),
    _beats("ple", "PLE", "mean", _BALANCED), _beats("ple", "PLE", "sparse", _SPARSE),
    Claim("relu_expert_collapse", "Some ReLU expert is over 90% zero (expert collapse)",
          "collapse.relu_max_zero_frac", ">", PAPER_ZERO_FRAC,
          f'"some experts have over 90% zero activations with ReLU" ({_PAPER})'),
    Claim("norm_aligns_experts", "Expert normalisation + Swish narrows the spread of the "
          "experts' output scales", "models.home.expert_std_ratio", "<",
          "models.home_no_norm.expert_std_ratio",
          f'"experts\' output distributions are significantly different" ({_PAPER})'),
    _helps("norm", "expert normalisation + Swish"), _helps("mask", "the hierarchy mask"),
    _helps("feature_gate", "the feature-gates"), _helps("self_gate", "the self-gates"),
)

EXPERIMENT = Experiment(
    name="home",
    paper="HoME: Hierarchy of Multi-Gate Experts (Wang et al., KDD 2025, arXiv 2408.05430)",
    config="configs/home.py",
    run=run,
    claims=CLAIMS,
)
