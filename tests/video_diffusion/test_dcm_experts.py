"""The detail expert's parameter-efficient form, LoRA against NumPy, and the routing of experts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from moe_jax.utils.trees import param_count
from moe_jax.video_diffusion import dcm_experts
from moe_jax.video_diffusion.dit import LoRADense, VideoDiT
from moe_jax.video_diffusion.schedule import FlowSchedule

ARCH = dict(frames=4, size=8, patch=4, width=8, depth=2, heads=2)


def _perturbed(params, seed, scale=0.3):
  """Random non-zero values everywhere (the zero-initialised gates and output head included)."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(tree, [p + scale * jax.random.normal(k, p.shape)
                                   for p, k in zip(leaves, keys)])


def _inputs(seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(2, 4, 8, 8, 1)).astype(np.float32)
  return x, rng.uniform(0, 1, 2).astype(np.float32)


@pytest.fixture(scope="module")
def semantic():
  model = VideoDiT(**ARCH)
  x, s = _inputs(0)
  return _perturbed(model.init(jax.random.PRNGKey(0), x, s)["params"], 1)


def test_lora_dense_matches_numpy():
  rng = np.random.default_rng(0)
  layer = LoRADense(5, rank=3, alpha=6.0)
  x = rng.normal(size=(4, 7)).astype(np.float32)
  params = _perturbed(layer.init(jax.random.PRNGKey(0), x), 2)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
  ref = x @ p["base"]["kernel"] + p["base"]["bias"] + 2.0 * (x @ p["lora_a"]) @ p["lora_b"]
  np.testing.assert_allclose(np.asarray(layer.apply(params, x)), ref, rtol=1e-4, atol=1e-5)


def test_lora_dense_keeps_the_base_initialiser():
  layer = LoRADense(6, rank=2, alpha=4.0, kernel_init=jax.nn.initializers.zeros)
  params = layer.init(jax.random.PRNGKey(0), np.ones((1, 3), np.float32))["params"]
  assert not np.any(np.asarray(params["base"]["kernel"]))
  assert np.any(np.asarray(params["lora_a"])) and not np.any(np.asarray(params["lora_b"]))


@pytest.mark.parametrize("seed,adaln", [(0, False), (1, True)])
def test_detail_expert_with_zero_adapters_equals_semantic_expert(semantic, seed, adaln):
  x, s = _inputs(seed + 10)
  lora_model = VideoDiT(**ARCH, lora_rank=2, lora_alpha=4.0, lora_adaln=adaln)
  trainable, frozen = dcm_experts.init_detail_expert(lora_model, semantic,
                                                     jax.random.PRNGKey(seed), x, s)
  apply = dcm_experts.expert_apply(lora_model)
  v_sem = VideoDiT(**ARCH).apply({"params": semantic}, x, s)
  v_det = apply(trainable, frozen, x, s)
  assert float(jnp.abs(v_sem).max()) > 1e-2                       # the check is not vacuous
  np.testing.assert_allclose(np.asarray(v_det), np.asarray(v_sem), atol=1e-5)
  # Non-zero adapters (B factors) change the output.
  flat = traverse_util.flatten_dict(trainable)
  moved = {k: (v + 0.5 if k[-1] == "lora_b" else v) for k, v in flat.items()}
  v_moved = apply(traverse_util.unflatten_dict(moved), frozen, x, s)
  assert float(jnp.abs(v_moved - v_sem).max()) > 1e-3


@pytest.mark.parametrize("adaln", [False, True])
def test_detail_expert_trains_only_adapters_and_its_own_copies(semantic, adaln):
  x, s = _inputs(3)
  lora_model = VideoDiT(**ARCH, lora_rank=2, lora_alpha=4.0, lora_adaln=adaln)
  trainable, frozen = dcm_experts.init_detail_expert(lora_model, semantic, jax.random.PRNGKey(0),
                                                     x, s)
  t_keys = traverse_util.flatten_dict(trainable)
  f_keys = traverse_util.flatten_dict(frozen)
  assert all(k[-1] in ("lora_a", "lora_b") or k[0] in ("time_embed", "final") for k in t_keys)
  lora_targets = {k[-2] for k in t_keys if k[-1] == "lora_b"}
  assert lora_targets == {"to_q", "to_k", "to_v", "to_out"} | ({"adaln"} if adaln else set())
  # 2 blocks x 2 attentions x 4 projections carry adapters (and each block's adaLN layer).
  assert sum(k[-1] == "lora_b" for k in t_keys) == 16 + 2 * adaln
  assert not any(k[-1].startswith("lora") for k in f_keys)
  sem_flat = traverse_util.flatten_dict(semantic)
  assert set(f_keys) | {k for k in t_keys if not k[-1].startswith("lora")} == set(sem_flat)
  assert param_count(trainable) < param_count(semantic)


def test_dual_velocity_routes_by_noise_level():
  sched = FlowSchedule(shift=3.0, euler_steps=20, boundary_index=15)
  velocity = dcm_experts.dual_velocity(sched, lambda x, s: x * 0 + 1.0,
                                       lambda x, s: x * 0 - 1.0)
  x = jnp.zeros((2, 1))
  for i, sigma in enumerate(sched.sigmas):
    assert float(velocity(x, float(sigma))[0, 0]) == (-1.0 if i < 15 else 1.0)


def test_weight_difference_matches_numpy(semantic):
  other = _perturbed(semantic, 5, scale=0.1)
  got = dcm_experts.weight_difference(semantic, other)
  ref, oth = traverse_util.flatten_dict(semantic), traverse_util.flatten_dict(other)
  groups = {}
  for key, a in ref.items():
    names = [p for p in key if not p.startswith("blocks_") and p not in ("space_attn", "time_attn")]
    d = np.asarray(oth[key], np.float64) - np.asarray(a, np.float64)
    acc = groups.setdefault(names[0], [0.0, 0.0])
    acc[0] += (d ** 2).sum()
    acc[1] += (np.asarray(a, np.float64) ** 2).sum()
  assert set(got) == set(groups) >= {"to_q", "to_out", "adaln", "mlp_in", "time_embed", "final"}
  for g, (d, r) in groups.items():
    assert got[g] == pytest.approx(np.sqrt(d / r), rel=1e-4)
  assert all(v == 0.0 for v in dcm_experts.weight_difference(semantic, semantic).values())
