"""Fate's experiment: the quick preset end to end, its claims and its config."""
import json

import numpy as np
import pytest

from moe_jax.inference.fate import fate_experiment
from moe_jax.utils.errors import ConfigError
from moe_jax.utils.experiment import evaluate_claims, execute

EXPERIMENT = fate_experiment.EXPERIMENT


@pytest.mark.slow  # about 75 s of CPU: traces, two offloaded decoders, three evaluations
def test_quick_preset_end_to_end(tmp_path):
  config = EXPERIMENT.load_config("quick")
  execute(EXPERIMENT, config, str(tmp_path), echo=False)
  results = json.loads((tmp_path / "results.json").read_text())
  model = results["model"]
  assert (model["experts"], model["moe_layers"], model["top_k"]) == (4, 8, 1)
  scores = results["scores"]
  assert len(scores["cosine"]) == 7 and all(-1 <= c <= 1 for c in scores["cosine"])
  assert scores["recall"]["lod"]["1"] == [0.0] * 7
  for method in ("eap", "fate"):  # the top-2 prediction holds the top-1
    assert np.all(np.subtract(scores["recall"][method]["2"], scores["recall"][method]["1"]) >= 0)
  grid = results["timeline"]["gpu"]["grid"]
  assert len(grid) == 4 * 2 * 2 * 3  # budgets x allocations x policies x methods
  for r in grid:
    for phase in ("prefill", "decode"):
      assert 0 <= r[phase]["cache_hit_rate"] <= r[phase]["hit_rate"] <= 1
      assert r[phase]["stall_per_step"] <= r[phase]["time_per_step"]
    if r["method"] == "lod":  # nothing prefetched: every hit is a resident expert
      assert r["decode"]["prefetched"] == 0 and r["decode"]["wasted"] == 0
  assert len(results["timeline"]["measured"]["grid"]) == 4 * 3  # Fate's allocation and ARC
  quant = results["quant"]
  assert min(quant["error"]["int2"]) > max(quant["error"]["int4"]) > 0
  decoder = results["decoder"]
  assert decoder["max_logit_err"] < 1e-5 and decoder["fate"]["matches"]
  assert decoder["fate"]["measured"]["copies"] > 0
  claims = results["claims"]
  assert set(claims) == {c.key for c in EXPERIMENT.claims}
  assert all(c["holds"] is not None for c in claims.values()), claims
  markdown = (tmp_path / "results.md").read_text()
  assert "### Hit rates over budgets" in markdown and "## Claims" in markdown
  assert (tmp_path / "hit_rates.png").stat().st_size > 0


def test_claims_evaluate_from_the_numbers():
  summary = dict(cosine=0.9, recall_fate=0.8, recall_eap=0.5, coverage_fate=0.995,
                 hit_rate=0.98, hit_arc=0.9, hit_lru=0.91, hit_shallow=0.9, hit_uniform=0.8,
                 int2_error=0.3, int4_error=0.07, int4_bpb_increase=0.002, prefill_vs_lod=1.3,
                 decode_vs_lod=float("nan"), prefill_vs_eap=0.9, decode_vs_eap=1.1,
                 max_logit_err=1e-6, decoder_matches=1.0)
  holds = {k: c["holds"] for k, c in evaluate_claims(EXPERIMENT, {"summary": summary}).items()}
  assert holds == {"adjacent_cosine": True, "decode_recall": False, "fate_beats_eap": True,
                   "prefill_coverage": True, "hit_rate": False, "arc_over_lru": False,
                   "shallow_over_uniform": True, "int2_worse": True, "int4_keeps_quality": True,
                   "prefill_over_lod": True, "decode_over_lod": None, "prefill_over_eap": False,
                   "decode_over_eap": True, "same_logits": True, "decoder_matches_replay": True}


@pytest.mark.parametrize("overrides, message", [
    ({"requests.prompt_len": "32"}, "^requests.prompt_len: 32 leaves no decoded token"),
    ({"decoder.new_tokens": "9"}, "^decoder.new_tokens: 9 new tokens after a prompt of 24"),
    ({"offload.budgets": "0.5,1.5"}, "^offload.budgets: must be fractions in"),
    ({"offload.int2_rate": "2"}, "^offload.int2_rate: 2.0 is not in"),
    ({"decoder.requests": "1"}, "^decoder.requests: must be >= 2"),
    ({"link.latency_us": "-1"}, "^link.latency_us: must be >= 0"),
])
def test_config_refuses_bad_fields(overrides, message):
  with pytest.raises(ConfigError, match=message):
    EXPERIMENT.load_config("quick", overrides)
