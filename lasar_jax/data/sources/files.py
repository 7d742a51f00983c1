"""Reading source files, plain or gzipped (`X`, else `X.gz`), with errors naming file and line."""

import gzip
import json
import pathlib
import zlib
from collections.abc import Iterator

from lasar_jax.data.errors import DataError


def source_folder(path: str) -> pathlib.Path:
  """The source folder of a config, which must exist."""
  if not path:
    raise DataError("config.data.path", "empty: set it to the source folder")
  folder = pathlib.Path(path).expanduser()
  if not folder.is_dir():
    raise DataError(folder, "source folder does not exist (set config.data.path)")
  return folder


def find_file(folder: pathlib.Path, name: str) -> pathlib.Path | None:
  """`folder/name`, else `folder/name.gz`, else None."""
  for candidate in (folder / name, folder / f"{name}.gz"):
    if candidate.is_file():
      return candidate
  return None


def require_file(folder: pathlib.Path, *names: str) -> pathlib.Path:
  """The first of `names` (plain or .gz) present in `folder`; DataError naming them all if none."""
  for name in names:
    found = find_file(folder, name)
    if found is not None:
      return found
  tried = ", ".join(f"{name}[.gz]" for name in names)
  raise DataError(folder, f"missing file: none of {tried}")


def dataset_name(folder: pathlib.Path, name: str, suffix: str, prefix: str = "") -> str:
  """`name` if given, else the one NAME for which `<prefix>NAME<suffix>[.gz]` is in `folder`."""
  if name:
    return name
  stems = [p.name.removesuffix(".gz") for p in folder.iterdir()]
  names = sorted({stem.removeprefix(prefix).removesuffix(suffix) for stem in stems
                  if stem.startswith(prefix) and stem.endswith(suffix)})
  if len(names) != 1:
    raise DataError(folder, f"cannot tell which {prefix}*{suffix} dataset to read (found "
                    f"{names}); set config.data.name")
  return names[0]


def _not_text(path: pathlib.Path, encoding: str, error: UnicodeDecodeError, offset: int,
              line: int) -> DataError:
  """The DataError of bytes that do not decode: file, line, byte offset (of the uncompressed
  text) and the bytes themselves."""
  bad = error.object[error.start:error.end]
  return DataError(path, f"not valid {encoding} text at byte {offset + error.start} ({bad!r}: "
                   f"{error.reason})", line)


def read_lines(path: pathlib.Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
  """(line number from 1, line without its newline) for every non-blank line of a text file."""
  opener = gzip.open if path.suffix == ".gz" else open
  number, offset = 0, 0
  try:
    with opener(path, "rb") as f:
      for number, raw in enumerate(f, start=1):
        try:
          line = raw.decode(encoding).rstrip("\r\n")
        except UnicodeDecodeError as e:
          raise _not_text(path, encoding, e, offset, number) from None
        offset += len(raw)
        if line.strip():
          yield number, line
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(path, f"cannot read file ({e})", number + 1) from None


def read_text(path: pathlib.Path, encoding: str = "utf-8") -> str:
  """A whole text file (plain or gzipped) as one string."""
  opener = gzip.open if path.suffix == ".gz" else open
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(path, f"cannot read file ({e})") from None
  try:
    return data.decode(encoding)
  except UnicodeDecodeError as e:
    raise _not_text(path, encoding, e, 0, data.count(b"\n", 0, e.start) + 1) from None


def read_json(path: pathlib.Path) -> object:
  """A whole-file JSON document (plain or gzipped)."""
  try:
    return json.loads(read_text(path))
  except json.JSONDecodeError as e:
    raise DataError(path, f"malformed JSON ({e.msg}, column {e.colno})", e.lineno) from None


def split_fields(path: pathlib.Path, number: int, line: str, separator: str,
                 count: int) -> list[str]:
  """The fields of a delimited line, which must have at least `count` of them."""
  fields = line.split(separator)
  if len(fields) < count:
    raise DataError(path, f"expected {count} {separator!r}-separated fields, found {len(fields)}",
                    number)
  return fields


def parse_number(path: pathlib.Path, number: int, text: str, what: str) -> float:
  """A numeric field (e.g. a timestamp) of a line."""
  try:
    return float(text)
  except ValueError:
    raise DataError(path, f"{what} {text!r} is not a number", number) from None
