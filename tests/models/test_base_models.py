"""Base models: trained once into the cache, saved as HF directories transformers loads with
logit parity; a partial or stale cache entry is rebuilt, never trusted; load_model's sources."""
import json
import os

import jax
import numpy as np
import pytest

from moe_jax.models import base_models
from moe_jax.models.loading import load_model
from moe_jax.utils.errors import ConfigError


@pytest.fixture
def cache():
  return base_models.cache_root()  # the test run's own (tests/conftest.py)


def _tokens(vocab, shape=(2, 24)):
  return np.random.default_rng().integers(0, vocab, shape)


@pytest.mark.parametrize("name, arch", [("tiny_moe", "MixtralForCausalLM"),
                                        ("deep_top1", "Qwen3MoeForCausalLM"),
                                        ("fine_shared", "Qwen2MoeForCausalLM")])
def test_quick_base_model_round_trips_through_transformers(cache, name, arch):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  model = load_model(f"{name}:quick")
  assert model.source.startswith(cache) and model.source.endswith("hf")
  assert json.load(open(os.path.join(model.source, "config.json")))["architectures"] == [arch]
  tokens = _tokens(model.cfg.vocab_size)
  ours = np.asarray(model.module.apply(model.variables, tokens))
  hf = transformers.AutoModelForCausalLM.from_pretrained(model.source, dtype=torch.float32)
  with torch.no_grad():
    ref = hf.eval()(torch.tensor(tokens)).logits.numpy()
  assert np.abs(ours - ref).max() / np.abs(ref).max() < 1e-4
  # The training workdir it came from gives the same function (tied scaled head vs untied).
  train = load_model(os.path.join(os.path.dirname(model.source), "moe"))
  assert train.cfg.tie_embeddings and not model.cfg.tie_embeddings
  np.testing.assert_allclose(np.asarray(train.module.apply(train.variables, tokens)), ours,
                             rtol=1e-5, atol=1e-5)


def test_cache_is_reused_and_partial_entries_are_rebuilt(cache):
  path = base_models.ensure("tiny_moe:quick")
  entry = os.path.dirname(path)
  stamp = os.path.join(entry, base_models.STAMP)
  mtime = os.path.getmtime(stamp)
  assert base_models.ensure("tiny_moe:quick") == path and os.path.getmtime(stamp) == mtime
  before = load_model("tiny_moe:quick").variables
  os.remove(os.path.join(path, "model.safetensors"))  # a damaged entry ...
  with open(stamp, "w") as f:  # ... or one whose stamp is of another config
    json.dump({"format": -1}, f)
  again = base_models.ensure("tiny_moe:quick")
  assert again == path and os.path.getmtime(stamp) > mtime
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(load_model(again).variables)):
    np.testing.assert_array_equal(a, b)  # resumed from its own finished checkpoints


def test_other_config_gets_another_entry():
  quick = base_models.base_config("tiny_moe:quick")
  other = quick.override("train.num_steps", "7")
  assert (base_models.entry_dir("tiny_moe:quick", quick) !=
          base_models.entry_dir("tiny_moe:quick", other))


def test_load_model_errors(tmp_path):
  with pytest.raises(ConfigError, match="^model: 'no_such_model' is neither a directory"):
    load_model("no_such_model")
  with pytest.raises(ConfigError, match="^model: .* holds neither a Hugging Face checkpoint"):
    load_model(str(tmp_path))
  with pytest.raises(ConfigError, match="^model: unknown base model"):
    base_models.base_config("tiny:quick")


def test_load_model_from_a_train_workdir_is_bit_exact(tmp_path):
  from moe_jax.data.corpus import lm_data  # pylint: disable=g-import-not-at-top
  from moe_jax.train.loop import train_lm  # pylint: disable=g-import-not-at-top
  config = base_models.base_config("tiny_moe:quick").override("train.num_steps", "3")
  train_tokens, evals = lm_data(config.data, config.train.seq_len)
  run = train_lm(config.model, config.train, train_tokens, evals, str(tmp_path / "moe"))
  loaded = load_model(str(tmp_path))  # experiments.train's workdir: its MoE
  assert loaded.cfg == config.model
  for a, b in zip(jax.tree.leaves(run["state"].params), jax.tree.leaves(loaded.variables["params"])):
    np.testing.assert_array_equal(a, b)
