"""The offloaded decoder: the plain model's logits when nothing changes the math, the fake-quantized
model's with an INT4 cache, and loads equal to the timeline's replay of the same trace.

One random model (a dense first layer, three MoE layers of 8 experts, top-2, a gated shared
expert) keeps every path of offload.py in play and compiles in seconds.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.analysis import cross_layer, traces
from moe_jax.inference.fate import fate_study, prefetch
from moe_jax.inference.fate.allocation import FULL, INT4, Allocation
from moe_jax.inference.fate.cache import make_caches
from moe_jax.inference.fate.link import PCIE4_X16
from moe_jax.inference.fate.offload import OffloadedLM, empty_kv
from moe_jax.inference.fate.store import quant_specs
from moe_jax.inference.fate.timeline import decode_steps, prefill_step, replay
from moe_jax.layers.moe import MoEConfig
from moe_jax.models.config import LMConfig
from moe_jax.models.lm import MoELM
from moe_jax.models.loading import LoadedModel
from moe_jax.utils.errors import ConfigError

E, K, LAYERS = 8, 2, 3
N = 4  # new tokens: every test decodes 6 + 4 positions (one compile of each piece)
COUNTS = ("needed", "resident", "prefetched", "copies", "wasted")


@pytest.fixture(scope="module")
def model():
  cfg = LMConfig(vocab_size=64, d_model=64, num_layers=4, num_heads=4, num_kv_heads=2, d_ff=64,
                 max_len=32, first_dense=1,
                 moe=MoEConfig(num_experts=E, top_k=K, d_ff=64, shared_d_ff=32, shared_gate=True))
  module = MoELM(cfg)
  variables = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  return LoadedModel(module, variables, "random")


@pytest.fixture(scope="module")
def prompt():
  return np.random.default_rng(0).integers(0, 64, size=(1, 6)).astype(np.int32)


@functools.partial(jax.jit, static_argnums=0)
def _apply(module, variables, tokens, positions):
  return module.apply(variables, tokens, positions, mutable=["cache"])


def _reference(model, tokens, prompt_len):
  """The plain model's KV-cache decoding, teacher-forced: the logits generate() returns."""
  module = MoELM(dataclasses.replace(model.cfg, max_len=tokens.shape[1]), decode=True)
  b = tokens.shape[0]
  variables = {**model.variables, "cache": empty_kv(module, b)}
  logits, mutated = _apply(module, variables, tokens[:, :prompt_len],
                           jnp.broadcast_to(jnp.arange(prompt_len), (b, prompt_len)))
  out = [np.asarray(logits[:, -1])]
  for i in range(prompt_len, tokens.shape[1] - 1):
    variables["cache"] = mutated["cache"]
    logits, mutated = _apply(module, variables, tokens[:, i:i + 1],
                             jnp.full((b, 1), i, jnp.int32))
    out.append(np.asarray(logits[:, -1]))
  return out


def test_every_expert_resident_keeps_the_logits(model, prompt):
  decoder = OffloadedLM(model, Allocation((E,) * LAYERS, (FULL,) * LAYERS, 0.0), quantize=False)
  tokens, logits, steps = decoder.generate(prompt, N)
  for ours, ref in zip(logits, _reference(model, tokens, 6)):
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)
  assert all(s.stats.copies == 0 and s.stats.resident == s.stats.needed for s in steps)


@pytest.mark.slow  # its own compiles (INT4 slots, the fake-quantized reference): ~9 s of CPU
def test_an_int4_cache_computes_the_fake_quantized_model(model, prompt):
  decoder = OffloadedLM(model, Allocation((E,) * LAYERS, (INT4,) * LAYERS, 0.0), quantize=True)
  tokens, logits, _ = decoder.generate(prompt, N)
  fake = fate_study.fake_quant_model(model, quant_specs()[INT4])
  for ours, ref in zip(logits, _reference(fake, tokens, 6)):
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # its own compiles (2 + 1 and 0 + 1 slots, the traced forward): ~9 s of CPU
def test_loads_match_the_replay_of_the_same_trace(model, prompt):
  # Full precision, so the decoder routes as the plain model does; 2 cache slots in the first MoE
  # layer, none in the second, all in the third; one staging slot, so layers run in rounds.
  slots, p_decode = (2, 0, E), 3
  decoder = OffloadedLM(model, Allocation(slots, (INT4,) * LAYERS, 0.0), quantize=False,
                        prefetch_k=p_decode, staging=1)
  tokens, logits, steps = decoder.generate(prompt, N)
  for ours, ref in zip(logits, _reference(model, tokens, 6)):  # rounds sum in another order
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
  assert steps[0].rounds > LAYERS

  trace = traces.capture(model, tokens[:, :-1])
  actual, x = trace.stack("expert"), trace.stack("gate_input")
  for l in range(LAYERS):
    np.testing.assert_array_equal(actual[l, :6].ravel(), steps[0].layers[l].needed)
  pre = cross_layer.predict_next(x[:, :6], trace.kernels, K)
  dec = cross_layer.predict_next(x[:, 6:], trace.kernels, p_decode)
  timeline = [prefill_step(actual[:, :6], pre, 0.0, 0.0, E),
              *decode_steps(actual[:, 6:].swapaxes(0, 1), dec.swapaxes(0, 1), 0.0, 0.0, E)]
  replayed = replay(timeline, make_caches(slots, "arc"), PCIE4_X16, 1e5, 5e4)
  assert [[getattr(s.stats, f) for f in COUNTS] for s in steps] == [
      [getattr(s, f) for f in COUNTS] for s in replayed]
  assert sum(s.stats.copies for s in steps) > 0 and sum(s.stats.prefetched for s in steps) > 0


@pytest.mark.parametrize("method", ["fate", "eap"])
def test_quantized_offload_with_int2_prefill_matches_its_replay(model, prompt, method):
  calibration = traces.capture(model, np.random.default_rng(1).integers(0, 64, (1, 9)))
  paths = prefetch.fit_activation_paths(calibration.stack("expert"), E)
  decoder = OffloadedLM(model, Allocation((E, 1, 2), (INT4,) * LAYERS, 0.0), method=method,
                        prefetch_k=2, int2_rate=0.5, paths=paths)
  runs = [decoder.generate(p, N)[2] for p in (prompt, prompt[:, ::-1])]  # caches carry over
  for layer in runs[0][0].layers[1:]:  # prefill: INT2 = the least popular tail of the ranking
    order = layer.prefetch.tolist()
    assert set(layer.int2) == set(order[len(order) - len(layer.int2):])
  assert any(layer.int2 for layer in runs[0][0].layers)
  out = fate_study.decoder_replay(runs, (E, 1, 2), "arc", PCIE4_X16,
                                  decoder.store.nbytes("int4"), decoder.store.nbytes("int2"))
  assert out["matches"], out


def test_bad_arguments_are_named(model):
  with pytest.raises(ConfigError, match="allocation"):
    OffloadedLM(model, Allocation((E,), (FULL,), 0.0))
  with pytest.raises(ConfigError, match="paths"):
    OffloadedLM(model, Allocation((E,) * LAYERS, (FULL,) * LAYERS, 0.0), method="eap")
  decoder = OffloadedLM(model, Allocation((E,) * LAYERS, (FULL,) * LAYERS, 0.0), quantize=False)
  with pytest.raises(ConfigError, match="tokens"):
    decoder.step(np.zeros((1, 3), np.int32))  # no request started
