"""HoME and its baselines on synthetic many-task recommendation data.

Paper: Wang, Cao, Fu, Gai, Zhou. "HoME: Hierarchy of Multi-Gate Experts for Multi-Task Learning at
Kuaishou", arXiv 2408.05430 (KDD 2025). Baselines: shared-bottom; MMoE (Ma et al., KDD 2018);
CGC and PLE (Tang et al., RecSys 2020).

Command (default reproduction):
  python -m experiments.home --config=configs/home.py --workdir=/tmp/home
Quick smoke run (seconds, used by the tests): --config=configs/home.py:quick

Data (synthetic, moe_jax/recsys/synthetic.py): MMoE's protocol generalised to 8 tasks in 2 groups
("watch": rates 0.3 0.2 0.1 0.05; "interact": 0.3 0.02 0.01 0.005), within-group cosine p_within=0.7,
across-group factor p_across=0.3; 250k rows per seed (20% test), 6 categorical fields (user id first)
+ 8 dense features. Sparse tasks: positive rate <= 0.02. Every model trains with the same data, steps,
batch, optimiser and seeds (0, 1, 2; a seed changes the data draw, the init and the data order).

Deviations from the paper, for CPU scale: one hidden layer of 64 then 32 units per expert (paper sizes
unknown); 2 + 2x2 meta experts and 2 global + 1 per group + 1 per task task-level experts; linear gates.
Choices where the paper body could not be read (config fields of the `home` entry): task-level experts
and gates read their group's meta representation; self-gates on both levels over each gate's own experts;
feature-gate rank 8, one gate per expert; Swish with beta = 1; BatchNorm after every expert layer.
The `home_no_*` entries turn one component off each (the paper's ablation); `no_norm` gives ReLU experts.

Expected result (default preset, measured on 2 shared CPU cores): see experiments/home.py's report
in results.md; numbers are recorded in the docstring below once measured.
"""
from __future__ import annotations

import ml_collections

EXPERT = (64, 32)
TOWER = (16,)


def _home(**overrides):
  spec = dict(kind="home", meta_global=2, meta_per_group=2, task_global=2, task_per_group=1,
              task_per_task=1, meta_hidden=EXPERT, task_hidden=(32,), tower_hidden=TOWER,
              expert_norm=True, hierarchy_mask=True, feature_gate_rank=8, self_gate=True)
  spec.update(overrides)
  return spec


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seeds = (0, 1, 2)
  c.embed_dim = 8
  c.data = ml_collections.ConfigDict(dict(
      kind="synthetic",  # or "kuairand" (then set path)
      task_names=("watch_a", "watch_b", "watch_c", "watch_d",
                  "click", "like", "comment", "forward"),
      groups=(0, 0, 0, 0, 1, 1, 1, 1),
      positive_rates=(0.3, 0.2, 0.1, 0.05, 0.3, 0.02, 0.01, 0.005),
      sparse_rate=0.02,  # tasks with a train positive rate <= this are "sparse"
      num_rows=250_000, test_fraction=0.2,
      p_within=0.7, p_across=0.3, scale=1.0, num_sines=5, noise=0.5,
      num_dense=8, vocab_sizes=(1000, 1000, 50, 50, 50, 50), latent_per_field=4,
      # kuairand only: a KuaiRand log CSV and its columns (user_id first among sparse_columns).
      path="", sparse_columns=("user_id", "video_id", "tab"), dense_columns=("duration_ms",),
      label_columns=("is_click", "long_view", "is_like", "is_follow", "is_comment",
                     "is_forward", "is_hate"),
      label_groups=(1, 0, 1, 1, 1, 1, 1),  # watch: long_view; interact: the rest
      max_rows=0,
  ))
  c.train = ml_collections.ConfigDict(dict(steps=1500, batch_size=512, learning_rate=2e-3))
  c.diagnostic_rows = 4096
  c.models = ml_collections.ConfigDict(dict(
      shared_bottom=dict(kind="shared_bottom", bottom_hidden=EXPERT, tower_hidden=TOWER),
      mmoe=dict(kind="mmoe", num_experts=8, expert_hidden=EXPERT, tower_hidden=TOWER),
      cgc=dict(kind="ple", num_levels=1, num_specific=1, num_shared=2, expert_hidden=EXPERT,
               tower_hidden=TOWER),
      ple=dict(kind="ple", num_levels=2, num_specific=1, num_shared=2, expert_hidden=EXPERT,
               tower_hidden=TOWER),
      home=_home(),
      home_no_norm=_home(expert_norm=False),
      home_no_mask=_home(hierarchy_mask=False),
      home_no_feature_gate=_home(feature_gate_rank=0),
      home_no_self_gate=_home(self_gate=False),
  ))
  if preset == "quick":
    c.seeds = (0, 1)
    c.data.num_rows = 6000
    c.data.vocab_sizes = (50, 50, 10, 10, 10, 10)
    c.data.positive_rates = (0.3, 0.2, 0.1, 0.05, 0.3, 0.1, 0.05, 0.05)
    c.data.sparse_rate = 0.05
    c.train.steps = 20
    c.train.batch_size = 128
    c.diagnostic_rows = 512
    c.models = ml_collections.ConfigDict({k: c.models[k].to_dict()
                                          for k in ("mmoe", "ple", "home")})
  elif preset:
    raise ValueError(f"unknown preset {preset!r}; use '' or 'quick'")
  return c
