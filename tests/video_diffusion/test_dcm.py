"""DCM's recipe pieces on small inputs: per-seed summaries, the discriminator's last quarter, the
per-phase statistics, the variants and swaps, and the claims evaluated on results."""
import numpy as np
import pytest

from moe_jax.utils.experiment import evaluate_claims
from moe_jax.video_diffusion import dcm, dcm_losses, dcm_paper
from moe_jax.video_diffusion.dcm_variants import EXPERT_SWAPS, LABELS, VARIANTS


def test_seed_summary_matches_numpy():
  rng = np.random.default_rng(0)
  runs = [{"fd": float(a), "temporal_err": float(b)} for a, b in rng.normal(size=(5, 2))]
  out = dcm.seed_summary(runs)
  for key in ("fd", "temporal_err"):
    values = np.array([r[key] for r in runs], np.float64)
    assert out[key] == pytest.approx(values.mean())
    assert out[key + "_std"] == pytest.approx(values.std())  # population std, as reported
    assert out[key + "_per_seed"] == list(values)


def test_discriminator_summary_averages_the_last_quarter_of_adversarial_stages():
  d = np.random.default_rng(1).uniform(1.9, 2.1, 9)
  histories = {"dcm detail expert": [{"cd": 0.1, "gan_d": float(x)} for x in d],
               "cm": [{"cd": 0.1}] * 4,
               "short": [{"gan_d": 3.0}]}
  out = dcm.discriminator_summary(histories, "hinge")
  assert out["chance"] == dcm_losses.discriminator_chance_loss("hinge") == 2.0
  assert set(out["last_quarter_loss"]) == {"dcm detail expert", "short"}
  assert out["last_quarter_loss"]["dcm detail expert"] == pytest.approx(d[-2:].mean())
  assert out["last_quarter_loss"]["short"] == 3.0


def test_phase_stats_split_the_history_by_phase():
  history = [{"phase": "semantic", "cd": 1.0, "grad_norm": 2.0},
             {"phase": "detail", "cd": 3.0, "grad_norm": 5.0},
             {"phase": "semantic", "cd": 2.0, "grad_norm": 4.0}]
  out = dcm.phase_stats(history)
  assert out["semantic"] == {"mean_cd_loss": 1.5, "mean_grad_norm": 3.0}
  assert out["detail"] == {"mean_cd_loss": 3.0, "mean_grad_norm": 5.0}


def test_variants_labels_and_swaps_agree():
  assert set(LABELS) == set(VARIANTS)
  assert not VARIANTS["cm"].split and not (VARIANTS["cm"].tc or VARIANTS["cm"].gan)
  for name, (sem_from, det_from) in EXPERT_SWAPS.items():
    assert name in dcm_paper.FIG3 and {sem_from, det_from} == {"cm", "dcm"}


def _results(dcm_fd, cm_fd):
  """The result paths the claims read, with DCM's and CM's FD given and every other metric set
  so that DCM / the swaps are better than CM."""
  cm = {"fd": cm_fd, "fd_teacher": 2.0, "temporal_err": 0.04, "detail_err": 0.2}
  return {"methods": {"cm": {"4": cm},
                      "dcm": {"4": {**cm, "fd": dcm_fd, "temporal_err": 0.03, "detail_err": 0.1}}},
          "expert_swap": {"SemE+VCM": {"fd_teacher": 1.0, "fd": cm_fd + 1},
                          "VCM+DetE": {"fd_teacher": 3.0, "fd": cm_fd - 1}}}


@pytest.mark.parametrize("dcm_fd,cm_fd", [(60.0, 61.5), (66.9, 61.5)])
def test_claims_are_computed_from_the_numbers(dcm_fd, cm_fd):
  claims = evaluate_claims(dcm.EXPERIMENT, _results(dcm_fd, cm_fd))
  assert set(claims) == {c.key for c in dcm.CLAIMS}
  assert claims["dcm_fd_below_cm"]["holds"] is (dcm_fd < cm_fd)
  assert claims["dcm_fd_below_cm"]["ours"] == dcm_fd and claims["dcm_fd_below_cm"]["than"] == cm_fd
  assert all(claims[k]["holds"] is True for k in ("dcm_temporal_below_cm", "dcm_detail_below_cm",
                                                  "semantic_expert_nearer_teacher",
                                                  "detail_expert_fd_below_cm"))
  assert "83.83" in claims["dcm_fd_below_cm"]["paper"]  # the paper's own figure, from Table 1
  assert str(dcm_paper.FIG3["SemE+VCM"]) in claims["semantic_expert_nearer_teacher"]["paper"]


def test_a_claim_whose_numbers_are_missing_is_not_measured():
  results = _results(60.0, 61.5)
  del results["expert_swap"]
  claims = evaluate_claims(dcm.EXPERIMENT, results)
  assert claims["semantic_expert_nearer_teacher"]["holds"] is None
  assert "expert_swap" in claims["semantic_expert_nearer_teacher"]["error"]
  assert claims["dcm_fd_below_cm"]["holds"] is True
