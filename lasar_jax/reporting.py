"""Plain-text tables for the summaries printed at the end of a run, and progress lines.

In a multi-process run only process 0 prints.
"""

from lasar_jax import distributed


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
