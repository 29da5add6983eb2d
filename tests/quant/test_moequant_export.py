"""The pack-quantized export: the stored words against a NumPy packing of the integers, the round
trip back into moe_jax, the refusals; and (slow) transformers + compressed-tensors loading what we
wrote for every family, logits equal to our fake-quantized model."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from moe_jax.convert.hf import load_pretrained
from moe_jax.models.loading import LoadedModel
from moe_jax.quant import apply, export
from moe_jax.utils.errors import ConfigError
from tests.eval.tiny import random_model

OPTIONS = apply.QuantOptions(mse_clip=False, batch_size=4)
TOKENS = np.random.default_rng(0).integers(0, 256, (2, 12))


def _np_pack(q: np.ndarray, bits: int) -> np.ndarray:
  """Words of q [O, I] by a loop: value k of a word in bits [b k, b (k + 1)), stored as q + 2^(b-1)."""
  per = 32 // bits
  out = np.zeros((q.shape[0], q.shape[1] // per), np.int64)
  for o in range(q.shape[0]):
    for j in range(out.shape[1]):
      for k in range(per):
        out[o, j] |= (int(q[o, j * per + k]) + (1 << (bits - 1))) << (bits * k)
  return out.astype(np.uint32).view(np.int32)


def _logits(model: LoadedModel, tokens) -> np.ndarray:
  """One compilation per model shape (an eager apply compiles op by op)."""
  return np.asarray(jax.jit(model.module.apply)(model.variables, jnp.asarray(tokens)))


def _rel(a, b):
  return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.mark.slow
def test_saved_words_and_the_round_trip(tmp_path):
  model = random_model(seed=1)
  recipe = apply.QuantRecipe(method="rtn", bits=4, group_size=8, options=OPTIONS)
  qm = apply.quantize_model(model, recipe)
  path = str(tmp_path / "q")
  export.save_quantized(qm, path)
  tensors = load_file(os.path.join(path, "model.safetensors"))
  lin = qm.linears["layer_1/moe/experts/wo"]  # Mixtral names: w2 of expert 3
  prefix = "model.layers.1.block_sparse_moe.experts.3.w2."
  np.testing.assert_array_equal(tensors[prefix + "weight_packed"], _np_pack(lin.q[3], 4))
  np.testing.assert_array_equal(tensors[prefix + "weight_scale"], lin.scale[3])
  np.testing.assert_array_equal(tensors[prefix + "weight_shape"], [16, 16])
  assert prefix + "weight" not in tensors
  assert "model.layers.1.block_sparse_moe.gate.weight" in tensors  # routers stay float
  assert tensors["lm_head.weight"].dtype == np.float32
  with open(os.path.join(path, "config.json")) as f:
    config = json.load(f)["quantization_config"]
  weights = config["config_groups"]["group_0"]["weights"]
  assert config["format"] == "pack-quantized" and "lm_head" in config["ignore"]
  assert (weights["num_bits"], weights["strategy"], weights["group_size"]) == (4, "group", 8)
  back = LoadedModel(*load_pretrained(path, "float32"), path)
  np.testing.assert_array_equal(_logits(back, TOKENS), _logits(qm.model, TOKENS))
  sharded = str(tmp_path / "sharded")
  export.save_quantized(qm, sharded, max_shard_bytes=20_000)
  with open(os.path.join(sharded, "model.safetensors.index.json")) as f:
    weight_map = json.load(f)["weight_map"]
  assert len(set(weight_map.values())) > 2 and prefix + "weight_packed" in weight_map
  back = LoadedModel(*load_pretrained(sharded, "float32"), sharded)
  np.testing.assert_array_equal(_logits(back, TOKENS), _logits(qm.model, TOKENS))


@pytest.mark.parametrize("fields,match", [(dict(bits=3), "bits"),
                                          (dict(options=dict(symmetric=False)), "symmetric")])
def test_refuses_what_transformers_cannot_load(tmp_path, fields, match):
  recipe = apply.QuantRecipe.from_dict({"method": "rtn", "options": {"mse_clip": False},
                                        **fields})
  qm = apply.quantize_model(random_model(seed=0, num_layers=1), recipe)
  with pytest.raises(ConfigError, match=match):
    export.save_quantized(qm, str(tmp_path / "q"))
  assert not os.path.exists(tmp_path / "q")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "phimoe",
                                    "deepseek_v3"])
def test_transformers_loads_what_we_wrote(tmp_path, family):
  pytest.importorskip("compressed_tensors")
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from moe_jax.convert import tiny  # pylint: disable=g-import-not-at-top
  # Widths that 8 nibbles per word divide (DeepSeek's latent ranks are 12 and 20 by default).
  over = dict(kv_lora_rank=16, q_lora_rank=24) if family == "deepseek_v3" else {}
  tiny.build(family, str(tmp_path / "float"), **over)
  model = LoadedModel(*load_pretrained(str(tmp_path / "float"), "float32"), family)
  tokens = np.random.default_rng(1).integers(0, tiny.VOCAB, (8, 16))
  recipe = apply.QuantRecipe(bits=4, group_size=8, options=OPTIONS)
  qm = apply.quantize_model(model, recipe, tokens)  # GPTQ: experts of every kind calibrated
  export.save_quantized(qm, str(tmp_path / "q"))
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "q"),
                                                         dtype=torch.float32).eval()
  with torch.no_grad():
    theirs = hf(torch.tensor(tokens[:2])).logits.numpy()
  ours = _logits(qm.model, tokens[:2])
  assert _rel(theirs, ours) < 1e-4
  float_logits = _logits(model, tokens[:2])
  assert _rel(theirs, float_logits) > 1e-3  # the experts were not left in float (or random)
  back = LoadedModel(*load_pretrained(str(tmp_path / "q"), "float32"), "back")
  np.testing.assert_array_equal(_logits(back, tokens[:2]), ours)
