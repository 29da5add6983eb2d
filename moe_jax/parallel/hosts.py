"""Multi-host runs: start-up of the JAX distributed runtime and each host's share of a batch.

On a TPU pod slice or a multi-GPU cluster every host runs the same command; with
`parallel.distributed=True` the entry point calls `jax.distributed.initialize()` first (it reads
the coordinator, process count and id from the TPU / SLURM / Open MPI environment, or takes
them from `parallel.coordinator_address`, `num_processes`, `process_id`). Every host draws the same
global batch indices (the iterators are seeded, not host-dependent) but reads and feeds only its
own rows.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding

from moe_jax.utils.errors import require


def initialize(cfg) -> None:
  """Joins the multi-host runtime when `cfg.distributed` (a ParallelConfig; call this before
  any other JAX call)."""
  if not cfg.distributed:
    return
  jax.distributed.initialize(coordinator_address=cfg.coordinator_address or None,
                             num_processes=cfg.num_processes or None,
                             process_id=None if cfg.process_id < 0 else cfg.process_id)


def local_rows(batch: np.ndarray) -> np.ndarray:
  """This host's rows of a global batch [B, ...]: the contiguous block of B / process_count."""
  count, index = jax.process_count(), jax.process_index()
  require(batch.shape[0] % count == 0, "batch_size",
          f"batch {batch.shape[0]} does not split over {count} hosts",
          f"use a batch size divisible by {count}")
  size = batch.shape[0] // count
  return batch[index * size:(index + 1) * size]


def global_batch(rows: np.ndarray, sharding: NamedSharding | None,
                 global_size: int) -> jax.Array:
  """The global batch [global_size, ...] of which this host holds `rows` (its `local_rows`)."""
  if sharding is None:
    return jax.numpy.asarray(rows)
  return jax.make_array_from_process_local_data(sharding, rows,
                                                (global_size,) + rows.shape[1:])
