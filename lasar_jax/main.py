"""Entry point: `python -m lasar_jax.main --config=configs/<stage>.py --workdir=DIR`.

Overrides: `--config.a.b=value` (e.g. `--config.model.dtype=bfloat16`). An unknown key or a value
that cannot work stops the run before any work with one line naming the key. The work itself lives
in `lasar_jax.pipeline.run`, which tests and notebooks call directly.

Exit status: 0 done; 2 bad input (a config value, the data, a model checkpoint), refused before
the workdir is touched where the value alone shows it; 1 a run that cannot go on (workdir in use
or not writable, NaN stop, a stage folder of other settings, a damaged checkpoint); 130 Ctrl-C.
Each of these is one `error:` line on stderr; `--debug` (or `--verbosity=1`) shows the traceback.
Any other exception is a bug and shows its traceback.

On several hosts, run the same command on each: `jax.distributed` starts by itself on a TPU pod or
under SLURM; elsewhere add `--coordinator_address=HOST0:PORT --num_processes=N --process_id=I`.
"""

import contextlib
import errno
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from lasar_jax.configs.validate import ConfigError, check_devices, check_workdir, validate

EXIT_FAILED = 1  # a run that cannot go on
EXIT_BAD_INPUT = 2  # a config value, the data or a checkpoint file that cannot work
EXIT_INTERRUPTED = 130  # Ctrl-C
# OSErrors a run meets through its environment, not a bug: a workdir that cannot be written.
ENVIRONMENT_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Stage config file, e.g. configs/grpo.py (a ':variant' suffix is passed to "
    "its get_config). Fields can be overridden with --config.<key>=<value>.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", "workdir", "Run directory: prepared data, checkpoints, metrics and evaluation "
    "outputs are written under it; finished stages found there are reused. One run at a time: a "
    "second run on a workdir in use stops at once, naming the first one's pid and host.")
_DEBUG = flags.DEFINE_bool(
    "debug", False, "Show the full traceback of an expected failure (bad data, NaN stop, ...) "
    "instead of its one-line message.")
# The values of distributed.MODES, spelled out: no jax before the config is validated.
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ("auto", "on", "off"), "Start jax.distributed (one process per host, "
    "all devices in one global mesh): 'on' always, 'off' never, 'auto' when the environment shows "
    "a multi-process launch (TPU pod worker, SLURM job of several tasks, JAX_COORDINATOR_ADDRESS "
    "set) or --coordinator_address is given.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of the coordinator, served by process 0 (every "
    "process passes the same one). Detected on TPU pods and SLURM when left unset.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes of a distributed run (detected on TPU pods and "
    "SLURM when left unset).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index in [0, num_processes); process 0 writes the "
    "outputs, logs and tables (detected on TPU pods and SLURM when left unset).")
flags.mark_flags_as_required(["config"])


def fail(message: str, status: int, at_once: bool = False) -> None:
  """Writes `error: message` as one line on stderr and exits with `status` (`at_once`: without
  the interpreter's teardown, which XLA threads stopped in the middle of a compile can crash)."""
  sys.stderr.write(f"error: {' '.join(message.split())}\n")
  if at_once:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
  sys.exit(status)


def unknown_key_message(error: BaseException, argv: list[str]) -> str:
  """'unknown config key --config.a.b (did you mean ...)' from ml_collections' nested error (a
  KeyError, possibly wrapped in an AttributeError, whose text is "'b'\\nDid you mean ...")."""
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]
  text = str(error.args[0] if error.args else error)
  key, _, hint = text.partition("\n")
  key = key.strip("'\"")
  flag = next((arg.split("=")[0] for arg in argv
               if arg.startswith("--config.") and key in arg.split("=")[0].split(".")), key)
  return f"unknown config key {flag}" + (f" ({hint.strip()})" if hint.strip() else "")


def parse_flags(argv: list[str]) -> list[str]:
  """Parses flags, turning config errors into a single line on stderr and exit status 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(f"{e} (run with --help to see the flags)", EXIT_BAD_INPUT)
  except (KeyError, AttributeError) as e:  # unknown --config.<key>
    fail(unknown_key_message(e, argv), EXIT_BAD_INPUT)


def exit_status(error: BaseException) -> int | None:
  """The exit status of an expected failure, None for an unexpected one (a bug)."""
  from lasar_jax.data.errors import DataError
  from lasar_jax.model.convert import CheckpointError as ModelFileError
  from lasar_jax.stages.common import StageConflictError
  from lasar_jax.train.checkpoint import CheckpointDamagedError
  from lasar_jax.train.loop import NonFiniteError
  from lasar_jax.workdir_lock import WorkdirBusyError

  if isinstance(error, (ConfigError, DataError, ModelFileError)):
    return EXIT_BAD_INPUT
  if isinstance(error, (WorkdirBusyError, NonFiniteError, StageConflictError,
                        CheckpointDamagedError, FileNotFoundError)):
    return EXIT_FAILED
  if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS:
    return EXIT_FAILED
  return None


def describe(error: BaseException) -> str:
  """One line for an expected failure (an OSError names its file)."""
  if isinstance(error, OSError) and error.strerror and error.filename:
    return f"{error.filename}: {error.strerror}"
  return str(error)


def interrupted_message(workdir: str) -> str:
  """What Ctrl-C leaves: the newest checkpoint kept in the workdir, and how to resume."""
  from lasar_jax.train import checkpoint

  newest = checkpoint.newest_checkpoint(workdir)
  kept = f"checkpoint {newest} is kept" if newest else "no checkpoint was written yet"
  return f"interrupted; {kept}: run the same command to resume (finished stages are reused)"


def run(config, workdir: str) -> None:
  """Starts jax (and jax.distributed if asked), checks the config against the devices, takes the
  workdir's lock (on process 0), then runs the pipeline: a second run on the workdir is refused
  before the pipeline's imports."""
  from lasar_jax import distributed, reporting, workdir_lock

  reporting.hide_library_info_logs()
  distributed.initialize(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                         _PROCESS_ID.value)
  check_devices(config)
  with workdir_lock.hold(workdir) if distributed.is_primary() else contextlib.nullcontext():
    from lasar_jax import pipeline

    pipeline.run(config, workdir)


def main(argv: list[str]) -> None:
  """Validates the config, starts jax.distributed if asked, and runs the config's stage."""
  del argv
  try:
    validate(_CONFIG.value)  # before jax is imported: a bad value is refused in about a second
    check_workdir(_WORKDIR.value)
  except ConfigError as e:
    fail(str(e), EXIT_BAD_INPUT)
  show_traceback = _DEBUG.value or flags.FLAGS.verbosity >= 1
  try:
    run(_CONFIG.value, _WORKDIR.value)
  except KeyboardInterrupt:
    if show_traceback:
      raise
    fail(interrupted_message(_WORKDIR.value), EXIT_INTERRUPTED, at_once=True)
  except Exception as e:  # noqa: BLE001  (expected failures become one line; bugs re-raise)
    status = exit_status(e)
    if status is None or show_traceback:
      raise
    fail(describe(e), status)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
