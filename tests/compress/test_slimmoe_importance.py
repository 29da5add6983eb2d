"""SlimMoE importance: Taylor saliency and its neuron / GQA-group reductions vs float64 NumPy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.compress.slimmoe.importance import (ffn_neuron_scores, gqa_group_scores,
                                                 saliency)
from moe_jax.train.distill import kd_objective
from moe_jax.utils.errors import ConfigError
from tests.eval.tiny import perturbed, random_model

E, F = 4, 8


def _model(seed):
  return random_model(seed, moe=dict(num_experts=E, d_ff=F, dispatch="dense",
                                     capacity_factor=0.0, load_balance_coef=0.0))


def _batches(seed, n=2):
  return np.random.default_rng(seed).integers(0, 256, (n, 2, 13)).astype(np.int32)


def test_taylor_saliency_against_float64_per_batch_reference():
  seed = int(np.random.default_rng().integers(1 << 30))
  teacher = _model(seed)
  student = perturbed(teacher, 0.2, seed + 1)
  hooks = kd_objective(teacher.module, teacher.variables, top_k=8, temperature=1.0)
  batches = _batches(seed + 2)
  got = saliency("taylor", student.module, student.variables, batches, hooks.objective,
                 hooks.objective_args)

  def loss(params, batch):
    logits = student.module.apply({"params": params}, batch[:, :-1])
    return hooks.objective(logits, batch, teacher.variables)[0]

  grad = jax.jit(jax.grad(loss))
  grads = [jax.tree.map(lambda g: np.asarray(g, np.float64),
                        grad(student.variables["params"], jnp.asarray(b))) for b in batches]
  theta = jax.tree.map(lambda p: np.asarray(p, np.float64), student.variables["params"])
  want = jax.tree.map(lambda t, *g: np.mean([np.abs(t * x) for x in g], axis=0), theta, *grads)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-7), got, want)
  # a neuron whose weights are all zero has Taylor score zero; the others of its expert (the
  # most salient one, so it is routed tokens) do not
  ffn = jax.tree.map(jnp.asarray, student.variables["params"]["layer_1"]["moe"]["experts"])
  e = int(np.argmax(np.sum(ffn_neuron_scores(got["layer_1"]["moe"]["experts"]), axis=-1)))
  j = int(np.random.default_rng(seed).integers(F))
  ffn = {k: (w.at[e, j].set(0) if k == "wo" else w.at[e, :, j].set(0)) for k, w in ffn.items()}
  params = jax.tree.map(lambda x: x, student.variables["params"])
  params["layer_1"]["moe"]["experts"] = ffn
  zeroed = saliency("taylor", student.module, {"params": params}, batches, hooks.objective,
                    hooks.objective_args)
  scores = np.asarray(ffn_neuron_scores(zeroed["layer_1"]["moe"]["experts"]))
  assert scores[e, j] == 0 and np.all(np.delete(scores[e], j) > 0)


def test_neuron_and_group_reductions_against_float64_loops():
  rng = np.random.default_rng()
  d, h, g, k = 6, 6, 3, 4
  ffn = {n: rng.random((E, d, F)) for n in ("wi_gate", "wi_up")} | {"wo": rng.random((E, F, d))}
  want = np.array([[ffn["wi_gate"][e, :, j].sum() + ffn["wi_up"][e, :, j].sum()
                    + ffn["wo"][e, j, :].sum() for j in range(F)] for e in range(E)])
  np.testing.assert_allclose(ffn_neuron_scores(jax.tree.map(jnp.asarray, ffn)), want, rtol=1e-5)
  attn = {"q_proj": {"kernel": rng.random((d, h, k)), "bias": rng.random((h, k))},
          "k_proj": {"kernel": rng.random((d, g, k)), "bias": rng.random((g, k))},
          "v_proj": {"kernel": rng.random((d, g, k)), "bias": rng.random((g, k))},
          "o_proj": {"kernel": rng.random((h, k, d))}}
  want = np.zeros(g)
  for head in range(h):
    group = head // (h // g)
    want[group] += (attn["q_proj"]["kernel"][:, head].sum() + attn["q_proj"]["bias"][head].sum()
                    + attn["o_proj"]["kernel"][head].sum())
  for group in range(g):
    want[group] += sum(attn[n]["kernel"][:, group].sum() + attn[n]["bias"][group].sum()
                       for n in ("k_proj", "v_proj"))
  np.testing.assert_allclose(gqa_group_scores(jax.tree.map(jnp.asarray, attn)), want, rtol=1e-5)


def test_magnitude_and_random_baselines():
  model = _model(0)
  params = model.variables["params"]
  mag = saliency("magnitude", model.module, model.variables, None, None)
  jax.tree.map(lambda s, p: np.testing.assert_array_equal(s, np.abs(p)), mag, params)
  first, again = (saliency("random", model.module, model.variables, None, None, seed=3)
                  for _ in range(2))
  other = saliency("random", model.module, model.variables, None, None, seed=4)
  jax.tree.map(np.testing.assert_array_equal, first, again)
  leaves = jax.tree.leaves(first)
  assert all(np.all((x >= 0) & (x < 1)) for x in leaves)
  assert not np.array_equal(leaves[0], jax.tree.leaves(other)[0])
  with pytest.raises(ConfigError, match="score"):
    saliency("fisher", model.module, model.variables, None, None)
