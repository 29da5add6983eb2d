"""Decode time per step of the standard and the context-coherent expert-parallel paths on a link.

Legend: G devices, M nodes of D devices (G = M D; one node: D = G), B sequences decoding
together (one token each per step), B_l = B / G tokens per device, L MoE layers, r bytes of one
token's all-to-all row (measured from the compiled HLO: standard r_d out + r_c back, coherent
r' = D floats + weight + sequence), k bytes per token of the coherent all-gather (every attention
layer's new cache row and sequence id + (sequence, token)), alpha the latency of one collective,
beta the bandwidth of one device in one direction, q the fraction of a layer's token hops that
leave the device (q_in: to another device of its node, q_out: to another node).

An alpha-beta model of the busiest device, with ragged collectives (only the rows that exist are
sent; the self-block stays local) on a non-blocking fabric, tokens spread evenly:

  all_to_all(rows, r, q_in, q_out) = alpha + rows r (q_in / beta_node + q_out / beta_net)
  all_gather(bytes)                = alpha + bytes ((D - 1) / beta_node + (G - D) / beta_net)
  alpha: the network's when the collective leaves the node, else the node link's

  standard:  T = L [all_to_all(B_l, r_d, q_std) + all_to_all(B_l, r_c, q_std)]
             q_std = ((D - 1) / G, (G - D) / G): a token's home device is independent of its expert
  coherent:  T = all_to_all(B_l, r', q_std) + (L - 1) all_to_all(B_l, r', p) + all_gather(B_l k)
             the first MoE layer leaves the home device like the standard dispatch; then p, the
             placement's crossing fraction between consecutive MoE layers (its staged split)
  coherent, tokens only: the same with k = 8 (sequence, token): ExFlow's own accounting, which
             all-gathers the new tokens and not the K/V (coherent.py says why ours cannot)

plus `compute_us` per layer on every path (0: communication only). Cross-device token hops per
step and token: standard 2 L (G - 1) / G, coherent (G - 1) / G + (L - 1) p (ExFlow: 2 G N L p
against G N (L p* + G)).

Default links (per device, one direction; latency per collective):
  nvlink: 300 GB/s: A100 NVLink 3, 600 GB/s bidirectional per GPU (NVIDIA A100 datasheet;
    nccl-tests on 8 A100s reach about 195 GB/s); 10 us: NCCL's tuning model
    (src/graph/tuning.cc) puts a ring collective at 8.4 us base + a few us per NVLink hop.
  pcie: 25 GB/s: PCIe 4.0 x16 is 31.5 GB/s per direction (16 GT/s x 16 lanes, 128b/130b;
    PCI-SIG), about 25 achieved; 15 us: NCCL's base latency + PCIe hops (an assumption).
  network (between nodes): 25 GB/s: one InfiniBand HDR port, 200 Gb/s (the paper's Wilkes3 has
    dual-rail HDR200 per 4 GPUs); 20 us: an assumption of the same kind.
The latencies are assumptions of the right order, not measurements; every value is a config
field.
"""
from __future__ import annotations

import dataclasses

from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_positive, require


@dataclasses.dataclass(frozen=True)
class LinkConfig(Section):
  """bandwidth_gb_s: per device and direction (1e9 bytes/s); latency_us: of one collective."""
  bandwidth_gb_s: float = 300.0
  latency_us: float = 10.0

  def __post_init__(self):
    check_positive("bandwidth_gb_s", self.bandwidth_gb_s)
    require(self.latency_us >= 0, "latency_us", f"must be >= 0, got {self.latency_us}",
            "use 0 for a latency-free link")


LINKS = {"nvlink": LinkConfig(300.0, 10.0), "pcie": LinkConfig(25.0, 15.0)}
NETWORK = LinkConfig(25.0, 20.0)


@dataclasses.dataclass(frozen=True)
class CostConfig(Section):
  """links: name -> the link between the devices of a node (each priced separately); network:
  the link between nodes (staged rows); tokens_per_device: B_l values to price; compute_us:
  per layer and step on every path (0: communication only); d_model, bytes_per_value: also
  price the measured traffic scaled to this width and element size (d_model 0: measured only;
  every row and cache row grows in proportion, which holds when heads grow with the width)."""
  links: dict[str, LinkConfig] = dataclasses.field(default_factory=lambda: dict(LINKS))
  network: LinkConfig = NETWORK
  tokens_per_device: tuple[int, ...] = (1, 64, 512)
  compute_us: float = 0.0
  d_model: int = 2048
  bytes_per_value: int = 2

  def __post_init__(self):
    require(bool(self.links), "links", "is empty", "give at least one link, e.g. nvlink")
    require(all(t > 0 for t in self.tokens_per_device) and self.tokens_per_device,
            "tokens_per_device", f"must be positive, got {self.tokens_per_device}",
            "give tokens per device such as 1,64")
    require(self.compute_us >= 0, "compute_us", f"must be >= 0, got {self.compute_us}",
            "use 0 for communication only")
    require(self.d_model >= 0, "d_model", f"must be >= 0, got {self.d_model}",
            "use 0 to price the measured width only")
    check_positive("bytes_per_value", self.bytes_per_value)


@dataclasses.dataclass(frozen=True)
class Topology:
  """G devices in nodes of D (D = G: one node), `node` links inside a node, `network` between."""
  devices: int
  devices_per_node: int
  node: LinkConfig
  network: LinkConfig = NETWORK

  def __post_init__(self):
    require(self.devices % self.devices_per_node == 0, "devices_per_node",
            f"{self.devices_per_node} does not divide {self.devices} devices",
            "use whole nodes")

  def leaving(self) -> tuple[float, float]:
    """(q_in, q_out) of a token whose device is uniform and independent of where it is."""
    g, d = self.devices, self.devices_per_node
    return (d - 1) / g, (g - d) / g


def all_to_all_us(topo: Topology, rows: float, row_bytes: float, q_in: float,
                  q_out: float) -> float:
  """One all-to-all: `rows` rows of `row_bytes` per device, fractions q_in / q_out leaving."""
  alpha = (topo.network if q_out > 0 else topo.node).latency_us
  seconds = rows * row_bytes * (q_in / (topo.node.bandwidth_gb_s * 1e9) +
                                q_out / (topo.network.bandwidth_gb_s * 1e9))
  return alpha + 1e6 * seconds


def all_gather_us(topo: Topology, bytes_per_device: float) -> float:
  """One all-gather of `bytes_per_device` from each device to every other."""
  g, d = topo.devices, topo.devices_per_node
  alpha = (topo.network if g > d else topo.node).latency_us
  seconds = bytes_per_device * ((d - 1) / (topo.node.bandwidth_gb_s * 1e9) +
                                (g - d) / (topo.network.bandwidth_gb_s * 1e9))
  return alpha + 1e6 * seconds


@dataclasses.dataclass(frozen=True)
class Traffic:
  """Per-token bytes of one decode step, measured on the model (measure.py): the standard
  path's dispatch + combine row (r_d + r_c), the coherent row (r'), the all-gather bytes (k); L
  MoE layers of num_layers."""
  standard_row_bytes: float
  coherent_row_bytes: float
  gather_bytes: float
  moe_layers: int
  num_layers: int

  def scaled(self, factor: float) -> "Traffic":
    """The same step with every row `factor` times as many bytes (a wider model, a dtype)."""
    return dataclasses.replace(self, standard_row_bytes=self.standard_row_bytes * factor,
                               coherent_row_bytes=self.coherent_row_bytes * factor,
                               gather_bytes=self.gather_bytes * factor)


def standard_us(topo: Topology, traffic: Traffic, tokens: float, compute_us: float) -> float:
  """Decode step time of the standard path (module docstring)."""
  q_in, q_out = topo.leaving()
  per_layer = 2 * all_to_all_us(topo, tokens, traffic.standard_row_bytes / 2, q_in, q_out)
  return traffic.moe_layers * per_layer + traffic.num_layers * compute_us


def coherent_us(topo: Topology, traffic: Traffic, tokens: float, p_in: float, p_out: float,
                compute_us: float, tokens_only: bool = False) -> float:
  """Decode step time of the coherent path, consecutive MoE layers crossing with p_in / p_out."""
  q_in, q_out = topo.leaving()
  row = traffic.coherent_row_bytes
  gather = 8.0 if tokens_only else traffic.gather_bytes
  return (all_to_all_us(topo, tokens, row, q_in, q_out) +
          (traffic.moe_layers - 1) * all_to_all_us(topo, tokens, row, p_in, p_out) +
          all_gather_us(topo, tokens * gather) + traffic.num_layers * compute_us)


def hops_per_token(moe_layers: int, devices: int, p: float | None) -> float:
  """Cross-device hops of one token per step: standard (p None) 2 L (G - 1) / G, coherent
  (G - 1) / G + (L - 1) p."""
  q = (devices - 1) / devices
  return 2 * moe_layers * q if p is None else q + (moe_layers - 1) * p
