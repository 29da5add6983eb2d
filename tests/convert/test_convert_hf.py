"""Model zoo parity: tiny random transformers models of each family, saved, loaded, compared.

Reference: transformers' own PyTorch implementation (float32, CPU), on the random models of
moe_jax.convert.tiny (random norms and biases; decisive routers in some families).
"""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from moe_jax.convert import tiny  # noqa: E402
from moe_jax.convert.hf import load_pretrained, save_pretrained  # noqa: E402
from moe_jax.models.generate import generate  # noqa: E402
from moe_jax.utils.errors import ConfigError  # noqa: E402

V = tiny.VOCAB


def _build(name, tmp_path_factory):
  path = str(tmp_path_factory.mktemp(name))
  return tiny.build(name, path), path


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
  """Builds each family's tiny model once per module, lazily."""
  cache = {}

  def get(name):
    if name not in cache:
      cache[name] = _build(name, tmp_path_factory)
    return cache[name]
  return get


def _torch_logits(model, tokens):
  with torch.no_grad():
    return model(torch.tensor(np.asarray(tokens))).logits.numpy()


_APPLY = {}


def _logits(module, variables, tokens):
  """module.apply, jitted once per config (tests that share a model share the compile)."""
  if module.cfg not in _APPLY:
    _APPLY[module.cfg] = jax.jit(module.apply)
  return np.asarray(_APPLY[module.cfg](variables, jnp.asarray(tokens)))


def _torch_greedy(model, prompt, steps):
  """transformers' argmax continuation, one full forward per token (no cache)."""
  seq = torch.tensor(np.asarray(prompt))
  with torch.no_grad():
    for _ in range(steps):
      nxt = model(seq).logits[:, -1].argmax(-1)
      seq = torch.cat([seq, nxt[:, None]], dim=1)
  return seq.numpy()


def _rel_err(a, b):
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


TOKENS = np.random.default_rng(0).integers(0, V, (2, 13))


@pytest.mark.parametrize("name", list(tiny.FAMILIES))
def test_logits_and_greedy_generation_match_transformers(zoo, name):
  model, path = zoo(name)
  module, variables = load_pretrained(path, dtype="float32")
  ours = _logits(module, variables, TOKENS)
  assert _rel_err(ours, _torch_logits(model, TOKENS)) < 1e-4
  if name == "deepseek_v3_yarn":
    return  # same cached decoding as deepseek_v3; only the RoPE differs (saves a compile)
  prompt = TOKENS[:, :5]
  got = generate(module.cfg, variables, prompt, max_new_tokens=20)
  np.testing.assert_array_equal(np.asarray(got), _torch_greedy(model, prompt, 20))


def test_wrong_routing_rule_is_visible(zoo):
  """With decisive routers, renormalising OLMoE's top-k weights changes the logits a lot."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  model, path = zoo("olmoe")
  module, variables = load_pretrained(path, dtype="float32")
  wrong = module.clone(cfg=dataclasses.replace(
      module.cfg, moe=dataclasses.replace(module.cfg.moe, normalize_topk=True)))
  assert _rel_err(_logits(wrong, variables, TOKENS),
                  _torch_logits(model, TOKENS)) > 1e-2


@pytest.mark.parametrize("name", ["qwen2_moe", "deepseek_v3"])
def test_round_trip_gives_identical_logits(zoo, name, tmp_path):
  model, path = zoo(name)
  module, variables = load_pretrained(path, dtype="float32")
  out = str(tmp_path / "saved")
  save_pretrained(module, variables, out, max_shard_bytes=20_000)  # forces an index + shards
  assert os.path.exists(os.path.join(out, "model.safetensors.index.json"))
  again = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  np.testing.assert_array_equal(_torch_logits(again, TOKENS), _torch_logits(model, TOKENS))


def test_save_after_shrinking_experts_loads_in_transformers(zoo, tmp_path):
  """A compression that keeps 3 of 4 experts at half width writes a valid Mixtral."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  _, path = zoo("mixtral")
  module, variables = load_pretrained(path, dtype="float32")
  cfg = dataclasses.replace(module.cfg, moe=dataclasses.replace(module.cfg.moe, num_experts=3,
                                                                  d_ff=12))
  params = jax.tree.map(lambda x: x, variables["params"])
  for i in range(cfg.num_layers):
    moe = params[f"layer_{i}"]["moe"]
    moe["router"]["gate"]["kernel"] = moe["router"]["gate"]["kernel"][:, :3]
    ex = moe["experts"]
    moe["experts"] = dict(wi_gate=ex["wi_gate"][:3, :, :12], wi_up=ex["wi_up"][:3, :, :12],
                          wo=ex["wo"][:3, :12])
  small = module.clone(cfg=cfg)
  save_pretrained(small, {"params": params}, str(tmp_path))
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path),
                                                         dtype=torch.float32).eval()
  assert hf.config.num_local_experts == 3 and hf.config.intermediate_size == 12
  ours = _logits(small, {"params": params}, TOKENS)
  assert _rel_err(ours, _torch_logits(hf, TOKENS)) < 1e-4


def test_fused_expert_layout_loads(zoo, tmp_path):
  """transformers 5's in-memory layout (gate_up_proj [E, 2F, D]) loads to the same logits."""
  from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top
  model, path = zoo("phimoe")
  shutil.copy(os.path.join(path, "config.json"), tmp_path / "config.json")
  state = {k: v.contiguous() for k, v in model.state_dict().items()}
  assert any(k.endswith("experts.gate_up_proj") for k in state)
  save_file(state, str(tmp_path / "model.safetensors"))
  module, variables = load_pretrained(str(tmp_path), dtype="float32")
  ours = _logits(module, variables, TOKENS)
  assert _rel_err(ours, _torch_logits(model, TOKENS)) < 1e-4


def test_place_hook_sees_each_variable_once_in_the_target_dtype(zoo):
  _, path = zoo("deepseek_v3")
  seen = []

  def place(key, array):
    seen.append((key, array.dtype))
    return jnp.asarray(array)

  module, variables = load_pretrained(path, dtype="bfloat16", place=place)
  leaves = jax.tree_util.tree_leaves_with_path(variables)
  assert len(seen) == len(leaves) == len({k for k, _ in seen})
  assert all(str(d) == "bfloat16" for _, d in seen)
  assert "moe_bias/layer_1/moe/router/e_score_correction_bias" in dict(seen)
  assert module.cfg.dtype == "bfloat16"


def _edit(path, tmp_path, config_change=None, remove=None, drop=None, add=None):
  """A copy of checkpoint `path` with config.json fields changed or removed, tensors dropped
  or added."""
  from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top
  with open(os.path.join(path, "config.json")) as f:
    config = json.load(f)
  config.update(config_change or {})
  config.pop(remove, None)
  with open(tmp_path / "config.json", "w") as f:
    json.dump(config, f)
  tensors = load_file(os.path.join(path, "model.safetensors"))
  tensors.pop(drop, None)
  tensors.update(add or {})
  save_file(tensors, str(tmp_path / "model.safetensors"))
  return str(tmp_path)


@pytest.mark.parametrize("edit, file, match", [
    (dict(drop="model.layers.1.block_sparse_moe.experts.2.w3.weight"), "",
     r"model\.layers\.1\.block_sparse_moe\.experts\.2\.w3\.weight: missing"),
    (dict(config_change=dict(intermediate_size=20)), "/model.safetensors",
     r"model\.layers\.0\.block_sparse_moe\.experts\.0\.w1\.weight: has shape \[24, 32\]"),
    (dict(config_change=dict(architectures=["LlamaForCausalLM"])), "/config.json",
     r"architectures: unknown"),
    (dict(config_change=dict(hidden_act="gelu")), "/config.json", r"hidden_act:"),
    (dict(config_change=dict(rope_parameters=dict(rope_type="dynamic", rope_theta=1e4,
                                                   factor=2.0))), "/config.json",
     r"rope_parameters\.rope_type: RoPE scaling 'dynamic'"),
    (dict(remove="num_local_experts"), "/config.json",
     r"num_local_experts: missing from config\.json"),
    (dict(config_change=dict(quantization_config=dict(quant_method="fp8"))), "/config.json",
     r"quantization_config:"),
    (dict(add={"model.layers.0.self_attn.q_proj.bias": np.zeros(32, np.float32)}),
     "/model.safetensors",
     r"model\.layers\.0\.self_attn\.q_proj\.bias: 1 checkpoint tensors are not used"),
])
def test_bad_checkpoint_names_the_file_and_the_tensor_or_field(zoo, tmp_path, edit, file, match):
  import re  # pylint: disable=g-import-not-at-top
  _, path = zoo("mixtral")
  with pytest.raises(ConfigError, match="^" + re.escape(str(tmp_path) + file) + ": " + match):
    load_pretrained(_edit(path, tmp_path, **edit))


def test_save_refuses_what_the_family_cannot_express(zoo, tmp_path):
  import dataclasses  # pylint: disable=g-import-not-at-top
  _, path = zoo("mixtral")
  module, variables = load_pretrained(path)
  unnormalised = module.clone(cfg=dataclasses.replace(
      module.cfg, moe=dataclasses.replace(module.cfg.moe, normalize_topk=False)))
  with pytest.raises(ConfigError, match="^moe.normalize_topk: MixtralForCausalLM needs"):
    save_pretrained(unnormalised, variables, str(tmp_path))
