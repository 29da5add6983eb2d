"""Full-size published MoE LMs from their config.json: jax.eval_shape parameter counts.

The counts are checked against the numbers the model authors published (rounded there, so a
relative tolerance); the variable list of the loader must cover exactly the module's variables.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from moe_jax.convert.hf_config import from_hf, to_hf
from moe_jax.convert.hf_tensors import tensor_map
from moe_jax.convert.zoo import ZOO
from moe_jax.models.lm import MoELM


@pytest.mark.parametrize("name", list(ZOO))
def test_published_parameter_counts(name):
  entry = ZOO[name]
  cfg, arch = from_hf(entry.config)
  shapes = nn.unbox(jax.eval_shape(MoELM(cfg).init, jax.random.key(0),
                                   jnp.zeros((1, 1), jnp.int32)))
  flat = {"/".join(str(k.key) for k in path): leaf.shape
          for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)}
  total = sum(math.prod(s) for k, s in flat.items() if k.startswith("params/"))
  assert abs(total / entry.total - 1) < 0.005
  assert abs(cfg.active_params(total) / entry.active - 1) < 0.02
  # The loader reads exactly these variables, with these shapes.
  assert {t.key: t.shape for t in tensor_map(cfg, arch)} == flat
  # And the config survives a trip through config.json.
  assert from_hf(to_hf(cfg, arch, "bfloat16"))[0] == cfg
