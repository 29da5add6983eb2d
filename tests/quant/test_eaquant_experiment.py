"""experiments.eaquant: end to end on a saved tiny model through `execute` (slow); its claims on
given numbers; each row's recipe; config errors."""
import json
import os

import numpy as np
import pytest

from moe_jax.convert.hf import save_pretrained
from moe_jax.quant import eaquant_experiment as ex
from moe_jax.utils.errors import ConfigError
from moe_jax.utils.experiment import evaluate_claims, execute, load_config
from tests.eval.tiny import random_model


@pytest.mark.slow
def test_quick_preset_end_to_end(tmp_path):
  model = random_model(seed=2, moe=dict(shared_d_ff=8, shared_gate=True))
  path = str(tmp_path / "model")
  save_pretrained(model.module, model.variables, path)
  config = load_config("configs/eaquant.py:quick", overrides={
      "models": path, "settings": "w4a4", "calibration.num_samples": "8",
      "calibration.seq_len": "16", "eval.num_items": "8", "recipe.options.mse_clip": "false",
      "recipe.balance_ratio": "8"})
  workdir = str(tmp_path / "out")
  results = execute(ex.EXPERIMENT, config, workdir, echo=False)
  rows = results["models"][path]["rows"]["w4a4"]
  assert set(rows) == set(ex.METHODS)
  for method, row in rows.items():
    assert np.isfinite(row["bpb"]) and 0 <= row["routing_agreement"] <= 1
    assert set(row["routing"]) == {"layer_0", "layer_1"}
    assert (row["router_ratio"] < 1) <= (method in ("align", "eaquant"))
  for key in ("eaquant_w4a4", "router_alignment"):
    assert results["claims"][key]["holds"] in (True, False)
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["summary"] == results["summary"]
  for name in ("results.md", "bpb_loss.png", "routing.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0


def _row(loss, routing):
  return {"bpb_loss": loss, "routing_agreement": routing}


def test_claims_read_the_worst_model():
  models = {"a": {"rows": {"w4a4": {"eaquant": _row(0.1, 0.9), "baseline": _row(0.2, 0.8),
                                    "align": _row(0.2, 0.85)}}},
            "b": {"rows": {"w4a4": {"eaquant": _row(0.3, 0.9), "baseline": _row(0.2, 0.9),
                                    "align": _row(0.2, 0.88)}}}}
  summary = ex.summary(models)
  np.testing.assert_allclose(summary["w4a4_eaquant_minus_baseline"], 0.1)
  np.testing.assert_allclose(summary["align_routing_gain"], -0.02)
  claims = evaluate_claims(ex.EXPERIMENT, {"summary": summary})
  assert not claims["eaquant_w4a4"]["holds"] and not claims["router_alignment"]["holds"]
  assert claims["eaquant_w3a4"]["holds"] is None


def test_row_recipes():
  config = load_config("configs/eaquant.py:quick")
  model = random_model(seed=0)
  r = ex.recipe(config, "eaquant", "w3a4g8", model)
  assert (r.w_bits, r.act.bits, r.group_size, r.smooth, r.align, r.balance) == (3, 4, 8, True,
                                                                               True, True)
  r = ex.recipe(config, "align", "w4a4", model)
  assert (r.group_size, r.smooth, r.align, r.balance, r.act.router_bits) == (0, False, True,
                                                                             False, 8)


@pytest.mark.parametrize("field,value", [("settings", "w4"), ("methods", "gptq"),
                                         ("recipe.rotation", "dct"), ("recipe.alpha", "1.5"),
                                         ("recipe.act.bits", "1")])
def test_bad_config_names_the_field(field, value):
  with pytest.raises(ConfigError, match=f"^{field.replace('.', '[.]')}"):
    load_config("configs/eaquant.py:quick", overrides={field: value})
