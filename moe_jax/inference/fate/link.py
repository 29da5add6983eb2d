"""The host-to-device link: the time of one copy from its bytes.

  T_transfer(n bytes) = latency + n / bandwidth

`bandwidth` is the effective host-to-device rate of pinned-memory copies, not the link's nominal
one. PCIe 4.0 x16 moves 31.5 GB/s per direction nominally (16 GT/s x 16 lanes, 128b/130b); pinned
cudaMemcpyAsync reaches about 25 GB/s. PCIe 3.0 x16 (Fate's RTX 3090 / GTX 1080Ti testbeds): 15.8
GB/s nominal, about 12 GB/s effective. `latency` is the fixed cost of one expert's copy (launch and
DMA set-up of its few tensors), about 10 us. Both are assumptions to override with measurements.
"""
from __future__ import annotations

import dataclasses

from moe_jax.utils.errors import check_positive, require


@dataclasses.dataclass(frozen=True)
class Link:
  """bandwidth in bytes/s, latency in s per copy."""
  bandwidth: float = 25e9
  latency: float = 10e-6

  def __post_init__(self):
    check_positive("bandwidth", self.bandwidth)
    require(self.latency >= 0, "latency", f"{self.latency} < 0", "pass seconds >= 0")

  def copy_time(self, nbytes: float) -> float:
    """Seconds to copy `nbytes` bytes host -> device."""
    return self.latency + nbytes / self.bandwidth


PCIE4_X16 = Link(bandwidth=25e9, latency=10e-6)
PCIE3_X16 = Link(bandwidth=12e9, latency=10e-6)
