"""Entry point: `python -m lasar_jax.main --config=configs/<stage>.py --workdir=DIR`.

Overrides: `--config.a.b=value` (e.g. `--config.model.dtype=bfloat16`). An unknown key or a value of
the wrong type stops the run with one line naming the key. The work itself lives in
`lasar_jax.pipeline.run`, which tests and notebooks call directly.

On several hosts, run the same command on each: `jax.distributed` starts by itself on a TPU pod or
under SLURM; elsewhere add `--coordinator_address=HOST0:PORT --num_processes=N --process_id=I`.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from lasar_jax import distributed

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Stage config file, e.g. configs/grpo.py (a ':variant' suffix is passed to "
    "its get_config). Fields can be overridden with --config.<key>=<value>.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", "workdir", "Run directory: prepared data, checkpoints, metrics and evaluation "
    "outputs are written under it; finished stages found there are reused.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", distributed.MODES, "Start jax.distributed (one process per host, all "
    "devices in one global mesh): 'on' always, 'off' never, 'auto' when the environment shows a "
    "multi-process launch (TPU pod worker, SLURM job of several tasks, JAX_COORDINATOR_ADDRESS "
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


def parse_flags(argv: list[str]) -> list[str]:
  """Parses flags, turning config errors into a single line on stderr and exit status 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    message = str(e)
  except (KeyError, AttributeError) as e:  # unknown --config.<key>
    message = str(e.args[0] if e.args else e).replace("\n", " ")
    message = f"unknown config key {message}"
  sys.stderr.write(f"error: {message}\nRun with --help to see the flags.\n")
  sys.exit(2)


def main(argv: list[str]) -> None:
  """Validates the config, starts jax.distributed if asked, and runs the config's stage."""
  del argv
  from lasar_jax import pipeline, reporting
  from lasar_jax.configs.validate import ConfigError, validate

  reporting.hide_library_info_logs()

  try:
    validate(_CONFIG.value)
  except ConfigError as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(2)
  distributed.initialize(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                         _PROCESS_ID.value)
  pipeline.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
