"""experiments.moequant end to end on a saved tiny model through `execute`; its claims on given
numbers; config errors."""
import json
import os

import numpy as np
import pytest

from moe_jax.convert.hf import save_pretrained
from moe_jax.quant import moequant_experiment as mx
from moe_jax.utils.errors import ConfigError
from moe_jax.utils.experiment import evaluate_claims, execute, load_config
from tests.eval.tiny import random_model


@pytest.mark.slow
def test_quick_preset_end_to_end(tmp_path):
  model = random_model(seed=2, moe=dict(shared_d_ff=8, shared_gate=True))
  path = str(tmp_path / "model")
  save_pretrained(model.module, model.variables, path)
  config = load_config("configs/moequant.py:quick", overrides={
      "models": path, "settings": "w3", "calibration.num_samples": "8",
      "calibration.seq_len": "16", "ebss.batch_size": "8", "eval.num_items": "8",
      "quant.mse_clip": "false"})
  workdir = str(tmp_path / "out")
  results = execute(mx.EXPERIMENT, config, workdir, echo=False)
  r = results["models"][path]
  assert set(r["rows"]["w3"]) == set(mx.METHODS)
  for method, row in r["rows"]["w3"].items():
    assert np.isfinite(row["bpb"]) and 0 <= row["routing_agreement"] <= 1
    assert (row["min_tokens"] is None) == (method == "rtn")
  counts = np.asarray(r["calibration"]["ebss"]["tokens_per_expert"])
  assert counts.shape == (2, 4) and np.all(counts.sum(-1) == 8 * 16 * 2)
  for key in ("moequant_w3", "ebss_balance", "gptq_time"):
    assert results["claims"][key]["holds"] in (True, False)
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["summary"] == results["summary"]
  for name in ("results.md", "bpb_loss.png", "expert_tokens.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0


def _models(moequant, gptq, ebss, corpus):
  row = lambda loss: {"bpb_loss": loss}
  return {"a": {"rows": {"w3": {"moequant": row(moequant), "gptq": row(gptq)}},
                "calibration": {"ebss": {"frequency_std": ebss},
                                "corpus": {"frequency_std": corpus}}}}


def test_claims_read_the_worst_model():
  models = {**_models(0.1, 0.2, 0.01, 0.05), "b": _models(0.3, 0.2, 0.01, 0.05)["a"]}
  summary = mx.summary(models)
  np.testing.assert_allclose(summary["w3_moequant_minus_gptq"], 0.1)
  np.testing.assert_allclose(summary["ebss_minus_corpus_spread"], -0.04)
  claims = evaluate_claims(mx.EXPERIMENT, {"summary": summary})
  assert not claims["moequant_w3"]["holds"] and claims["ebss_balance"]["holds"]
  missing = evaluate_claims(mx.EXPERIMENT, {"summary": mx.summary(
      {"a": {"rows": {"w4": {}}, "calibration": {}}})})
  assert all(c["holds"] is None for c in missing.values())


@pytest.mark.parametrize("field,value", [("settings", "w4x"), ("settings", "w9"),
                                         ("methods", "awq"), ("models", ""),
                                         ("calibration.seq_len", "0"), ("quant.damp", "-1")])
def test_bad_fields_are_named(field, value):
  with pytest.raises(ConfigError, match=field.split(".")[-1]):
    load_config("configs/moequant.py:quick", overrides={field: value})
