"""Random tiny byte-level MoE LMs for the evaluation tests (seconds to compile on a CPU)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.models.config import LMConfig
from moe_jax.models.lm import MoELM
from moe_jax.models.loading import LoadedModel


def tiny_config(**overrides) -> LMConfig:
  moe = dict(num_experts=4, top_k=2, d_ff=16, router="topk")
  moe.update(overrides.pop("moe", {}))
  fields = dict(vocab_size=256, d_model=16, num_layers=2, num_heads=2, num_kv_heads=1, d_ff=32,
                max_len=64, moe=moe)
  fields.update(overrides)
  return LMConfig.from_dict(fields)


def random_model(seed: int = 0, source: str = "random", **overrides) -> LoadedModel:
  """Parameters drawn by NumPy on the shapes `init` would give (no compilation): the embedding
  N(0, 1), other matrices N(0, 0.3^2), vectors 1 + N(0, 0.1^2)."""
  module = MoELM(tiny_config(**overrides))
  shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  rng = np.random.default_rng(seed)
  params = nn.unbox(shapes["params"])
  draw = lambda s: (0.3 * rng.normal(size=s.shape) if len(s.shape) >= 2
                    else 1 + 0.1 * rng.normal(size=s.shape)).astype(np.float32)
  params = jax.tree.map(draw, params)
  params["embed"]["embedding"] = rng.normal(size=params["embed"]["embedding"].shape).astype(
      np.float32)
  return LoadedModel(module, {"params": params}, source)


def perturbed(model: LoadedModel, scale: float, seed: int) -> LoadedModel:
  """`model` with Gaussian noise of `scale` times each leaf's std added to every parameter."""
  leaves, tree = jax.tree.flatten(model.variables)
  rng = np.random.default_rng(seed)
  noisy = [x + scale * (x.std() + 1e-3) * rng.standard_normal(x.shape).astype(x.dtype)
           for x in leaves]
  return LoadedModel(model.module, jax.tree.unflatten(tree, noisy), model.source + "+noise")
