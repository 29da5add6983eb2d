"""Training with another objective: KD from a frozen teacher, frozen parameters, a post-update
hook with its own state, starting from given variables; resume stays exact; equal runs share
one compiled step."""
import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.models.lm import MoELM
from moe_jax.train import loop
from moe_jax.train.distill import freeze, kd_objective, kl_divergence
from moe_jax.train.loop import train_lm
from moe_jax.utils.errors import ConfigError
from tests.train.conftest import MODEL, TRAIN



@pytest.fixture(scope="module")
def teacher():
  module = MoELM(dataclasses.replace(MODEL, moe=dataclasses.replace(MODEL.moe, d_ff=24)))
  variables = nn.unbox(module.init(jax.random.key(7), jnp.zeros((1, 16), jnp.int32)))
  return module, variables


def test_kl_matches_numpy():
  rng = np.random.default_rng()
  t, s = rng.normal(size=(2, 3, 5, 11)) * 2
  for temperature, top_k in ((1.0, None), (2.0, None), (1.5, 4)):
    tt, ss = t / temperature, s / temperature
    if top_k:
      idx = np.argsort(-tt, axis=-1)[..., :top_k]
      tt, ss = np.take_along_axis(tt, idx, -1), np.take_along_axis(ss, idx, -1)
    lp = tt - np.log(np.exp(tt).sum(-1, keepdims=True))
    lq = ss - np.log(np.exp(ss).sum(-1, keepdims=True))
    want = np.mean(np.sum(np.exp(lp) * (lp - lq), -1))
    got = float(kl_divergence(jnp.asarray(t), jnp.asarray(s), temperature, top_k))
    assert got == pytest.approx(want, rel=1e-5)
  assert float(kl_divergence(jnp.asarray(t), jnp.asarray(t), 2.0)) == pytest.approx(0, abs=1e-6)


def _clip_hook():
  """A post-update edit with state: clips the router kernels and counts the steps."""
  def post_update(params, grads, count, step):
    del grads, step
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.clip(x, -0.05, 0.05) if "router" in jax.tree_util.keystr(path)
        else x, params)
    return params, count + 1
  return post_update, lambda params: jnp.zeros((), jnp.int32)


def test_kd_resume_is_exact_with_frozen_routers(tmp_path, data, teacher):
  stream, evals = data
  t_module, t_vars = teacher
  start = nn.unbox(MoELM(MODEL).init(jax.random.key(3), jnp.zeros((1, 16), jnp.int32)))
  post, init_hook = _clip_hook()
  hooks = kd_objective(t_module, t_vars, alpha=0.5, temperature=2.0, trainable=freeze("router"),
                       post_update=post, init_hook_state=init_hook)
  full = train_lm(MODEL, TRAIN, stream, evals, str(tmp_path / "full"), hooks=hooks,
                  variables=start)
  train_lm(MODEL, TRAIN, stream, evals, str(tmp_path / "cut"), hooks=hooks, variables=start,
           until_step=3)
  resumed = train_lm(MODEL, TRAIN, stream, evals, str(tmp_path / "cut"), hooks=hooks,
                     variables=start)
  for a, b in zip(jax.tree.leaves(full["state"]), jax.tree.leaves(resumed["state"])):
    np.testing.assert_array_equal(a, b)
  assert int(resumed["state"].hook_state) == 6
  params = full["state"].params
  for layer in ("layer_0", "layer_1"):  # routers frozen: the (clipped) start values
    np.testing.assert_array_equal(params[layer]["moe"]["router"]["gate"]["kernel"],
                                  np.clip(start["params"][layer]["moe"]["router"]["gate"]
                                          ["kernel"], -0.05, 0.05))
  moved = params["layer_0"]["moe"]["experts"]["wi_up"] - start["params"]["layer_0"]["moe"][
      "experts"]["wi_up"]
  assert np.abs(moved).max() > 0  # the experts did train


def test_kd_loss_is_what_the_step_minimises(tmp_path, data, teacher):
  """Pure distillation (ce_weight 0) from the teacher itself: the logged KL of the first step
  is 0 and the loss is alpha T^2 KL; with a different start it is positive."""
  stream, evals = data
  t_module, t_vars = teacher
  train = dataclasses.replace(TRAIN, num_steps=1, log_every=1)
  hooks = kd_objective(t_module, t_vars, alpha=1.0, ce_weight=0.0)
  train_lm(t_module.cfg, train, stream, evals, str(tmp_path / "self"), hooks=hooks,
           variables=t_vars)
  first = json.loads(open(tmp_path / "self" / "metrics.jsonl").readline())
  assert abs(first["kl"]) < 1e-6 and abs(first["loss"]) < 4e-6 and first["ce"] > 1.0
  other = nn.unbox(t_module.init(jax.random.key(8), jnp.zeros((1, 16), jnp.int32)))
  train_lm(t_module.cfg, train, stream, evals, str(tmp_path / "other"), hooks=hooks,
           variables=other)
  first = json.loads(open(tmp_path / "other" / "metrics.jsonl").readline())
  assert first["kl"] > 1e-4 and first["loss"] == pytest.approx(4 * first["kl"], rel=1e-5)


def test_start_variables_of_other_shapes_are_refused(tmp_path, data, teacher):
  stream, evals = data
  _, t_vars = teacher  # experts of width 24, the model's are 16
  with pytest.raises(ConfigError, match="^variables: parameter 'layer_0/moe/experts/wi_gate'"):
    train_lm(MODEL, TRAIN, stream, evals, str(tmp_path), variables=t_vars)


def test_equal_runs_share_one_compiled_step(tmp_path, data, teacher):
  """Two KD runs of equal shapes and settings, from other teacher weights and another start,
  reuse one jitted step and evaluator; the second run's state is the one a step built afresh
  gives (bit for bit)."""
  stream, evals = data
  t_module, t_vars = teacher
  shape = jnp.zeros((1, 16), jnp.int32)
  other = nn.unbox(t_module.init(jax.random.key(9), shape))
  starts = [nn.unbox(MoELM(MODEL).init(jax.random.key(s), shape)) for s in (4, 5)]
  run = lambda name, t, start: train_lm(MODEL, TRAIN, stream, evals, str(tmp_path / name),
                                        hooks=kd_objective(t_module, t, alpha=0.5),
                                        variables=start)["state"]
  loop.jitted_functions.cache_clear()
  run("first", t_vars, starts[0])
  shared = run("second", other, starts[1])
  info = loop.jitted_functions.cache_info()
  assert (info.misses, info.hits) == (1, 1)
  loop.jitted_functions.cache_clear()
  fresh = run("fresh", other, starts[1])
  for a, b in zip(jax.tree.leaves(shared), jax.tree.leaves(fresh)):
    np.testing.assert_array_equal(a, b)
