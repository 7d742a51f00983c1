"""Raw Amazon review and metadata dumps (McAuley lab), 2014 or 2018 layout, plain or gzipped.

Reviews: one JSON object per line with `reviewerID`, `asin`, `unixReviewTime`. Metadata: one
object per line with `asin`, `title`, `brand`, and `categories` (2014: a list of category paths) or
`category` (2018: a list), `description` (2014: a string, 2018: a list); 2014 metadata lines are
Python literals, read with `ast.literal_eval` when they are not JSON.

Pipeline: duplicates dropped and time order (see `assemble`), interactions with items that have no
metadata handled by `config.data.missing_text`, then iterative k-core (`config.data.kcore`) on users
and items until every user and item has at least k interactions.
"""

import ast
import collections
import dataclasses
import json
import re

from lasar_jax.data.errors import DataError
from lasar_jax.data.sources import assemble, files
from lasar_jax.data.sources.records import ItemText, RawDataset

_ASIN = re.compile(r"""["']asin["']\s*:\s*["']([^"']+)["']""")


def review_files(name: str) -> tuple[str, ...]:
  """Review file names tried in order: 2014 5-core, 2014 full, 2018 5-core, 2018 full."""
  return (f"reviews_{name}_5.json", f"reviews_{name}.json", f"{name}_5.json", f"{name}.json")


def parse_record(path, number: int, line: str) -> dict:
  """One line as a dict: JSON, else a Python literal (2014 metadata)."""
  try:
    record = json.loads(line)
  except json.JSONDecodeError:
    try:
      record = ast.literal_eval(line)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
      raise DataError(path, "neither JSON nor a Python literal", number) from None
  if not isinstance(record, dict):
    raise DataError(path, "expected one object per line", number)
  return record


def read_reviews(path) -> list[tuple[str, str, float]]:
  """(reviewer, asin, unix time) of every review line."""
  rows = []
  for number, line in files.read_lines(path):
    record = parse_record(path, number, line)
    missing = [k for k in ("reviewerID", "asin", "unixReviewTime") if k not in record]
    if missing:
      raise DataError(path, f"review without {missing}", number)
    timestamp = files.parse_number(path, number, str(record["unixReviewTime"]), "unixReviewTime")
    rows.append((str(record["reviewerID"]), str(record["asin"]), timestamp))
  return rows


def read_metadata(path, wanted: set[str]) -> dict[str, ItemText]:
  """asin -> text of the metadata lines whose asin is in `wanted` (other lines are not parsed)."""
  catalog = {}
  for number, line in files.read_lines(path):
    quick = _ASIN.search(line)
    if quick is not None and quick.group(1) not in wanted:
      continue
    record = parse_record(path, number, line)
    if "asin" not in record:
      raise DataError(path, "metadata without 'asin'", number)
    catalog[str(record["asin"])] = ItemText.from_fields(
        record.get("title"), record.get("brand"),
        record.get("categories", record.get("category")), record.get("description"))
  return catalog


def kcore(raw: RawDataset, k: int) -> RawDataset:
  """Keeps the k-core: drops users and items with fewer than k interactions until none is left."""
  sequences, timestamps = dict(raw.sequences), dict(raw.timestamps)
  changed = k > 0
  while changed:
    item_counts = collections.Counter(item for items in sequences.values() for item in items)
    changed = False
    for user, items in list(sequences.items()):
      kept = [i for i, item in enumerate(items) if item_counts[item] >= k]
      if len(kept) == len(items) >= k:
        continue
      changed = True
      if len(kept) < k:
        del sequences[user]
        timestamps.pop(user, None)
        continue
      sequences[user] = tuple(items[i] for i in kept)
      if user in timestamps:
        timestamps[user] = tuple(timestamps[user][i] for i in kept)
  drops = collections.Counter(raw.drops)
  drops["kcore_users"] += len(raw.sequences) - len(sequences)
  drops["kcore_interactions"] += (sum(map(len, raw.sequences.values()))
                                  - sum(map(len, sequences.values())))
  return dataclasses.replace(raw, sequences=sequences, timestamps=timestamps, drops=dict(+drops))


def read(cfg) -> RawDataset:
  """Reads `meta_NAME.json` and the NAME reviews from `cfg.path`, then applies k-core."""
  folder = files.source_folder(cfg.path)
  name = files.dataset_name(folder, cfg.name, ".json", prefix="meta_")
  review_path = files.require_file(folder, *review_files(name))
  meta_path = files.require_file(folder, f"meta_{name}.json")
  rows = read_reviews(review_path)
  catalog = read_metadata(meta_path, {r[1] for r in rows})
  assemble.check_text_keys((r[1] for r in rows), catalog, review_path, meta_path)
  return kcore(assemble.build(assemble.group_events(rows), catalog, cfg.missing_text), cfg.kcore)
