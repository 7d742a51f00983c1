"""Pieces several stages share: the prepared data and the backbone of a run, stage identities,
and the summary and manifest that mark a stage finished.

A finished stage directory holds `summary.json` (its fingerprint: the identity of its inputs) and
`manifest.json` (every file it wrote, with its size). A stage is reused only when both hold: a
file deleted or cut short since makes the stage be rebuilt, saying so in one line.

Multi-process runs: process 0 prepares the data, builds the tokenizer and writes every stage
file; the other processes wait for it at a barrier, then read what it wrote.
"""

import hashlib
import json
import pathlib

import ml_collections

from lasar_jax import atomic, distributed, reporting
from lasar_jax import backbone as backbone_lib
from lasar_jax.data.prepare import PreparedData, prepare
from lasar_jax.train import checkpoint

SUMMARY_FILE = "summary.json"  # written last by a stage; its fingerprint marks the stage complete
MANIFEST_FILE = "manifest.json"  # written just before the summary: every file of the stage, sized
INPUTS_FILE = "inputs.json"  # written when a stage starts: the inputs its checkpoints belong to
# Top-level entries of a stage directory its manifest leaves out: working state that changes after
# the stage finished (orbax keeps rotating checkpoints, TensorBoard appends) and nested stages.
NOT_IN_MANIFEST = ("checkpoints", "tensorboard", "eval", SUMMARY_FILE, MANIFEST_FILE)
# Settings of config.train / config.grpo / config.eval that cannot change a stage's results (how
# often it logs, checkpoints and probes validation, how many checkpoints it keeps, how batches are
# prepared): not in its identity.
RUN_ONLY_KEYS = ("checkpoint_every", "log_every", "keep_checkpoints", "async_checkpointing",
                 "data_threads", "probe_users", "probe_times")
FEW_USERS = 10  # fewer users than this: metrics are noise (warned)


class StageConflictError(RuntimeError):
  """A stage directory holds checkpoints of a run with other settings; the message names them."""


def prepared_data(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> PreparedData:
  """The run's data, prepared into (or reused from) WORKDIR/data."""
  return distributed.primary_first("prepared data",
                                   lambda: _checked_prepare(config, workdir / "data"))


def _checked_prepare(config: ml_collections.ConfigDict, data_dir: pathlib.Path) -> PreparedData:
  """`prepare` with the manifest check: a damaged data folder is prepared again, a freshly
  prepared one gets its manifest (and a warning when the data set is too small to mean much)."""
  if (data_dir / "stats.json").is_file() and not intact(data_dir):
    (data_dir / "stats.json").unlink()  # prepare() then prepares the folder anew
  data = prepare(config.data, config.seed, data_dir)
  if not (data_dir / MANIFEST_FILE).is_file():
    write_manifest(data_dir)
    for warning in data_warnings(data.stats, config):
      reporting.warn(warning)
  return data


def data_warnings(stats: dict, config: ml_collections.ConfigDict) -> list[str]:
  """What makes a prepared data set too small or too bare for its results to mean much."""
  warnings = []
  if stats["users"] < FEW_USERS:
    warnings.append(f"only {stats['users']} users: their metrics are noise")
  if stats["items"] <= max(config.eval.ks):
    warnings.append(f"only {stats['items']} items, no more than K={max(config.eval.ks)}: every "
                    "item is in every ranked list")
  if stats["items"] and stats["items_without_text"] == stats["items"]:
    warnings.append("no item has text: Semantic IDs come from the item ids alone")
  elif stats["items_without_text"] * 2 > stats["items"]:
    warnings.append(f"{stats['items_without_text']} of {stats['items']} items have no text")
  return warnings


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


def _plain(part):
  """A fingerprint part as plain JSON-able data; a config section without its RUN_ONLY_KEYS."""
  if isinstance(part, ml_collections.ConfigDict):
    return {k: v for k, v in part.to_dict().items() if k not in RUN_ONLY_KEYS}
  return part


def fingerprint(*parts) -> str:
  """Short digest of JSON-able parts (config sections, upstream fingerprints, seed)."""
  payload = json.dumps([_plain(p) for p in parts], sort_keys=True, default=str)
  return hashlib.sha256(payload.encode()).hexdigest()[:24]


def stage_inputs(**parts) -> dict:
  """A stage's named inputs (config sections without RUN_ONLY_KEYS, upstream fingerprints, the
  seed) flattened to {'section.key': value}; `fingerprint(inputs)` is the stage's identity."""
  flat = {}
  for name, part in parts.items():
    plain = json.loads(json.dumps(_plain(part), default=str))
    if isinstance(plain, dict):
      flat.update({f"{name}.{k}": v for k, v in _flatten(plain).items()})
    else:
      flat[name] = plain
  return flat


def _flatten(tree: dict, prefix: str = "") -> dict:
  """{'a.b': leaf} of a nested dict."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def manifest(stage_dir: pathlib.Path) -> dict[str, int]:
  """{relative path: size} of every file of a stage directory but NOT_IN_MANIFEST and hidden
  (temporary) files."""
  files = {}
  for path in sorted(stage_dir.rglob("*")):
    relative = path.relative_to(stage_dir)
    if (path.is_file() and relative.parts[0] not in NOT_IN_MANIFEST
        and not any(part.startswith(".") for part in relative.parts)):
      files[relative.as_posix()] = path.stat().st_size
  return files


def write_manifest(stage_dir: pathlib.Path) -> None:
  """Records the stage directory's files and sizes (call once the stage wrote them all)."""
  atomic.write_json(stage_dir / MANIFEST_FILE, {"files": manifest(stage_dir)})


def manifest_problem(stage_dir: pathlib.Path) -> str | None:
  """What is wrong with a finished stage directory's files (the first missing or resized file,
  or no manifest at all), None when they all match its manifest."""
  path = stage_dir / MANIFEST_FILE
  try:
    expected = json.loads(path.read_text())["files"]
  except (OSError, ValueError, KeyError):
    return f"no readable {MANIFEST_FILE}"
  for name, size in expected.items():
    file = stage_dir / name
    if not file.is_file():
      return f"{name} is missing"
    if file.stat().st_size != size:
      return f"{name} has {file.stat().st_size} bytes, {size} were written"
  return None


def finished_summary(stage_dir: pathlib.Path, key: str) -> dict | None:
  """The summary of a stage finished with inputs `key` whose files are all there, or None (never
  run, other inputs, or damaged since: then it says that the stage is rebuilt)."""
  path = stage_dir / SUMMARY_FILE
  if not path.is_file():
    return None
  summary = json.loads(path.read_text())
  if summary.get("fingerprint") != key:
    return None
  return summary if intact(stage_dir) else None


def intact(stage_dir: pathlib.Path) -> bool:
  """Whether a finished stage directory's files all match its manifest; when not, says that the
  stage is rebuilt (its caller then rebuilds it)."""
  problem = manifest_problem(stage_dir)
  if problem:
    reporting.say(f"{stage_dir} is incomplete ({problem}); rebuilding it")
  return not problem


def write_summary(stage_dir: pathlib.Path, summary: dict) -> None:
  """Writes the manifest of the stage's files, then its summary (with its fingerprint) last,
  atomically: the summary marks the stage done.

  Every process returns once it is on disk, so all of them see the stage as done.
  """
  def write() -> None:
    """Manifest, then summary, on process 0."""
    write_manifest(stage_dir)
    atomic.write_json(stage_dir / SUMMARY_FILE, summary)

  distributed.write_on_primary(f"summary of {stage_dir.name}", write)


def stage_train_config(config: ml_collections.ConfigDict, steps: int) -> ml_collections.ConfigDict:
  """`config.train` with the stage's own step count when it sets one (> 0; 0 = train.steps)."""
  if steps < 0:
    raise ValueError(f"a stage step count of {steps}: give a positive count, or 0 for "
                     f"train.steps ({config.train.steps})")
  train = ml_collections.ConfigDict(config.train.to_dict())
  if steps > 0:
    train.steps = steps
  return train


def _changed_settings(previous: dict, current: dict, most: int = 4) -> str:
  """'a.b 1 -> 2; c.d ...' for the inputs that differ (the first `most` of them)."""
  changed = [f"{k} {previous.get(k)!r} -> {current.get(k)!r}"
             for k in sorted(set(previous) | set(current)) if previous.get(k) != current.get(k)]
  more = f"; {len(changed) - most} more" if len(changed) > most else ""
  return "; ".join(changed[:most]) + more


def claim_stage_dir(stage_dir: pathlib.Path, key: str, inputs: dict | None = None) -> None:
  """Marks `stage_dir` as holding the run with inputs `key` (named `inputs`, see `stage_inputs`).

  Checkpoints left by a run with other inputs (another learning rate, mode or data) would make
  the resumed run wrong: StageConflictError names what differs and how to start over.
  """
  marker = stage_dir / INPUTS_FILE
  if marker.is_file():
    previous = json.loads(marker.read_text())
    if previous.get("fingerprint") != key and checkpoint.step_dirs(stage_dir / "checkpoints"):
      changed = (_changed_settings(previous["inputs"], inputs)
                 if previous.get("inputs") is not None and inputs is not None
                 else f"inputs {previous.get('fingerprint')}, now {key}")
      raise StageConflictError(
          f"{stage_dir} holds checkpoints of a run with other settings ({changed}); to train "
          f"this stage anew with these settings delete {stage_dir / 'checkpoints'} (or the "
          "whole folder), or use another --workdir")
  distributed.write_on_primary(f"claim {stage_dir.name}", lambda: atomic.write_json(
      marker, {"fingerprint": key, "inputs": inputs}))
