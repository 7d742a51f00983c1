"""Checkpoints of a training stage: the train state and the data iterator, saved together.

One orbax `CheckpointManager` per stage directory, with two items per step: `state` (any pytree of
jax arrays, e.g. `TrainState`) and `data` (a grain `DatasetIterator`'s position, saved by
`grain.checkpoint.CheckpointSave`). Restoring reads the state into an abstract target whose leaves
carry their shardings, so each device reads only its own shards. Pattern of
AI-Hypercomputer/maxtext `src/maxtext/common/checkpointing.py`.
"""

import pathlib

import grain
import jax
import orbax.checkpoint as ocp

STATE = "state"  # item name of the train state
DATA = "data"  # item name of the data iterator position


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
    items[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
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
    items[DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
  return manager.restore(step, args=ocp.args.Composite(**items))[STATE]
