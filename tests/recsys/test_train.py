"""The vmapped optax loop learns an easy task; predictions and diagnostics have the right shapes."""
import jax
import numpy as np
import pytest

from moe_jax.recsys import metrics, models, synthetic, train
from moe_jax.recsys.mmoe import MMoEConfig
from moe_jax.recsys.synthetic import SyntheticConfig
from moe_jax.recsys.train import FitConfig
from moe_jax.utils.errors import ConfigError
from moe_jax.utils.trees import param_count


def test_fit_learns_and_seeds_differ():
  data = SyntheticConfig(num_rows=4000, groups=(0, 0), positive_rates=(0.3, 0.2), p_within=0.9,
                         p_across=0.0, num_dense=4, vocab_sizes=(5,), latent_per_field=1,
                         num_sines=1, noise=0.05)
  sets = [synthetic.split(synthetic.make_synthetic(data, s), 0.25, s) for s in (0, 1)]
  model = models.build_model(MMoEConfig(num_experts=2, expert_hidden=(16,), tower_hidden=(8,)),
                             vocab_sizes=(5,), embed_dim=2, groups=(0, 0))
  variables = train.fit(model, [s[0] for s in sets], [0, 1],
                        FitConfig(steps=150, batch_size=64, learning_rate=1e-2))
  probs = train.predict(model, variables, [s[1] for s in sets], batch_size=300)
  assert probs.shape == (2, 1000, 2)
  for seed in range(2):
    assert metrics.auc(sets[seed][1]["labels"][:, 0], probs[seed, :, 0]) > 0.85
  found = train.intermediates(model, variables, [s[1] for s in sets], rows=100)
  assert found["level_0/expert_out"].shape == (2, 100, 2, 16)
  assert found["level_0/gate"].shape == (2, 100, 2, 2)
  kernel = variables["params"]["level_0"]["experts"]["kernel_0"]  # [S, E, D, H]
  assert not np.allclose(kernel[0], kernel[1])
  one_seed = jax.tree.map(lambda x: x[0], variables["params"])
  assert param_count(variables["params"]) == 2 * param_count(one_seed) > 0
  with pytest.raises(ConfigError, match="^train.batch_size: 4000 rows per step from 3000"):
    train.fit(model, [s[0] for s in sets], [0, 1], FitConfig(batch_size=4000))
