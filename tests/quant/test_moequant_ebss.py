"""EBSS: Eq. 4 against NumPy, greedy decoding as its w = 1, tau -> infinity limit, and a lower
expert-frequency spread than greedy text on a tiny model with skewed routing."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.models.generate import generate
from moe_jax.quant import ebss
from moe_jax.utils.errors import ConfigError
from tests.eval.tiny import random_model


# w = 1, tau -> infinity, 4 candidates per beam; chunks of 4 sentences (one compile for both tests)
GREEDY = ebss.EBSSConfig(width=1, tau=math.inf, branch=4, batch_size=4)


def _np_sigma(u):
  """Eq. 4 on shares u [E]: sqrt(E / (E - 1) * sum (u - 1/E)^2), by a loop."""
  e = len(u)
  return math.sqrt(e / (e - 1) * sum((x - 1 / e) ** 2 for x in u))


def test_spread_is_eq4_combined_over_layers():
  counts = np.random.default_rng(0).integers(0, 9, (3, 2, 5))  # [N, L, E]
  counts[0, 1] = 0
  counts[0, 1, 2] = 7  # one expert takes the layer: sigma = 1
  got = {how: np.asarray(ebss.spread(jnp.asarray(counts), how)) for how in ebss.SPREADS}
  for n in range(3):
    per_layer = [_np_sigma(c / c.sum()) for c in counts[n]]
    np.testing.assert_allclose(got["mean"][n], np.mean(per_layer), rtol=1e-6)
    np.testing.assert_allclose(got["max"][n], np.max(per_layer), rtol=1e-6)
    pooled = counts[n].ravel()
    np.testing.assert_allclose(got["pooled"][n], _np_sigma(pooled / pooled.sum()), rtol=1e-6)
  np.testing.assert_allclose(got["max"][0], 1.0, rtol=1e-6)
  np.testing.assert_allclose(ebss.spread(jnp.ones((2, 4))), 0.0)  # uniform use


def test_width_one_and_infinite_tau_is_greedy_decoding():
  model = random_model(seed=3)
  samples = ebss.sample(model, 6, 16, GREEDY)  # two chunks, the second padded
  greedy = generate(model.cfg, model.variables, samples.tokens[:, :1], 15)
  np.testing.assert_array_equal(samples.tokens, greedy)
  assert samples.counts.shape == (6, 2, 4)
  np.testing.assert_array_equal(samples.counts.sum(-1), 16 * 2)  # S tokens x K per layer
  assert np.all((32 <= samples.tokens[:, 0]) & (samples.tokens[:, 0] < 127))


def _skewed_model():
  """Routing skewed toward expert 0: every embedding row gets a common direction v, which each
  router's column 0 reads (greedy text's layers use one expert 1.7 to 6 times as often as
  another)."""
  model = random_model(seed=5)
  params = model.variables["params"]
  v = np.random.default_rng(9).standard_normal(model.cfg.d_model).astype(np.float32)
  v /= np.linalg.norm(v)
  params["embed"]["embedding"] += v
  for i in range(model.cfg.num_layers):
    params[f"layer_{i}"]["moe"]["router"]["gate"]["kernel"][:, 0] += v
  return model


def _dataset_spread(counts):
  """The calibration set's spread: population std of the shares, mean over layers."""
  total = counts.sum(0)  # [L, E]
  return float(np.mean((total / total.sum(-1, keepdims=True)).std(-1)))


@pytest.mark.slow
def test_ebss_spreads_over_experts_more_evenly_than_greedy_text():
  model = _skewed_model()
  greedy = ebss.sample(model, 8, 16, GREEDY)
  # tau 0.1: on this random model tau 1.2 leaves the spread where greedy text has it (the
  # length-normalised log-probability term dominates); a stronger balance term shows the effect.
  balanced = ebss.sample(model, 8, 16, ebss.EBSSConfig(width=4, tau=0.1, branch=8,
                                                       batch_size=4))
  np.testing.assert_array_equal(balanced.tokens[:, 0], greedy.tokens[:, 0])  # same seeds
  assert _dataset_spread(balanced.counts) < 0.5 * _dataset_spread(greedy.counts)
  assert np.mean(ebss.spread(balanced.counts)) < 0.5 * np.mean(ebss.spread(greedy.counts))


@pytest.mark.parametrize("field,value", [("width", 0), ("tau", 0.0), ("branch", 2),
                                         ("spread", "median"), ("first_tokens", (5, 5))])
def test_bad_fields_are_named(field, value):
  with pytest.raises(ConfigError, match=field):
    ebss.EBSSConfig.from_dict({field: value})


def test_sample_refuses_what_the_model_cannot_do():
  model = random_model(seed=0)
  with pytest.raises(ConfigError, match="first_tokens"):
    ebss.sample(model, 2, 8, ebss.EBSSConfig(first_tokens=(0, 300)))
  with pytest.raises(ConfigError, match="length"):
    ebss.sample(model, 2, 65, ebss.EBSSConfig())
