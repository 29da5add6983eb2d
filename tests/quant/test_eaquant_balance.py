"""Expert-level calibration balance: the cap and the window selection against brute force, the
code's target, and on a model with a rarely chosen expert each expert ends with exactly
min(available, target) tokens (available: over the base windows and every further pass run)."""
import numpy as np

from moe_jax.quant import eaquant
from moe_jax.quant import eaquant_balance as balance
from tests.eval.tiny import random_model


def test_target_cap_and_selection_match_brute_force():
  assert balance.target(8, 64, 4096, 2) == 1024
  rng = np.random.default_rng(0)
  expert = rng.integers(0, 5, 200)
  keep = balance.capped(expert, 5, 7)
  for e in range(5):
    idx = np.flatnonzero(expert == e)
    np.testing.assert_array_equal(np.flatnonzero(keep & (expert == e)), idx[:7])
  counts = rng.integers(0, 3, (12, 2, 5))
  need = rng.integers(0, 4, (2, 5))
  chosen, left = [], need.copy()
  for w in range(12):  # brute force of the greedy rule
    if any(counts[w, l, e] > 0 and left[l, e] > 0 for l in range(2) for e in range(5)):
      chosen.append(w)
      left = np.maximum(left - counts[w], 0)
  assert balance.select_windows(counts, need) == chosen


def test_each_expert_gets_min_of_available_and_target():
  model = random_model(seed=3)
  params = model.variables["params"]
  for layer in ("layer_0", "layer_1"):  # expert 3 rarely chosen
    params[layer]["moe"]["router"]["gate"]["kernel"][:, 3] -= 1.5
  rng = np.random.default_rng(4)
  passes = {p: rng.integers(0, 256, (4, 8)).astype(np.int32) for p in range(4)}
  recipe = eaquant.EAQuantRecipe(balance=True, balance_ratio=6.0, max_passes=3)
  limit = balance.target(2, 4, 8, 6.0)
  windows, layers, report = eaquant.calibration(model, recipe, passes[0], passes.get, 4)
  run = report["passes"]
  assert run >= 1 and report["target"] == limit
  available = {}
  for p in range(run + 1):  # brute force: every window of every pass run
    for name, f in eaquant.capture(model, passes[p], 4).items():
      available[name] = available.get(name, 0) + np.bincount(f.expert, minlength=4)
  for name, (y, token, expert) in layers.items():
    got = np.bincount(expert, minlength=4)
    np.testing.assert_array_equal(got, np.minimum(available[name], limit))
    assert np.asarray(report["tokens_per_expert"])[int(name[-1])].tolist() == got.tolist()
  assert len(windows) == 4 + report["top_up_windows"]
  # the kept rows are the routed tokens' own inputs: re-capturing the chosen windows gives them
  again = eaquant.capture(model, windows, 4)
  for name, (y, token, expert) in layers.items():
    np.testing.assert_allclose(np.asarray(y), np.asarray(again[name].y), atol=1e-5)
