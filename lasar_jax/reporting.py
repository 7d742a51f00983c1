"""Plain-text tables for the summaries printed at the end of a run, progress lines and warnings.

In a multi-process run only process 0 prints.
"""

import sys

from absl import flags, logging

from lasar_jax import distributed


def hide_library_info_logs() -> None:
  """Library INFO logs (orbax's per-checkpoint lines, jax backend probing) off unless --verbosity
  was given; progress bars and tables are printed, not logged. Call after the flags are parsed:
  a default set on the flag before parsing never reaches the loggers."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def format_value(value) -> str:
  """Floats to 4 significant digits, everything else as str."""
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def format_table(title: str, rows: dict) -> str:
  """A two-column key/value table under a title."""
  width = max([len(str(k)) for k in rows] + [3])
  lines = [title, "-" * max(len(title), width + 12)]
  lines += [f"{str(k):<{width}}  {format_value(v)}" for k, v in rows.items()]
  return "\n".join(lines)


def print_table(title: str, rows: dict) -> None:
  """Prints `format_table(title, rows)` followed by a blank line (on process 0)."""
  say(format_table(title, rows) + "\n")


def say(text: str) -> None:
  """Prints a line of progress (on process 0)."""
  if distributed.is_primary():
    print(text, flush=True)


def warn(text: str) -> None:
  """Prints `warning: text` on stderr (on process 0): something that may make results meaningless
  but does not stop the run."""
  if distributed.is_primary():
    print(f"warning: {text}", file=sys.stderr, flush=True)
