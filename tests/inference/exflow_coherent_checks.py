"""Context-coherent expert parallelism on 8 simulated CPU devices; run by test_exflow_coherent.py.

Run alone: XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m
tests.inference.exflow_coherent_checks [seed [model ...]] (models: keys of MODELS, default all).
Prints one JSON object of measured values (random tiny models: nothing trains); the test module
asserts on them.
"""
import json
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.analysis import traces
from moe_jax.inference.exflow import placement as placement_lib
from moe_jax.inference.exflow.coherent import Decoder
from moe_jax.inference.exflow.measure import compare
from moe_jax.models.config import LMConfig
from moe_jax.models.generate import generate
from moe_jax.models.lm import MoELM
from moe_jax.models.loading import LoadedModel
from moe_jax.parallel.mesh import make_mesh
from moe_jax.utils.errors import ConfigError

# name: (model fields, devices, sequences); a dense first layer, then top-1 MoE layers
MODELS = {
    "gqa": (dict(vocab_size=64, d_model=32, num_layers=3, num_heads=2, num_kv_heads=1, d_ff=32,
                 moe_layers=(1, 2), moe=dict(num_experts=8, top_k=1, d_ff=16,
                                             normalize_topk=False)), 8, 8),
    "mla_shared_sigmoid": (dict(vocab_size=64, d_model=32, num_layers=2, num_heads=2,
                                num_kv_heads=2, d_ff=32, attention="mla", kv_lora_rank=16,
                                qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
                                moe=dict(num_experts=8, top_k=1, d_ff=16, router="sigmoid_group",
                                         shared_d_ff=16, shared_gate=True)), 4, 8),
}
PROMPT, STEPS = 5, 4


def init_variables(cfg, seed):
  """Fresh random values in the model's parameter and router-state structure, filled from its
  shapes (jax.eval_shape: no initialiser to compile, which alone takes XLA seconds): matrices
  N(0, 0.2^2), router kernels N(0, 1) (top-1 choices well apart), norm scales 1 + N(0, 0.1^2),
  other vectors (the aux-free bias) N(0, 0.1^2)."""
  rng = np.random.default_rng(seed)
  shapes = nn.unbox(jax.eval_shape(MoELM(cfg).init, jax.random.key(0),
                                   jnp.zeros((1, 4), jnp.int32)))

  def fill(path, leaf):
    keys = [getattr(k, "key", None) for k in path]
    z = rng.standard_normal(leaf.shape)
    if leaf.ndim == 1:
      z = 1 + 0.1 * z if keys[-1] == "scale" else 0.1 * z
    elif "router" not in keys:
      z = 0.2 * z
    return jnp.asarray(z, leaf.dtype)

  return jax.tree_util.tree_map_with_path(
      fill, {k: v for k, v in shapes.items() if k in ("params", "moe_bias")})


def expected_crossings(cfg, variables, tokens, table, num_devices):
  """Per decode step and MoE layer, the sequences whose expert's device (table[l, e]) differs
  from the device the token came from (its home device at the first MoE layer)."""
  model = LoadedModel(MoELM(cfg), variables, "random")
  route = traces.capture(model, tokens[:, :-1]).stack("expert")[..., 0]  # [L, B (P + T - 1)]
  b = tokens.shape[0]
  route = route.reshape(route.shape[0], b, -1)[:, :, PROMPT:]  # the tokens fed to decode steps
  device = np.take_along_axis(table[:, :, None], route, axis=1)  # [L, B, T - 1]
  home = np.broadcast_to((np.arange(b) // (b // num_devices))[None, :, None], device[:1].shape)
  came_from = np.concatenate([home, device[:-1]])
  return (device != came_from).sum(1).T.tolist()  # [T - 1, L]


def main(seed: int, names: list[str]):
  out = {"devices": jax.device_count()}
  rng = np.random.default_rng(seed)
  for name in names:
    fields, n, b = MODELS[name]
    cfg = LMConfig.from_dict({**fields, "max_len": 32})
    variables = init_variables(cfg, seed)
    prompt = rng.integers(0, cfg.vocab_size, (b, PROMPT))
    placed = placement_lib.random_balanced(len(cfg.moe_layer_ids()), 8, n, seed)
    result = compare(cfg, variables, prompt, STEPS, n, placed)
    tokens = np.asarray(result["tokens"])
    result["generate_equal"] = bool(np.array_equal(tokens, generate(cfg, variables, prompt,
                                                                    STEPS)))
    contiguous = placement_lib.contiguous(len(cfg.moe_layer_ids()), 8, n)
    result["crossings_expected"] = expected_crossings(cfg, variables, tokens, contiguous, n)
    result["placed"]["crossings_expected"] = expected_crossings(cfg, variables, tokens, placed, n)
    out[name] = result

  cfg = LMConfig.from_dict({**MODELS["gqa"][0], "max_len": 32})
  variables = init_variables(cfg, 0)
  errors = {}
  for label, fields, batch, mesh in (
      ("top2", dict(moe=dict(num_experts=8, top_k=2, d_ff=16)), 8, {"expert": 8}),
      ("batch", {}, 12, {"expert": 8}),
      ("two_axes", {}, 8, {"data": 2, "expert": 4})):
    try:
      model_cfg = LMConfig.from_dict({**MODELS["gqa"][0], "max_len": 32, **fields})
      Decoder(model_cfg, "coherent", make_mesh(mesh)).generate(
          variables, np.zeros((batch, PROMPT), np.int32), 2)
      errors[label] = "no error"
    except ConfigError as e:
      errors[label] = str(e)
  out["errors"] = errors
  print(json.dumps(out))


if __name__ == "__main__":
  main(int(sys.argv[1]) if len(sys.argv) > 1 else 0, sys.argv[2:] or list(MODELS))
