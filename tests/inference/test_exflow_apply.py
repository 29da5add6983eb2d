"""Placements applied to an LM: same logits, routes relabelled by the permutation."""
import jax
import numpy as np
import pytest

from moe_jax.analysis import traces
from moe_jax.inference.exflow import placement
from moe_jax.inference.exflow.apply import apply_placement
from moe_jax.models.config import LMConfig
from moe_jax.models.lm import MoELM
from moe_jax.models.loading import LoadedModel
from moe_jax.utils.errors import ConfigError
from tests.inference.exflow_coherent_checks import init_variables

BASE = dict(vocab_size=48, d_model=16, num_layers=3, num_heads=2, num_kv_heads=1, d_ff=16,
            max_len=16, first_dense=1)


def model_and_variables(**moe):
  cfg = LMConfig.from_dict({**BASE, "moe": dict(num_experts=8, d_ff=8, **moe)})
  return cfg, MoELM(cfg), init_variables(cfg, 3)  # a nonzero aux-free bias: permuting it matters


@pytest.mark.parametrize("moe", [dict(top_k=1, normalize_topk=False, shared_d_ff=8),
                                 dict(top_k=2, router="sigmoid_group", routed_scaling_factor=2.0)])
def test_applied_placement_keeps_the_function_and_relabels_the_routes(moe):
  cfg, model, variables = model_and_variables(**moe)
  tokens = np.random.default_rng(1).integers(0, 48, (4, 9))
  p = placement.random_balanced(2, 8, 4, seed=5)
  placed = apply_placement(cfg, variables, p, 4)
  forward = jax.jit(model.apply)
  np.testing.assert_allclose(forward(placed, tokens), forward(variables, tokens), rtol=1e-5,
                             atol=1e-5)
  _, inverse = placement.permutation(p, 4)
  route = lambda v: traces.capture(LoadedModel(model, v, "test"), tokens).stack("expert")
  before, after = route(variables), route(placed)
  np.testing.assert_array_equal(np.sort(after, -1),
                                np.sort(placement.relabel(before, inverse), -1))
  # In the new numbering the contiguous placement is `p`: same crossings.
  contiguous = placement.contiguous(2, 8, 4)
  assert placement.trace_cost(contiguous, after) == pytest.approx(
      placement.trace_cost(p, before))


def test_apply_placement_refuses_what_it_cannot_keep():
  cfg, _, variables = model_and_variables(top_k=1)
  with pytest.raises(ConfigError, match=r"^placement: shape \(3, 8\)"):
    apply_placement(cfg, variables, placement.contiguous(3, 8, 4), 4)
  grouped = LMConfig.from_dict({**BASE, "moe": dict(num_experts=8, top_k=2, d_ff=8,
                                                    router="sigmoid_group", n_group=2,
                                                    topk_group=1)})
  with pytest.raises(ConfigError, match="^model.moe.n_group: group-limited routing"):
    apply_placement(grouped, variables, placement.contiguous(2, 8, 4), 4)
