"""GE / LE / GN customization as an experiment: the recipe, its results and the paper's claims.

Off the device, the LeNet5 global expert (GE) is trained once on the generic set and frozen
(checkpoint DIR/checkpoints/ge). Then, per simulated user, a local expert (LE) and a gating network
(GN) per gate target are trained on the user's small set (DIR/checkpoints/user_XX). Each user's test
set and the generic test set are scored with GE alone, LE alone and GE+LE+GN (the first gate
target); the costs per example of GE, LE and GN give LE + GN's overhead.
"""
from __future__ import annotations

import os

import jax
import numpy as np

from moe_jax.customization import (costs, data, gating, lenet, local_expert, mixture, report,
                                   train, users)
from moe_jax.customization.config import CustomizationConfig
from moe_jax.utils.experiment import Claim, Experiment
from moe_jax.utils.reporting import progress


def accuracy(logits, labels) -> float:
  return float(np.mean(np.argmax(np.asarray(logits), -1) == labels))


def evaluate(out_user: dict, y_user, out_generic: dict, y_generic, *methods: str) -> dict:
  """Accuracies of `methods` on the user's and the generic test set, and the share sent to LE."""
  result = {}
  for m in methods:
    result[f"{m}_user_acc"] = accuracy(out_user[mixture.METHODS[m]], y_user)
    result[f"{m}_generic_acc"] = accuracy(out_generic[mixture.METHODS[m]], y_generic)
  result["to_local_user"] = float(np.mean(out_user["to_local"]))
  result["to_local_generic"] = float(np.mean(out_generic["to_local"]))
  return result


def _mean(rows: list[dict]) -> dict:
  """The mean over rows of every numeric field."""
  return {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k not in ("user", "style")}


def _first_per_class(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
  return images[[int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]]


def run(config: CustomizationConfig, workdir: str) -> dict:
  """Trains GE, then LE + GN per user; returns the contract's results and writes the plots."""
  c = config
  images, labels, data_name = data.load(c.data.source, box=c.data.box,
                                        emnist_dir=c.data.emnist_dir,
                                        emnist_split=c.data.emnist_split)
  split = data.stratified_split(labels, {"ge_train": c.data.ge_train_per_class,
                                         "generic_test": c.data.generic_test_per_class}, c.seed)
  num_classes = int(labels.max()) + 1
  ge = lenet.LeNet5(num_classes, c.ge.input_pad, c.ge.activation, c.ge.pooling,
                    c.ge.feature_layer)
  le = local_expert.LocalExpert(num_classes, c.le.hidden)
  gn = gating.GatingNetwork(c.gn.hidden)
  targets = c.gn.targets

  # Off the device: GE on the generic training set, then frozen.
  ge_params = train.train_global_expert(ge, images[split["ge_train"]], labels[split["ge_train"]],
                                        c.ge, c.seed)
  train.save_checkpoint(os.path.join(workdir, "checkpoints", "ge"), ge_params)
  ge_apply = jax.jit(lambda x: ge.apply({"params": ge_params}, x))
  moe_apply = jax.jit(lambda lp, gp, x: mixture.predict(ge, ge_params, le, lp, gn, gp, x,
                                                        c.gn.threshold))

  rng = np.random.default_rng(c.seed + 1)
  x_generic, y_generic = images[split["generic_test"]], labels[split["generic_test"]]
  reference, = data.per_class_draw(split["ge_train"], labels, (c.gn.reference_per_class,), rng)
  _, reference_features = ge_apply(images[reference])
  u_cfg = c.users
  styles = users.make_styles(
      u_cfg.num_users, slant=u_cfg.slant, stroke_max=u_cfg.stroke_max,
      elastic_alpha=u_cfg.elastic_alpha, elastic_sigma=u_cfg.elastic_sigma,
      jitter_alpha=u_cfg.jitter_alpha, glyph_fraction=u_cfg.glyph_fraction, seed=c.seed + 2)

  rows, ablation, samples = [], {t: [] for t in targets}, []
  for u in progress(range(u_cfg.num_users), total=u_cfg.num_users, desc="users"):
    tr, te = data.per_class_draw(split["pool"], labels, (u_cfg.train_per_class,
                                                         u_cfg.test_per_class), rng)
    x_tr = users.render(images[tr], labels[tr], styles[u], seed=c.seed + 1000 + 2 * u)
    x_te = users.render(images[te], labels[te], styles[u], seed=c.seed + 1001 + 2 * u)
    samples.append(_first_per_class(x_tr, labels[tr]))

    # On the device: LE, then GN, from the user's set (and, for gate target 'source', the generic
    # reference set); GE is frozen and only its features are read.
    ge_logits_tr, features_tr = ge_apply(x_tr)
    le_params = train.train_local_expert(le, np.asarray(features_tr), labels[tr], c.le,
                                         c.seed + u)
    gn_params = {}
    for t in targets:
      gn_x, gn_y = gating.training_set(t, features_tr, ge_logits_tr, labels[tr],
                                       reference_features)
      gn_params[t] = train.train_gate(gn, gn_x, gn_y, c.gn, c.seed + u)
      out_user = moe_apply(le_params, gn_params[t], x_te)
      out_generic = moe_apply(le_params, gn_params[t], x_generic)
      ablation[t].append(evaluate(out_user, labels[te], out_generic, y_generic, "moe"))
      if t == targets[0]:
        rows.append({"user": u, "style": styles[u].describe(),
                     **evaluate(out_user, labels[te], out_generic, y_generic, *mixture.METHODS),
                     "ge_errors_train": float(np.mean(gating.ge_errors(ge_logits_tr,
                                                                        labels[tr])))})
    train.save_checkpoint(os.path.join(workdir, "checkpoints", f"user_{u:02d}"),
                          {"le": le_params, "gn": gn_params})

  # Costs per example of GE, LE and GN, and LE + GN over GE.
  example = images[:1]
  _, features = ge_apply(example)
  networks = {"ge": (ge, ge_params, example), "le": (le, le_params, features),
              "gn": (gn, gn_params[targets[0]], features)}
  cost = {name: costs.total_cost(costs.layer_costs(*net), c.costs.read_weight)
          for name, net in networks.items()}
  overhead = costs.overhead([cost["le"], cost["gn"]], cost["ge"])

  mean = _mean(rows)
  results = {**mean, "generic_drop": mean["ge_generic_acc"] - mean["moe_generic_acc"],
             "overhead": overhead["energy"], "overhead_params": overhead["params"],
             "overhead_flops": overhead["flops"], "gn_target": targets[0], "users": rows,
             "gate_targets": {t: _mean(v) for t, v in ablation.items()}, "costs": cost,
             "num_users": u_cfg.num_users}
  kind = "shipped" if c.data.source == "digits" else "user"
  results["data"] = f"{kind}: {data_name}, written by {u_cfg.num_users} simulated users"
  results["scale"] = (f"LeNet5 GE, {c.ge.steps} steps on {c.data.ge_train_per_class}/class; "
                      f"{u_cfg.num_users} users x {u_cfg.train_per_class}/class, LE + GN "
                      f"{c.le.steps} + {c.gn.steps} steps")
  results["markdown"] = report.markdown(c, results, data_name, len(y_generic))
  report.plot_users(rows, workdir)
  report.plot_summary(rows, overhead, workdir)
  report.plot_samples(_first_per_class(x_generic, y_generic), samples, workdir)
  return results


EXPERIMENT = Experiment(
    name="customization",
    paper="A Mixture of Expert Approach for Low-Cost Customization of Deep Neural Networks "
          "(Zhang, Davoodi & Hu, arXiv:1811.00056)",
    config="configs/customization.py",
    run=run,
    claims=(
        Claim("user_accuracy", "GE+LE+GN is more accurate than GE alone on the users' test sets "
              "(mean over users)", "moe_user_acc", ">", "ge_user_acc",
              "user accuracy \"significantly enhanced\" (abstract)"),
        Claim("generic_accuracy", "GE+LE+GN loses at most 1 point of GE's generic test accuracy "
              "(mean over users)", "generic_drop", "<=", 0.01,
              "\"almost no degradation\" on the generic set (abstract)"),
        Claim("energy_overhead", "LE + GN cost at most 2.5% of GE's energy per example "
              "(FLOPs + memory reads)", "overhead", "<=", costs.PAPER_OVERHEAD,
              "\"around 2.5%\" of GE's energy (abstract)"),
        Claim("size_overhead", "LE + GN hold at most 2.5% of GE's parameters", "overhead_params",
              "<=", costs.PAPER_OVERHEAD, "\"around 2.5%\" of GE's network size (abstract)"),
    ),
)
