"""The alpha-beta cost model of the standard and coherent decode steps, against hand sums."""
import pytest

from moe_jax.inference.exflow import cost
from moe_jax.utils.errors import ConfigError

TRAFFIC = cost.Traffic(standard_row_bytes=1000.0, coherent_row_bytes=600.0, gather_bytes=2000.0,
                       moe_layers=4, num_layers=5)
LINK = cost.LinkConfig(bandwidth_gb_s=100.0, latency_us=10.0)  # 1e5 bytes per us


def test_one_node_steps_are_the_documented_sums():
  topo = cost.Topology(4, 4, LINK)
  assert topo.leaving() == (0.75, 0.0)
  tokens = 100
  # standard: 4 layers x 2 all-to-alls of 100 rows x 500 B, 3/4 of them leaving
  want_std = 4 * 2 * (10 + 100 * 500 * 0.75 / 1e5)
  assert cost.standard_us(topo, TRAFFIC, tokens, 0.0) == pytest.approx(want_std)
  # coherent: the first layer leaves home like the standard dispatch, 3 layers cross with p,
  # then every token's 2000 B go to the 3 other devices
  p = 0.2
  want_coh = (10 + 100 * 600 * 0.75 / 1e5) + 3 * (10 + 100 * 600 * p / 1e5) + (
      10 + 100 * 2000 * 3 / 1e5)
  assert cost.coherent_us(topo, TRAFFIC, tokens, p, 0.0, 0.0) == pytest.approx(want_coh)
  only = want_coh - 100 * (2000 - 8) * 3 / 1e5
  assert cost.coherent_us(topo, TRAFFIC, tokens, p, 0.0, 0.0, tokens_only=True) == \
      pytest.approx(only)
  # compute is added per layer on both paths
  assert cost.standard_us(topo, TRAFFIC, tokens, 2.0) == pytest.approx(want_std + 5 * 2.0)


def test_latency_bound_steps_differ_by_the_collective_count():
  topo = cost.Topology(8, 8, LINK)
  tiny = TRAFFIC.scaled(1e-9)
  ratio = cost.standard_us(topo, tiny, 1, 0.0) / cost.coherent_us(topo, tiny, 1, 0.5, 0.0, 0.0)
  assert ratio == pytest.approx(2 * 4 / (4 + 1), rel=1e-6)  # 2L against L + the all-gather


def test_leaving_the_node_uses_the_network():
  net = cost.LinkConfig(bandwidth_gb_s=10.0, latency_us=30.0)
  topo = cost.Topology(8, 4, LINK, net)
  q_in, q_out = topo.leaving()
  assert (q_in, q_out) == (3 / 8, 4 / 8)
  assert cost.all_to_all_us(topo, 10, 100.0, q_in, q_out) == pytest.approx(
      30 + 10 * 100 * (q_in / 1e5 + q_out / 1e4))
  assert cost.all_to_all_us(topo, 10, 100.0, 0.5, 0.0) == pytest.approx(10 + 10 * 100 * 0.5 / 1e5)
  assert cost.all_gather_us(topo, 1000.0) == pytest.approx(30 + 1000 * (3 / 1e5 + 4 / 1e4))


def test_hops_per_token():
  assert cost.hops_per_token(8, 4, None) == pytest.approx(2 * 8 * 0.75)
  assert cost.hops_per_token(8, 4, 0.5) == pytest.approx(0.75 + 7 * 0.5)


def test_bad_fields_are_refused():
  with pytest.raises(ConfigError, match="^bandwidth_gb_s: must be > 0"):
    cost.LinkConfig(bandwidth_gb_s=0.0)
  with pytest.raises(ConfigError, match="^latency_us: must be >= 0"):
    cost.LinkConfig(latency_us=-1.0)
  with pytest.raises(ConfigError, match="^devices_per_node: 3 does not divide 8"):
    cost.Topology(8, 3, LINK)
  with pytest.raises(ConfigError, match="^cost.links.nvlink.bandwidth_gb_s: must be > 0"):
    cost.CostConfig.from_dict({"links": {"nvlink": {"bandwidth_gb_s": -1.0}}}, "cost")
