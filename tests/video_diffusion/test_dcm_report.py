"""DCM's paired-by-seed cells against NumPy, and the figures it writes."""
import numpy as np
import pytest

from moe_jax.video_diffusion import dcm_report


def test_paired_cells_match_numpy():
  rng = np.random.default_rng(0)
  a = {"fd_per_seed": list(rng.normal(60, 5, 5)), "temporal_err_per_seed": list(rng.normal(size=5))}
  b = {"fd_per_seed": list(rng.normal(60, 5, 5)), "temporal_err_per_seed": list(rng.normal(size=5))}
  cells = dcm_report.paired_cells(a, b, ("fd", "temporal_err"))
  for cell, key in zip(cells, ("fd", "temporal_err")):
    d = np.subtract(a[key + "_per_seed"], b[key + "_per_seed"], dtype=np.float64)
    se = d.std(ddof=1) / np.sqrt(len(d))
    assert cell == f"{d.mean():+.4g} ± {se:.2g} ({int((d < 0).sum())}/5)"


def test_a_single_seed_has_no_standard_error():
  assert np.isnan(dcm_report.standard_error(np.array([1.0])))
  assert dcm_report.standard_error(np.array([1.0, 3.0])) == pytest.approx(1.0)


def test_plots_write_every_figure(tmp_path):
  rng = np.random.default_rng(1)
  clips = {"teacher 11": rng.uniform(-1, 1, (4, 3, 10, 10, 1)),
           "cm 4": rng.uniform(-1, 1, (4, 3, 10, 10, 1))}
  sigmas = np.linspace(0.1, 1.0, 6)
  curves = {"CM": (sigmas, rng.uniform(0.1, 1, 6), rng.uniform(0.1, 1, 6))}
  timeline = {"sigma": list(sigmas[::-1]), "layout": list(sigmas), "motion": list(sigmas)}
  dcm_report.plots(str(tmp_path), clips, curves, timeline, 0.5, {"cm: cd": rng.uniform(size=30)})
  for name in ("samples.png", "samples.gif", "per_timestep.png", "synthesis_timeline.png",
               "training.png"):
    assert (tmp_path / name).stat().st_size > 0
