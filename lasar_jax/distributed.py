"""Runs over several processes (hosts): starting `jax.distributed`, and process 0 as the writer.

After `initialize`, `jax.devices()` lists the devices of every process, so the mesh of
`lasar_jax.sharding.make_mesh` is global; each process feeds its rows of every batch
(`lasar_jax.train.input_pipeline`). Files are written by process 0 alone: a stage's outputs
(`write_on_primary`), metrics and printed tables (`is_primary`); orbax checkpoints are written by
all processes together. Every helper here is a no-op or a plain call in a single-process run.
"""

import os
from collections.abc import Callable, Mapping
from typing import TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils

MODES = ("auto", "on", "off")  # values of --distributed
T = TypeVar("T")


def launched_multiprocess(env: Mapping[str, str] = os.environ) -> bool:
  """Whether `env` shows one process of a multi-process launch: a TPU pod worker (several worker
  hostnames), a SLURM job step of more than one task, or an explicit JAX coordinator address."""
  if len(env.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1:
    return True
  if int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1")) or 1) > 1:
    return True
  return bool(env.get("JAX_COORDINATOR_ADDRESS"))


def initialize(mode: str = "auto", coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None) -> bool:
  """Starts `jax.distributed` when `mode` asks for it; returns whether it did.

  Args:
    mode: 'on' always initializes; 'off' never; 'auto' initializes when a coordinator address is
      given or `launched_multiprocess()`.
    coordinator_address: 'host:port' of process 0's coordinator (None: detected on TPU / SLURM,
      or read from JAX_COORDINATOR_ADDRESS).
    num_processes: processes of the run (None: detected).
    process_id: this process's index in [0, num_processes) (None: detected).
  Must run before anything touches a device. CPU processes exchange collectives over gloo.
  """
  if mode not in MODES:
    raise ValueError(f"--distributed={mode!r} is not one of {MODES}")
  if mode == "off" or (mode == "auto" and not coordinator_address and not launched_multiprocess()):
    return False
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address, num_processes, process_id)
  return True


def is_primary() -> bool:
  """Whether this is process 0, the one that writes files, logs and prints."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier `name` (nothing to wait for in one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def write_on_primary(name: str, write: Callable[[], None]) -> None:
  """Calls `write()` on process 0 only, then holds every process until it has finished, so no
  process reads (or skips work because of) a file before it exists."""
  if is_primary():
    write()
  barrier(name)


def primary_first(name: str, fn: Callable[[], T]) -> T:
  """`fn()` on process 0, then, once it has returned, on the others.

  For functions that cache their result on disk (data preparation, SIDs, embeddings): process 0
  computes and writes, the others find the result and reuse it. `fn` must not use collectives.
  """
  if jax.process_count() == 1:
    return fn()
  result = fn() if is_primary() else None
  barrier(f"{name}: written")
  return result if is_primary() else fn()


def to_host(tree):
  """NumPy copies of a pytree of (possibly multi-process, sharded) arrays, whole on every process.

  In a multi-process run every process must call it (it gathers the other processes' shards).
  """
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return jax.tree.map(lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), tree)


def gather_rows(local: np.ndarray, total: int) -> np.ndarray:
  """Every process's rows, in process order, as one [total, ...] array on every process.

  Process p holds the rows `row_slice(p, total)`; they may number one fewer than another's.
  """
  if jax.process_count() == 1:
    return np.asarray(local)
  width = -(-total // jax.process_count())
  padded = np.zeros((width, *np.shape(local)[1:]), np.asarray(local).dtype)
  padded[:len(local)] = local
  gathered = np.asarray(multihost_utils.process_allgather(padded))  # [P, width, ...]
  slices = [row_slice(p, total) for p in range(jax.process_count())]
  return np.concatenate([gathered[p, :s.stop - s.start] for p, s in enumerate(slices)])


def row_slice(process: int, total: int) -> slice:
  """The contiguous rows of `total` that `process` works on (sizes differ by at most one)."""
  count = jax.process_count()
  return slice(process * total // count, (process + 1) * total // count)
