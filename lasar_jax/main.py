"""Entry point: `python -m lasar_jax.main --config=configs/<stage>.py --workdir=DIR`.

Overrides: `--config.a.b=value` (e.g. `--config.model.dtype=bfloat16`). An unknown key or a value of
the wrong type stops the run with one line naming the key. The work itself lives in
`lasar_jax.pipeline.run`, which tests and notebooks call directly.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Stage config file, e.g. configs/grpo.py (a ':variant' suffix is passed to "
    "its get_config). Fields can be overridden with --config.<key>=<value>.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", "workdir", "Run directory: prepared data, checkpoints, metrics and evaluation "
    "outputs are written under it; finished stages found there are reused.")
flags.mark_flags_as_required(["config"])
# Library INFO logs (orbax's per-checkpoint lines, jax backend probing) stay hidden unless asked for
# with --verbosity=0; progress bars and tables are printed, not logged.
flags.FLAGS.set_default("verbosity", logging.WARNING)


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
  """Validates the config and runs its stage."""
  del argv
  from lasar_jax import pipeline
  from lasar_jax.configs.validate import ConfigError, validate

  try:
    validate(_CONFIG.value)
  except ConfigError as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(2)
  pipeline.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
