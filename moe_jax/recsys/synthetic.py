"""The MMoE synthetic protocol (Ma et al., KDD 2018, sec. 3.2) generalised to many tasks in groups,
with recommender-style inputs and binary labels from dense to sparse positive rates.

MMoE's two-task protocol: orthogonal unit vectors u1, u2; w1 = c u1, w2 = c (p u1 + sqrt(1-p^2) u2);
x ~ N(0, I_d); y_i = w_i^T x + sum_{j=1..m} sin(alpha_j w_i^T x + beta_j) + eps_i, with the same alpha, beta
for every task; p = cos(w1, w2) controls how related the tasks are.

Generalisation (this file). Orthonormal u_0 (global), u_g (one per group), u_t (one per task);
  z_g = sqrt(p_across) u_0 + sqrt(1 - p_across) u_g,     w_t = c (sqrt(p_within) z_{g(t)} + sqrt(1 - p_within) u_t),
so cos(w_t, w_s) = p_within inside a group and p_within * p_across across groups; one group of two tasks
is MMoE's protocol with p = p_within. The latent x is what a recommender sees through its features: dense
features (x's first coordinates, given to the model as they are) and categorical fields whose ids carry a
hidden N(0, I_k) vector each (the model sees only the ids and must learn embeddings). Binary label:
label_t = [y_t > the (1 - rate_t) quantile of y_t], so task t has positive rate rate_t exactly.

Dense feature form (`dense_form`): "standard" hands the model the latent coordinates z_j ~ N(0, 1);
"lognormal" hands it s_j * exp(z_j), as raw statistics in a log arrive (counts, durations in ms):
non-negative, heavy-tailed, with per-feature scales s_j log-spaced over [1, dense_scale_max] (assigned
to features in random order). The labels are the same functions of z in both forms.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_choice, check_positive, require

DENSE_FORMS = ("standard", "lognormal")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig(Section):
  """The `data` section of kind "synthetic": one draw of `make_synthetic` per seed.

  task_names: one per task (empty: task_0, task_1, ...); groups: each task's group;
  positive_rates: each task's exact positive rate; num_rows, test_fraction: rows per seed and the
  share held out (random rows); p_within, p_across, scale, num_sines, noise: the protocol above;
  num_dense, vocab_sizes, latent_per_field: the inputs; dense_form, dense_scale_max: see above.
  """
  kind: str = "synthetic"
  task_names: tuple[str, ...] = ()
  groups: tuple[int, ...] = (0, 0)
  positive_rates: tuple[float, ...] = (0.3, 0.3)
  num_rows: int = 10_000
  test_fraction: float = 0.2
  p_within: float = 0.5
  p_across: float = 0.0
  scale: float = 1.0
  num_sines: int = 5
  noise: float = 0.5
  num_dense: int = 8
  vocab_sizes: tuple[int, ...] = (100,)
  latent_per_field: int = 4
  dense_form: str = "standard"
  dense_scale_max: float = 1.0

  def __post_init__(self):
    check_positive("num_rows", self.num_rows)
    require(len(self.groups) > 0 and min(self.groups) >= 0, "groups",
            f"got {self.groups}", "give each task a group index 0, 1, ...")
    require(not self.task_names or len(self.task_names) == len(self.groups), "task_names",
            f"{len(self.task_names)} names for {len(self.groups)} tasks",
            "give one name per task (or none)")
    require(len(self.positive_rates) == len(self.groups), "positive_rates",
            f"{len(self.positive_rates)} rates for {len(self.groups)} tasks",
            "give one rate per task")
    require(all(0 < r < 1 for r in self.positive_rates), "positive_rates",
            f"rates must lie in (0, 1), got {list(self.positive_rates)}",
            "use rates such as 0.3 .. 0.005")
    for name in ("p_within", "p_across"):
      p = getattr(self, name)
      require(0.0 <= p <= 1.0, name, f"must lie in [0, 1], got {p}", "use a cosine in [0, 1]")
    check_choice("dense_form", self.dense_form, DENSE_FORMS)
    require(self.dense_scale_max >= 1.0, "dense_scale_max", f"got {self.dense_scale_max}",
            "use 1 (one scale) or more (scales log-spaced over [1, dense_scale_max])")

  @property
  def names(self) -> list[str]:
    """The task names, generated where none are given."""
    return list(self.task_names) or [f"task_{t}" for t in range(len(self.groups))]


def task_directions(rng: np.random.Generator, dim: int, groups: Sequence[int], p_within: float,
                    p_across: float, scale: float) -> np.ndarray:
  """Returns w [T, dim] with the cosine structure above (p_within, p_across in [0, 1])."""
  groups = np.asarray(groups)
  c, t = int(groups.max()) + 1, groups.size
  require(1 + c + t <= dim, "data.latent_dim", f"{1 + c + t} orthogonal directions need "
          f"latent dim >= {1 + c + t}, got {dim}", "add dense features or categorical fields")
  basis, _ = np.linalg.qr(rng.standard_normal((dim, 1 + c + t)))
  u0, ug, ut = basis[:, 0], basis[:, 1:1 + c].T, basis[:, 1 + c:].T
  z = np.sqrt(p_across) * u0 + np.sqrt(1 - p_across) * ug  # [C, dim]
  return scale * (np.sqrt(p_within) * z[groups] + np.sqrt(1 - p_within) * ut)


def make_synthetic(config: SyntheticConfig, seed: int = 0) -> dict:
  """Draws one data set.

  Returns a dict of numpy arrays: sparse int32 [N, F] (field 0 is the user id, used by GAUC),
  dense float32 [N, D_d], labels float32 [N, T] (0/1), scores float32 [N, T] (the continuous y).
  """
  rng = np.random.default_rng(seed)
  dense = rng.standard_normal((config.num_rows, config.num_dense))
  tables = [rng.standard_normal((v, config.latent_per_field)) for v in config.vocab_sizes]
  sparse = np.stack([rng.integers(0, v, config.num_rows) for v in config.vocab_sizes], axis=1)
  latent = np.concatenate([dense] + [tab[sparse[:, i]] for i, tab in enumerate(tables)], axis=1)
  w = task_directions(rng, latent.shape[1], config.groups, config.p_within, config.p_across,
                      config.scale)
  alpha, beta = rng.standard_normal(config.num_sines), rng.standard_normal(config.num_sines)
  s = latent @ w.T  # [N, T]
  y = s + np.sin(s[..., None] * alpha + beta).sum(-1) + config.noise * rng.standard_normal(s.shape)
  thresholds = np.array([np.quantile(y[:, t], 1.0 - r)
                         for t, r in enumerate(config.positive_rates)])
  if config.dense_form == "lognormal":  # drawn last: latent, labels, ids equal the standard draw
    scales = np.logspace(0.0, np.log10(config.dense_scale_max), config.num_dense)[
        rng.permutation(config.num_dense)]
    dense = scales * np.exp(dense)
  return {"sparse": sparse.astype(np.int32), "dense": dense.astype(np.float32),
          "labels": (y > thresholds).astype(np.float32), "scores": y.astype(np.float32)}


def split(data: dict, test_fraction: float, seed: int = 0) -> tuple[dict, dict]:
  """Random row split into (train, test) dicts with the same keys."""
  require(0 < test_fraction < 1, "data.test_fraction", f"got {test_fraction}", "use e.g. 0.2")
  n = len(data["labels"])
  perm = np.random.default_rng(seed).permutation(n)
  cut = int(round(n * (1 - test_fraction)))
  take = lambda rows: {k: v[rows] for k, v in data.items()}
  return take(perm[:cut]), take(perm[cut:])
