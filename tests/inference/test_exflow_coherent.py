"""Context-coherent expert parallelism: byte packing, the one-device decoder against generate.py,
and, on 8 simulated CPU devices (exflow_coherent_checks.py in a subprocess), equal logits and
coherent caches across the three decoders and the collectives of their compiled steps."""
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.inference.exflow import packing
from moe_jax.inference.exflow.coherent import Decoder
from moe_jax.models.config import LMConfig
from moe_jax.utils.errors import ConfigError
from tests.helpers import FAST_COMPILE, ROOT
from tests.inference.exflow_coherent_checks import MODELS


def test_pack_round_trips_mixed_dtypes_bit_for_bit():
  rng = np.random.default_rng(0)
  arrays = [jnp.asarray(rng.normal(size=(5, 2, 3)), jnp.float32),
            jnp.arange(-1, 4, dtype=jnp.int32), jnp.asarray(rng.normal(size=(5, 4)), jnp.bfloat16),
            jnp.arange(5, dtype=jnp.uint8)]
  buffer, layout = packing.pack(arrays)
  assert buffer.dtype == jnp.uint8 and buffer.shape == (5, 24 + 4 + 8 + 1)
  for got, want in zip(packing.unpack(jnp.stack([buffer, buffer]), layout), arrays):
    assert got.shape == (2,) + want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want))


def test_decoder_refuses_a_bad_path_or_mesh():
  cfg = LMConfig.from_dict({**MODELS["gqa"][0], "max_len": 16})
  with pytest.raises(ConfigError, match="^mesh: the 'coherent' path needs a mesh"):
    Decoder(cfg, "coherent")
  with pytest.raises(ConfigError, match="^path: unknown value 'ring'"):
    Decoder(cfg, "ring")


# One subprocess per model; the MLA model (shared experts, sigmoid router) only with -m slow.
@pytest.fixture(scope="module", params=["gqa", pytest.param("mla_shared_sigmoid",
                                                           marks=pytest.mark.slow)])
def checks(request):
  """(model name, the checks' JSON for that model)."""
  seed = int(np.random.default_rng().integers(0, 10_000))  # fresh models and prompts every run
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}"}
  proc = subprocess.run([sys.executable, "-m", "tests.inference.exflow_coherent_checks",
                         str(seed), request.param], capture_output=True, text=True,
                        timeout=900, cwd=ROOT, env=env)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return request.param, json.loads(proc.stdout.strip().splitlines()[-1])


def test_coherent_generation_equals_standard_and_one_device(checks):
  name, out = checks
  assert out["devices"] == 8
  result = out[name]
  for err in result["logits_err"].values():
    assert err < 1e-5
  assert result["tokens_equal"]
  assert result["generate_equal"]  # the one-device decoder is moe_jax.models.generate's greedy
  assert result["cache_err"] < 1e-5  # every device's copy of every layer's cache
  # experts and router columns permuted to a random placement: the same model
  assert result["placed"]["logits_err_vs_single"] < 1e-5 and result["placed"]["tokens_equal"]


def test_tokens_cross_devices_where_the_placement_says(checks):
  name, out = checks
  result = out[name]
  assert result["crossings"] == result["crossings_expected"]
  assert result["placed"]["crossings"] == result["placed"]["crossings_expected"]


def coherent_step_bytes(cfg, n, b):
  """All-to-all bytes sent and all-gather bytes held per device by one coherent step: B/N slots
  until the first MoE layer, B after it; rows of D floats + weight + sequence; each attention
  layer's cache row + its sequence, then (sequence, token) per slot, gathered from N devices."""
  kv = (2 * cfg.num_kv_heads * cfg.head_width if cfg.attention == "gqa" else
        cfg.kv_lora_rank + cfg.qk_rope_head_dim) * 4
  slots, sent, gathered = b // n, 0, 0
  for layer in range(cfg.num_layers):
    gathered += slots * (kv + 4)
    if layer in cfg.moe_layer_ids():
      sent += cfg.moe.num_experts * slots * (4 * cfg.d_model + 8)
      slots = b
  return sent, n * (gathered + 8 * slots)


def test_coherent_step_has_one_all_to_all_per_moe_layer_and_one_all_gather(checks):
  name, out = checks
  result = out[name]
  num_moe = result["moe_layers"]
  coherent, standard = result["hlo"]["coherent"]["step"], result["hlo"]["standard"]["step"]
  assert coherent["all-to-all"]["count"] == num_moe
  assert standard["all-to-all"]["count"] == 2 * num_moe
  assert coherent["all-gather"]["count"] == 1
  for op in ("all-reduce", "collective-permute", "reduce-scatter"):
    assert coherent[op]["count"] == standard[op]["count"] == 0
  fields, n, b = MODELS[name]
  cfg = LMConfig.from_dict(fields)
  sent, gathered = coherent_step_bytes(cfg, n, b)
  assert coherent["all-to-all"]["bytes"] == sent
  assert coherent["all-gather"]["bytes"] == gathered
  # standard, dropless: C = B/N slots per (source, expert), D + 1 wide out, D back
  assert standard["all-to-all"]["bytes"] == num_moe * cfg.moe.num_experts * (b // n) * (
      2 * cfg.d_model + 1) * 4


def test_the_coherent_path_refuses_what_it_cannot_run(checks):
  errors = checks[1]["errors"]
  assert errors["top2"].startswith("model.moe.top_k: top-2 topk routing")
  assert errors["batch"].startswith("batch: 12 sequences do not split over 8 devices")
  assert errors["two_axes"].startswith("mesh: axes {'data': 2, 'expert': 4}")
  assert all("Fix:" in e for e in errors.values())
