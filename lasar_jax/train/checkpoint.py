"""Checkpoints of a training stage: the train state and the data iterator, saved together.

One orbax `CheckpointManager` per stage directory, with two items per step: `state` (any pytree of
jax arrays, e.g. `TrainState`) and `data` (a grain `DatasetIterator`'s position, saved by grain's
iterator checkpoint handler, extended below). Restoring reads the state into an abstract target
whose leaves carry their shardings, so each device reads only its own shards. Pattern of
AI-Hypercomputer/maxtext `src/maxtext/common/checkpointing.py`.

Damage: once orbax has committed a step, its files and sizes are recorded in the step's
`STEP_MANIFEST`. `make_manager` moves a latest step whose files no longer match (or whose metadata
is not valid JSON) aside to `.damaged_checkpoints/` beside the checkpoints, saying so, and the run
resumes from the previous kept step; a step that orbax still cannot read stops with a message
naming it (CheckpointDamagedError).

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

from lasar_jax import atomic, distributed, reporting

STATE = "state"  # item name of the train state
DATA = "data"  # item name of the data iterator position
STEP_MANIFEST = "lasar_manifest.json"  # in a committed step directory: its files and sizes
DAMAGED_DIR = ".damaged_checkpoints"  # beside the checkpoints directory: damaged steps moved aside


class CheckpointDamagedError(RuntimeError):
  """A checkpoint that cannot be restored; the message names its directory."""


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


def step_dirs(directory) -> list[pathlib.Path]:
  """The committed step directories of a checkpoints directory, oldest step first."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    return []
  return sorted((p for p in directory.iterdir() if p.is_dir() and p.name.isdigit()),
                key=lambda p: int(p.name))


def _files(step_dir: pathlib.Path) -> dict[str, int]:
  """{relative path: size} of a step directory's files but its manifest."""
  return {p.relative_to(step_dir).as_posix(): p.stat().st_size
          for p in sorted(step_dir.rglob("*")) if p.is_file() and p.name != STEP_MANIFEST}


def record_manifests(directory) -> None:
  """Writes the manifest of every committed step that has none yet (call when no save is in
  flight: then every step directory is committed)."""
  for step_dir in step_dirs(directory):
    if not (step_dir / STEP_MANIFEST).is_file():
      atomic.write_json(step_dir / STEP_MANIFEST, _files(step_dir))


def damage(step_dir: pathlib.Path) -> str | None:
  """Why a committed step directory cannot be right (a recorded file missing or resized, metadata
  that is not JSON, no state item), or None."""
  manifest = step_dir / STEP_MANIFEST
  recorded = json.loads(manifest.read_text()) if manifest.is_file() else {}
  found = _files(step_dir)
  for name, size in recorded.items():
    if found.get(name) != size:
      return f"{name} is missing" if name not in found else f"{name} was resized"
  if not (step_dir / STATE).is_dir():
    return f"no {STATE}/ item"
  for name in found:
    if name.endswith((".json", "_METADATA")):
      try:
        json.loads((step_dir / name).read_text())
      except (ValueError, UnicodeDecodeError):
        return f"{name} is not valid JSON"
  return None


def set_aside_damaged_steps(directory) -> None:
  """Moves damaged steps, newest first, to DAMAGED_DIR beside `directory` until the newest step
  left is sound, saying which step a run resumes from."""
  directory = pathlib.Path(directory)
  steps = step_dirs(directory)
  while steps and (problem := damage(steps[-1])):
    bad = steps.pop()
    aside = directory.parent / DAMAGED_DIR / bad.name
    aside.parent.mkdir(parents=True, exist_ok=True)
    if aside.exists():
      aside = aside.with_name(f"{bad.name}.{len(list(aside.parent.iterdir()))}")
    bad.rename(aside)
    resume = f"resuming from step {steps[-1].name}" if steps else "starting from step 0"
    reporting.warn(f"checkpoint {bad} is damaged ({problem}); moved to {aside}, {resume}")


class _RecordingManager(ocp.CheckpointManager):
  """A CheckpointManager that records the manifest of each step once it is committed (orbax waits
  for the previous save before each save, and on close)."""

  def wait_until_finished(self):
    """Waits for saves in flight, then records the manifests of the committed steps."""
    super().wait_until_finished()
    if jax.process_index() == 0:
      record_manifests(self.directory)


def make_manager(directory, *, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
  """A manager of `directory` keeping the `keep` latest steps; saves in the background if asked.

  Leftover temporary directories of a killed run are removed, and damaged latest steps set aside
  (`set_aside_damaged_steps`); call `manager.close()` (or `wait_until_finished()`) before relying
  on the last save being on disk.
  """
  directory = pathlib.Path(directory).resolve()  # orbax refuses relative paths
  distributed.write_on_primary(f"check {directory}", lambda: set_aside_damaged_steps(directory))
  options = ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.LatestN(n=keep),
      enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True)
  return _RecordingManager(directory, options=options, item_names=(STATE, DATA))


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
  try:
    return manager.restore(step, args=ocp.args.Composite(**items))[STATE]
  except (OSError, ValueError) as e:  # tensorstore and JSON errors name no file
    earlier = [s for s in manager.all_steps() if s < step]
    instead = (f"delete it to resume from step {max(earlier)}" if earlier
               else "delete it to start the stage over")
    raise CheckpointDamagedError(f"checkpoint {manager.directory / str(step)} cannot be read "
                                 f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); if it "
                                 f"is damaged, {instead}") from e


def newest_checkpoint(root) -> pathlib.Path | None:
  """The most recently written step directory of any checkpoints/ folder under `root`."""
  steps = [step for folder in pathlib.Path(root).rglob("checkpoints") for step in step_dirs(folder)]
  return max(steps, key=lambda p: p.stat().st_mtime_ns, default=None)
