"""Routing traces: each field against a float64 NumPy forward of the captured gate inputs and
the expert weights, disk against memory, the token budget, and the token windows."""
import functools
import types

import flax.linen as nn
import jax
import numpy as np
import pytest

from moe_jax.analysis import token_stream, traces
from moe_jax.data import corpus
from moe_jax.layers.moe import TRACE
from moe_jax.models.config import LMConfig
from moe_jax.models.lm import MoELM
from moe_jax.models.loading import LoadedModel
from moe_jax.utils.errors import ConfigError

S = 16


@functools.lru_cache(maxsize=None)
def _model(activation: str = "relu", top_k: int = 2, gmm_impl: str = "auto") -> LoadedModel:
  """A 2-layer MoE LM (4 experts, top-k) with weights N(0, 0.3^2) and norm scales one (no
  compiled init); one per argument set per test run."""
  cfg = LMConfig.from_dict(dict(
      vocab_size=64, d_model=16, num_layers=2, num_heads=2, num_kv_heads=1, d_ff=16, max_len=64,
      activation=activation, moe=dict(num_experts=4, top_k=top_k, d_ff=8, gmm_impl=gmm_impl)))
  module = MoELM(cfg)
  shapes = nn.unbox(jax.eval_shape(module.init, jax.random.PRNGKey(0),
                                   np.zeros((1, S), np.int32))["params"])
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map_with_path(
      lambda path, leaf: np.ones(leaf.shape, np.float32) if path[-1].key == "scale" else
      (0.3 * rng.standard_normal(leaf.shape)).astype(np.float32), shapes)
  return LoadedModel(module, {"params": params}, "test")


def _tokens(windows=7):
  return np.random.default_rng(0).integers(0, 64, (windows, S))


@pytest.fixture(scope="module")
def relu_model():
  return _model()


@pytest.mark.parametrize("gmm_impl", ["auto", "ragged_dot"])  # auto: tiled on the CPU
def test_fields_match_a_numpy_forward_of_the_gate_inputs(gmm_impl):
  model = _model("relu", 2, gmm_impl)
  trace = traces.capture(model, _tokens(), batch_size=3)
  params = model.variables["params"]
  for l, i in enumerate(trace.layers):
    moe = jax.tree.map(lambda a: np.asarray(a, np.float64), params[f"layer_{i}"]["moe"])
    x, experts = trace.gate_inputs(l), trace.experts(l)
    logits = x @ moe["router"]["gate"]["kernel"]
    np.testing.assert_allclose(trace.logits(l), logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.sort(experts, -1), np.sort(np.argsort(-logits)[:, :2], -1))
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    top = np.take_along_axis(probs, experts, -1)
    np.testing.assert_allclose(trace.gates(l), top / top.sum(-1, keepdims=True), rtol=1e-4)
    w_up, w_down = moe["experts"]["wi_up"][experts], moe["experts"]["wo"][experts]
    h = np.maximum(np.einsum("td,tkdf->tkf", x, w_up), 0)  # relu experts: many exact zeros
    zero = (h == 0).mean(-1)
    assert 0.2 < zero.mean() < 0.8
    # A pre-activation within float32 rounding of 0 may land on either side: one unit of 1/F.
    assert np.abs(trace.zero_fracs(l) - zero).max() <= 1 / 8 + 1e-6
    assert np.mean(trace.zero_fracs(l) != zero) < 0.01
    norm = np.linalg.norm(np.einsum("tkf,tkfd->tkd", h, w_down), axis=-1)
    np.testing.assert_allclose(trace.output_norms(l), norm, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(trace.router_kernel(l), params[f"layer_{i}"]["moe"]["router"]
                                  ["gate"]["kernel"])


def test_streamed_trace_equals_the_in_memory_one(relu_model, tmp_path):
  memory = traces.capture(relu_model, _tokens(), batch_size=3)
  disk = traces.capture(relu_model, _tokens(), batch_size=3, out_dir=str(tmp_path))
  again = traces.load(str(tmp_path))
  assert len(disk.shards) == 3 and all(isinstance(s, str) for s in disk.shards)
  for other in (disk, again):
    assert (other.layers, other.num_tokens, other.top_k) == (memory.layers, 7 * S, 2)
    np.testing.assert_array_equal(other.tokens(), memory.tokens())
    np.testing.assert_array_equal(other.kernels, memory.kernels)
    for field in traces.FIELDS:
      np.testing.assert_array_equal(other.stack(field), memory.stack(field))
  sizes = [len(b) for b in again.batches("expert", 1)]
  assert sizes == [3 * S, 3 * S, S]


def test_token_budget_is_respected(relu_model, tmp_path):
  trace = traces.capture(relu_model, _tokens(), batch_size=3, max_tokens=5 * S + S // 2,
                         out_dir=str(tmp_path))
  assert trace.num_tokens == 5 * S
  np.testing.assert_array_equal(trace.tokens(), _tokens()[:5])
  assert all(trace.field(f, 0).shape[0] == 5 * S for f in traces.FIELDS)
  with pytest.raises(ConfigError, match="max_tokens"):
    traces.capture(relu_model, _tokens(), max_tokens=S - 1)


def test_incomplete_trace_is_refused(relu_model, tmp_path):
  traces.capture(relu_model, _tokens(), batch_size=3, out_dir=str(tmp_path))
  (tmp_path / traces.META).unlink()
  with pytest.raises(ConfigError, match="no complete trace"):
    traces.load(str(tmp_path))


def _byte_model(vocab_size: int):
  """What token_stream reads of a model: its vocabulary and where it came from (no tokenizer)."""
  return types.SimpleNamespace(cfg=types.SimpleNamespace(vocab_size=vocab_size), source="test")


def test_text_windows_take_held_out_text_of_every_domain_in_turn():
  cfg = token_stream.StreamConfig(seq_len=64, max_tokens=64 * 6 + 10)
  windows = token_stream.windows(cfg, _byte_model(256))
  assert windows.shape == (6, 64) and windows.dtype == np.int32
  held = corpus.split(corpus.load_documents(["english", "python"]), 10)[1]
  streams = [corpus.to_tokens([d for d in held if d.domain == name]).tobytes()
             for name in ("english", "python")]
  for i, w in enumerate(windows):  # english, python, english, ...
    assert w.astype(np.uint8).tobytes() in streams[i % 2]
  with pytest.raises(ConfigError, match="data.tokens_path"):
    token_stream.windows(cfg, _byte_model(96))


def test_saved_token_ids_are_cut_into_windows(tmp_path):
  path = str(tmp_path / "ids.npy")
  np.save(path, np.arange(100))
  cfg = token_stream.StreamConfig(tokens_path=path, seq_len=16, max_tokens=64)
  np.testing.assert_array_equal(token_stream.windows(cfg, _byte_model(96)),
                                np.arange(64).reshape(4, 16))


def test_trace_is_sown_only_when_asked_and_changes_no_output(relu_model):
  module, variables, tokens = relu_model.module, relu_model.variables, _tokens(3)
  logits, state = jax.jit(lambda v, t: module.apply(v, t, mutable=["intermediates"]))(
      variables, tokens)
  assert TRACE not in state and "intermediates" in state
  traced, state = jax.jit(lambda v, t: module.apply(v, t, mutable=[TRACE]))(variables, tokens)
  assert set(state[TRACE]["layer_0"]["moe"]) == set(traces.FIELDS)
  np.testing.assert_array_equal(traced, logits)
