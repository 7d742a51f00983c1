"""Training metrics on disk: `metrics.jsonl` (one JSON object per logged step) and TensorBoard."""

import json
import pathlib

import tensorboardX

from lasar_jax import atomic, distributed

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def read_rows(path) -> list[dict]:
  """The rows of a metrics.jsonl file ([] when it does not exist)."""
  path = pathlib.Path(path)
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsWriter:
  """Appends rows to `<stage_dir>/metrics.jsonl` and scalars to `<stage_dir>/tensorboard`.

  Opened for a run that resumes at `start_step`, it first drops the rows of later steps (written
  by a killed run after its last checkpoint), so every step appears once. In a multi-process run
  only process 0 writes; on the others every method does nothing.
  """

  def __init__(self, stage_dir, start_step: int = 0):
    self._tensorboard = None
    if not distributed.is_primary():
      return
    stage_dir = pathlib.Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    self.path = stage_dir / METRICS_FILE
    rows = read_rows(self.path)
    kept = [row for row in rows if row["step"] <= start_step]
    if len(kept) != len(rows):
      atomic.write_jsonl(self.path, kept)
    self._tensorboard = tensorboardX.SummaryWriter(str(stage_dir / TENSORBOARD_DIR))

  def write(self, step: int, values: dict[str, float]) -> None:
    """Logs `values` (name -> number) for optimizer step `step`."""
    if self._tensorboard is None:
      return
    row = {"step": int(step), **{name: float(v) for name, v in values.items()}}
    with self.path.open("a") as f:
      f.write(json.dumps(row, sort_keys=True) + "\n")
    for name, value in row.items():
      if name != "step":
        self._tensorboard.add_scalar(f"train/{name}", value, step)

  def close(self) -> None:
    """Flushes and closes the TensorBoard writer."""
    if self._tensorboard is not None:
      self._tensorboard.close()
