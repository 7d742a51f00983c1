"""Write-then-rename helpers: a reader never sees a half-written file or directory."""

import contextlib
import json
import os
import pathlib
import shutil
import tempfile

import numpy as np


def write_text(path, text: str) -> None:
  """Writes `text` to a temporary sibling, then renames it over `path`."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


def write_json(path, payload) -> None:
  """Writes `payload` as indented JSON, atomically."""
  write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_jsonl(path, rows) -> None:
  """Writes one JSON object per line, atomically."""
  write_text(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def _write_binary(path, write) -> None:
  """Calls `write(file)` on a temporary sibling, then renames it over `path`."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


def save_npy(path, array: np.ndarray) -> None:
  """Saves a NumPy array, atomically."""
  _write_binary(path, lambda f: np.save(f, array))


def save_npz(path, arrays: dict[str, np.ndarray]) -> None:
  """Saves named NumPy arrays as one .npz, atomically."""
  _write_binary(path, lambda f: np.savez(f, **arrays))


@contextlib.contextmanager
def directory(path):
  """Yields a fresh temporary sibling directory; on success it replaces `path` whole.

  On an exception the temporary directory is removed and `path` is left as it was.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
  try:
    yield tmp
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  if path.exists():
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)
  else:
    tmp.rename(path)
