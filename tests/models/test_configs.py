"""Full-size configs build the published shapes (jax.eval_shape: nothing is allocated)."""
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from moe_jax.models.lm import MoELM
from moe_jax.utils.trees import param_count


@pytest.mark.parametrize("name, total, active", [
    ("mixtral_8x7b", 46_702_792_704, 12.88e9),   # HF Mixtral-8x7B-v0.1 parameter count
    ("olmoe_1b_7b", 6_919_096_320, 1.28e9),      # 6.92B/1.28B published; minus q/k norms
])
def test_full_size_config_shapes(name, total, active):
  config = importlib.import_module(f"configs.{name}").get_config()
  cfg = config.model
  shapes = nn.unbox(jax.eval_shape(MoELM(cfg).init, jax.random.key(0),
                                   jnp.zeros((1, 8), jnp.int32)))
  count = param_count(shapes["params"])
  assert count == total
  assert abs(cfg.active_params(count) - active) / active < 0.01
  experts = shapes["params"]["layer_0"]["moe"]["experts"]["wi_gate"]
  assert experts.shape == (cfg.moe.num_experts, cfg.d_model, cfg.moe.d_ff)
