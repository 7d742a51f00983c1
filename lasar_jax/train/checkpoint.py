"""Checkpoints of a training stage: the train state and the data iterator, saved together.

One orbax `CheckpointManager` per stage directory, with two items per step: `state` (any pytree of
jax arrays, e.g. `TrainState`) and `data` (a grain `DatasetIterator`'s position, saved by grain's
iterator checkpoint handler, extended below). Restoring reads the state into an abstract target
whose leaves carry their shardings, so each device reads only its own shards. Pattern of
AI-Hypercomputer/maxtext `src/maxtext/common/checkpointing.py`.

In a multi-process run every process calls `make_manager`, `save` and `restore` (orbax writes
each process's shards and one set of metadata). Each process saves its iterator position as its
own `process_<i>-of-<n>.json`; the iterators of `input_pipeline.make_batches` are at the same
position on every process, so a run with another process count resumes from process 0's file.
"""

import dataclasses
import json
import pathlib
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

STATE = "state"  # item name of the train state
DATA = "data"  # item name of the data iterator position


class _DataPositionHandler(grain.checkpoint.CheckpointHandler):
  """grain's iterator handler, restoring from a run of another process count (process 0's file)
  when this process's own file is absent."""

  def restore(self, directory, item=None, args=None):
    """Moves the iterator (`args.item`, a grain DatasetIterator) to the saved position."""
    item = item or args.item
    own = directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    if not own.exists():
      saved = sorted(directory.glob("process_0-of-*.json"))
      if not saved:
        raise FileNotFoundError(f"no data iterator position in {directory}")
      own = saved[0]
    item.set_state(json.loads(own.read_text()))
    return item


@ocp.args.register_with_handler(_DataPositionHandler, for_save=True)
@dataclasses.dataclass
class _DataSave(ocp.args.CheckpointArgs):
  """Save argument of the data item: the iterator whose position is saved."""

  item: Any


@ocp.args.register_with_handler(_DataPositionHandler, for_restore=True)
@dataclasses.dataclass
class _DataRestore(ocp.args.CheckpointArgs):
  """Restore argument of the data item: the iterator to move."""

  item: Any


def make_manager(directory, *, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
  """A manager of `directory` keeping the `keep` latest steps; saves in the background if asked.

  Leftover temporary directories of a killed run are removed; call `manager.close()` (or
  `wait_until_finished()`) before relying on the last save being on disk.
  """
  options = ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.LatestN(n=keep),
      enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True)
  directory = pathlib.Path(directory).resolve()  # orbax refuses relative paths
  return ocp.CheckpointManager(directory, options=options, item_names=(STATE, DATA))


def save(manager: ocp.CheckpointManager, step: int, state, data_iterator=None) -> None:
  """Saves `state` (and the iterator's position, if given) as checkpoint `step`.

  Device arrays are copied to host before this returns, so `state` may be donated right after.
  """
  items = {STATE: ocp.args.StandardSave(state)}
  if data_iterator is not None:
    items[DATA] = _DataSave(data_iterator)
  manager.save(step, args=ocp.args.Composite(**items), force=True)


def abstract_state(shapes, shardings):
  """Restore target: `jax.ShapeDtypeStruct` leaves (from `jax.eval_shape`) with their shardings."""
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      shapes, shardings)


def restore(manager: ocp.CheckpointManager, target, data_iterator=None, step: int | None = None):
  """The state saved at `step` (default: latest), placed as `target` says.

  `target` is the output of `abstract_state`. A given `data_iterator` is moved, in place, to the
  position saved with that step.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {manager.directory}")
  items = {STATE: ocp.args.StandardRestore(target)}
  if data_iterator is not None:
    items[DATA] = _DataRestore(data_iterator)
  return manager.restore(step, args=ocp.args.Composite(**items))[STATE]
