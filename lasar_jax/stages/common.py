"""Pieces several stages share: the prepared data and the backbone of a run.

Multi-process runs: process 0 prepares the data, builds the tokenizer and writes every stage
file; the other processes wait for it at a barrier, then read what it wrote.
"""

import hashlib
import json
import pathlib

import ml_collections

from lasar_jax import atomic, distributed
from lasar_jax import backbone as backbone_lib
from lasar_jax.data.prepare import PreparedData, prepare

SUMMARY_FILE = "summary.json"  # written last by a stage; its fingerprint marks the stage complete


def prepared_data(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> PreparedData:
  """The run's data, prepared into (or reused from) WORKDIR/data."""
  return distributed.primary_first(
      "prepared data", lambda: prepare(config.data, config.seed, workdir / "data"))


def text_backbone(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                  data: PreparedData) -> backbone_lib.Backbone:
  """The run's backbone before any SFT; a scratch one gets a tokenizer trained on the item text
  (by process 0 first: the others then load the tokenizer it saved in the workdir)."""
  def build() -> backbone_lib.Backbone:
    """The backbone, on this process."""
    return backbone_lib.build_backbone(config.model, config.seed, workdir=workdir,
                                       corpus=[str(t) for t in data.item_texts])

  if config.model.source != "scratch":
    return build()
  return distributed.primary_first("text backbone", build)


def fingerprint(*parts) -> str:
  """Short digest of JSON-able parts (config sections, upstream fingerprints, seed)."""
  payload = json.dumps([p.to_dict() if isinstance(p, ml_collections.ConfigDict) else p
                        for p in parts], sort_keys=True, default=str)
  return hashlib.sha256(payload.encode()).hexdigest()[:24]


def finished_summary(stage_dir: pathlib.Path, key: str) -> dict | None:
  """The summary of a stage finished with inputs `key`, or None (never run, or other inputs)."""
  path = stage_dir / SUMMARY_FILE
  if not path.is_file():
    return None
  summary = json.loads(path.read_text())
  return summary if summary.get("fingerprint") == key else None


def write_summary(stage_dir: pathlib.Path, summary: dict) -> None:
  """Writes the stage summary (with its fingerprint) last, atomically: it marks the stage done.

  Every process returns once it is on disk, so all of them see the stage as done.
  """
  distributed.write_on_primary(f"summary of {stage_dir.name}",
                               lambda: atomic.write_json(stage_dir / SUMMARY_FILE, summary))


def stage_train_config(config: ml_collections.ConfigDict, steps: int) -> ml_collections.ConfigDict:
  """`config.train` with the stage's own step count when it sets one (> 0)."""
  train = ml_collections.ConfigDict(config.train.to_dict())
  if steps > 0:
    train.steps = steps
  return train


def claim_stage_dir(stage_dir: pathlib.Path, key: str) -> None:
  """Marks `stage_dir` as holding the run with inputs `key`.

  A directory left by a run with other inputs (another mode, other data) would make the
  resumed checkpoint wrong; it is refused with a clear message instead of being overwritten.
  """
  marker = stage_dir / "inputs.json"
  if marker.is_file():
    previous = json.loads(marker.read_text()).get("fingerprint")
    if previous != key and (stage_dir / "checkpoints").exists():
      raise RuntimeError(f"{stage_dir} holds a run with other settings (inputs {previous}, now "
                         f"{key}); delete it or use another --workdir")
  distributed.write_on_primary(f"claim {stage_dir.name}",
                               lambda: atomic.write_json(marker, {"fingerprint": key}))
