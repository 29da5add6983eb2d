"""The synthetic many-task generator and the KuaiRand CSV loader."""
import csv

import numpy as np
import pytest
from scipy import stats

from moe_jax.recsys import kuairand, synthetic
from moe_jax.recsys.kuairand import KuaiRandConfig
from moe_jax.recsys.synthetic import SyntheticConfig
from moe_jax.utils.errors import ConfigError


def _two_tasks(p, seed):
  return synthetic.make_synthetic(SyntheticConfig(
      num_rows=20000, groups=(0, 0), positive_rates=(0.3, 0.3), p_within=p, p_across=0.0,
      num_dense=6, vocab_sizes=(20, 20), latent_per_field=2, noise=0.1), seed)


def test_label_correlation_falls_as_p_falls():
  ps = [1.0, 0.8, 0.5, 0.2]
  corr = [np.corrcoef(_two_tasks(p, 3)["labels"].T)[0, 1] for p in ps]
  assert np.all(np.diff(corr) < 0), corr
  assert corr[0] > 0.8


def test_task_directions_have_the_stated_cosines():
  rng = np.random.default_rng(0)
  groups = (0, 0, 1, 1, 2)
  w = synthetic.task_directions(rng, 16, groups, p_within=0.6, p_across=0.3, scale=2.0)
  norm = np.linalg.norm(w, axis=1)
  np.testing.assert_allclose(norm, 2.0, rtol=1e-10)
  cos = (w @ w.T) / np.outer(norm, norm)
  g = np.asarray(groups)
  same = (g[:, None] == g[None, :]) & ~np.eye(5, dtype=bool)
  across = g[:, None] != g[None, :]
  np.testing.assert_allclose(cos[same], 0.6, rtol=1e-10)
  np.testing.assert_allclose(cos[across], 0.18, rtol=1e-10)


def test_positive_rates_and_shapes():
  data = synthetic.make_synthetic(SyntheticConfig(
      num_rows=10000, groups=(0, 1, 1), positive_rates=(0.3, 0.05, 0.005), p_within=0.5,
      p_across=0.5, num_dense=3, vocab_sizes=(10, 4), latent_per_field=3), seed=1)
  np.testing.assert_allclose(data["labels"].mean(0), [0.3, 0.05, 0.005], atol=1e-3)
  assert data["sparse"].shape == (10000, 2) and data["dense"].shape == (10000, 3)
  assert data["sparse"][:, 1].max() < 4
  train, test = synthetic.split(data, 0.2, seed=0)
  assert len(train["labels"]) == 8000 and len(test["labels"]) == 2000
  with pytest.raises(ConfigError, match="^positive_rates: rates must lie in"):
    SyntheticConfig(groups=(0,), positive_rates=(1.5,))
  with pytest.raises(ConfigError, match="^task_names: 1 names for 3 tasks"):
    SyntheticConfig(groups=(0, 1, 1), positive_rates=(0.3, 0.05, 0.005), task_names=("a",))
  assert SyntheticConfig(groups=(0, 1)).names == ["task_0", "task_1"]


def test_lognormal_dense_form_rescales_the_standard_draw():
  kw = dict(num_rows=5000, groups=(0, 1), positive_rates=(0.3, 0.01), p_within=0.5,
            p_across=0.5, num_dense=4, vocab_sizes=(10,), latent_per_field=2)
  std = synthetic.make_synthetic(SyntheticConfig(**kw), seed=2)
  raw = synthetic.make_synthetic(SyntheticConfig(**kw, dense_form="lognormal",
                                                 dense_scale_max=1000.0), seed=2)
  np.testing.assert_array_equal(raw["labels"], std["labels"])
  np.testing.assert_array_equal(raw["sparse"], std["sparse"])
  assert raw["dense"].min() > 0
  scales = raw["dense"].astype(np.float64) / np.exp(std["dense"].astype(np.float64))
  np.testing.assert_allclose(scales, np.broadcast_to(scales[:1], scales.shape), rtol=1e-5)
  np.testing.assert_allclose(np.sort(scales[0]), [1.0, 10.0, 100.0, 1000.0], rtol=1e-5)
  assert np.all(stats.skew(raw["dense"], axis=0) > 3.0)  # heavy right tail (lognormal: ~6)
  with pytest.raises(ConfigError, match="^dense_form: unknown value 'log'"):
    SyntheticConfig(**kw, dense_form="log")


def write_kuairand_log(path, rows):
  header = ["user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like",
            "is_follow", "is_comment", "is_forward", "is_hate", "long_view", "play_time_ms",
            "duration_ms", "tab"]
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    rng = np.random.default_rng(0)
    for i in range(rows):
      writer.writerow([100 + i % 7, 5000 + i % 11, 20220408, 1200, 1649000000000 + i,
                       int(rng.random() < 0.4), int(rng.random() < 0.05), 0, 0, 0, 0,
                       int(rng.random() < 0.3), 1234, "" if i == 3 else 20000 + i, i % 3])


def test_kuairand_loader(tmp_path):
  path = tmp_path / "log_standard_small.csv"
  write_kuairand_log(path, 50)
  data = kuairand.load_kuairand(KuaiRandConfig(path=str(path)))
  assert data["sparse"].shape == (50, 3) and data["labels"].shape == (50, 7)
  assert data["vocab_sizes"] == [7, 11, 3]
  assert data["task_names"][0] == "is_click" and set(np.unique(data["labels"])) <= {0.0, 1.0}
  assert data["sparse"][:, 0].max() == 6 and data["sparse"][0, 0] == data["sparse"][7, 0]
  np.testing.assert_allclose(data["dense"].mean(), 0.0, atol=1e-5)
  train, test = kuairand.time_split(data, 0.2)
  assert len(train["labels"]) == 40 and len(test["labels"]) == 10
  assert kuairand.load_kuairand(KuaiRandConfig(path=str(path), max_rows=20))["labels"].shape == (
      20, 7)
  with pytest.raises(ConfigError, match="lacks columns"):
    kuairand.load_kuairand(KuaiRandConfig(path=str(path), dense_columns=("no_such_column",)))
  with pytest.raises(ConfigError, match="^data.path: no file"):
    kuairand.load_kuairand(KuaiRandConfig(path=str(tmp_path / "missing.csv")))
  with pytest.raises(ConfigError, match="^sparse_columns: .*user_id"):
    KuaiRandConfig(sparse_columns=("video_id", "user_id"))
