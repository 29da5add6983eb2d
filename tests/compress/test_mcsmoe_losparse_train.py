"""LoSparse training hooks: factor gradients by autodiff, the pruned step, storage, one-shot."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.compress.mcsmoe import losparse, losparse_train
from moe_jax.compress.mcsmoe.losparse_train import LoSparseConfig
from moe_jax.train.loop import TrainConfig
from tests.eval.tiny import random_model

COUNTS = {0: 3, 1: 2}  # referenced experts of each MoE layer (of 4 stored)


def _params(seed):
  model = random_model(seed, moe=dict(num_experts=4, top_k=2, d_ff=12))
  return model, nn.unbox(model.variables["params"])


def _rows_kept(sparse):
  """(kept rows, rows) over a tree of S [k, M, N]: a row is one output column."""
  kept = sum(int(np.sum(np.any(np.asarray(s) != 0, axis=-2))) for s in jax.tree.leaves(sparse))
  return kept, sum(s.shape[0] * s.shape[-1] for s in jax.tree.leaves(sparse))


def test_factor_gradients_are_the_gradients_through_w_equals_lr_plus_s():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((5, 12)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((2, 12, 16)), jnp.float32)
  left, right, sparse = losparse.decompose(w, 3)
  loss = lambda w: jnp.sum(jnp.sin(x @ w))
  factors = {"left": {"w": left}, "right": {"w": right}, "sparse": {"w": sparse}}
  got = losparse_train.factor_grads(factors, {"w": jax.grad(loss)(w)})
  want = jax.grad(lambda l, r, s: loss(losparse.compose(l, r, s)), argnums=(0, 1, 2))(
      left, right, sparse)
  for name, g in zip(("left", "right", "sparse"), want):
    np.testing.assert_allclose(got[name]["w"], g, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_the_hook_keeps_w_equal_to_its_factors_and_prunes_s_to_the_final_fraction():
  _, params = _params(1)
  cfg, train = LoSparseConfig(rank=2, warmup_steps=1), TrainConfig(num_steps=8, warmup_steps=1)
  post_update, init_hook_state = losparse_train.hooks(params, COUNTS, cfg, train)
  state = init_hook_state(params)
  for layer, k in COUNTS.items():
    for m, w in params[f"layer_{layer}"]["moe"]["experts"].items():
      f = {p: state["factors"][p][f"layer_{layer}"][m] for p in ("left", "right", "sparse")}
      np.testing.assert_allclose(losparse.compose(f["left"], f["right"], f["sparse"]), w[:k],
                                 atol=1e-5)
  rng = np.random.default_rng(2)
  grads = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)
  new, state = jax.jit(post_update)(params, grads, state, jnp.asarray(8))  # past the schedule
  kept, rows = _rows_kept(state["factors"]["sparse"])
  assert kept == pytest.approx(0.1 * rows, abs=2)
  f = state["factors"]
  for layer, k in COUNTS.items():
    experts, old = new[f"layer_{layer}"]["moe"]["experts"], params[f"layer_{layer}"]["moe"]["experts"]
    for m, w in experts.items():
      want = losparse.compose(f["left"][f"layer_{layer}"][m], f["right"][f"layer_{layer}"][m],
                              f["sparse"][f"layer_{layer}"][m])
      np.testing.assert_allclose(w[:k], want, atol=1e-6)
      np.testing.assert_array_equal(w[k:], old[m][k:])  # unreferenced experts untouched
      assert not np.allclose(w[:k], old[m][:k])
  assert not losparse_train.frozen(("layer_0", "moe", "router", "gate", "kernel"))
  assert not losparse_train.frozen(("layer_0", "moe", "experts", "wo"))
  assert losparse_train.frozen(("layer_0", "attn", "q", "kernel"))


def test_storage_counts_low_rank_values_kept_rows_and_their_indices():
  rng = np.random.default_rng(3)
  s = rng.standard_normal((2, 6, 5)).astype(np.float32)  # [k, M, N]
  s[0][:, [1, 3]] = 0.0
  s[1][:, [0, 1, 2, 4]] = 0.0
  factors = {"left": {"layer_0": {"wo": np.zeros((2, 6, 2))}},
             "right": {"layer_0": {"wo": np.zeros((2, 2, 5))}},
             "sparse": {"layer_0": {"wo": s}}}
  got = losparse_train.storage(factors)["layer_0"]
  np.testing.assert_array_equal(got["indices"], [3, 1])
  np.testing.assert_array_equal(got["values"], [2 * 11 + 3 * 6, 2 * 11 + 6])
  np.testing.assert_array_equal(got["flops"], 2 * got["values"])


@pytest.mark.slow
def test_one_shot_prunes_s_at_once_and_writes_lr_plus_s():
  model, params = _params(4)
  cfg = LoSparseConfig(rank=2, final_fraction=0.25)
  batches = [np.random.default_rng(s).integers(0, 256, (2, 9)).astype(np.int32) for s in (5, 6)]
  loss = lambda logits, batch: jnp.mean(
      jax.nn.log_softmax(logits)[..., 0] * (batch[:, 1:] >= 0))
  pruned, factors = losparse_train.one_shot(model, COUNTS, cfg, loss, batches)
  kept, rows = _rows_kept(factors["sparse"])
  assert kept == pytest.approx(0.25 * rows, abs=2)
  experts = nn.unbox(pruned.variables["params"])["layer_1"]["moe"]["experts"]
  want = losparse.compose(factors["left"]["layer_1"]["wi_up"], factors["right"]["layer_1"]["wi_up"],
                          factors["sparse"]["layer_1"]["wi_up"])
  np.testing.assert_allclose(experts["wi_up"][:2], want, atol=1e-6)
  assert losparse_train.scaled_rank(768, 3072) == 32 and losparse_train.scaled_rank(192, 256) == 6
