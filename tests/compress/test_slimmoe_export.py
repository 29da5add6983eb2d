"""A slimmed model (narrower experts, fewer GQA groups) round-trips through the HF format."""
import jax
import numpy as np
import pytest

from moe_jax.compress.mcsmoe.export import logit_gap, save, transformers_gap
from moe_jax.compress.slimmoe.slimming import slim
from moe_jax.models.lm import MoELM
from moe_jax.models.loading import LoadedModel, load_model
from tests.eval.tiny import random_model


@pytest.mark.slow
def test_slimmed_model_saves_and_loads_with_logit_parity(tmp_path):
  pytest.importorskip("transformers")
  seed = int(np.random.default_rng().integers(1 << 30))
  model = random_model(seed, num_heads=4, num_kv_heads=2, moe=dict(num_experts=4, d_ff=16))
  rng = np.random.default_rng(seed + 1)
  scores = jax.tree.map(lambda x: rng.random(x.shape), model.variables["params"])
  # transformers 5 (torch._grouped_mm) needs expert rows of a multiple of 16 bytes: F = 8
  cfg, variables = slim(model.cfg, model.variables, scores, 8, num_kv_heads=1)
  slimmed = LoadedModel(MoELM(cfg), variables, "slimmed")
  path = str(tmp_path / "hf")
  save(slimmed, path)
  back = load_model(path)
  assert (back.cfg.moe.d_ff, back.cfg.num_kv_heads, back.cfg.num_heads) == (8, 1, 2)
  tokens = rng.integers(0, 256, (2, 16))
  assert logit_gap(back, slimmed, tokens) < 1e-4
  assert transformers_gap(slimmed, path, tokens) < 1e-4
