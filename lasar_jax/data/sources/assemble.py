"""Turning what a reader parsed into a RawDataset, with the rules every source shares.

Rules (each change is counted in `RawDataset.drops`, never silent):
- Time order: a stable sort by timestamp; equal timestamps keep the order of the source file.
- Duplicates: with timestamps, the same (user, item, timestamp) seen again is dropped
  (`duplicate_interactions`). Without timestamps a repeated item is a real repeat and is kept.
- Items without metadata, where the source has an item-text file: with `missing_text='drop'` their
  interactions go (`interactions_without_item_text`, `items_without_item_text`); with 'keep' they
  stay with empty text (`items_kept_without_text`). A source with no item-text file at all keeps
  every item with empty text (the item id stands for the title) and says so in `notes`.
- A source's own split (a benchmark) is kept intact: its items always stay, with empty text if
  need be.
"""

import collections
from collections.abc import Iterable

from lasar_jax.data.errors import DataError
from lasar_jax.data.sources.records import SPLITS, ItemText, RawDataset, Sample

NO_TEXT_NOTE = "no item text in the source: text is empty and the item id stands for the title"
MISSING_TEXT_MODES = ("drop", "keep")


def check_text_keys(items: Iterable[str], catalog: dict[str, ItemText] | None,
                    interactions_file, text_file) -> None:
  """Raises DataError when no interaction item has an entry in the item-text file: the two files
  key items differently (e.g. indices against original ids), and would be read as two disjoint
  catalogues."""
  items = set(items)
  if catalog is None or not items:
    return
  if not items & catalog.keys():
    raise DataError(interactions_file, f"its {len(items):,} item ids (e.g. {min(items)!r}) and "
                    f"the {len(catalog):,} of {text_file} (e.g. {min(catalog, default='')!r}) "
                    "have 0 in common: the two files key items differently; add the index file "
                    "that maps one to the other, or fix the keys")


def event_items(events: dict[str, list[tuple[str, float | None]]]) -> Iterable[str]:
  """Every item id of user -> [(item, timestamp)] events."""
  return (item for rows in events.values() for item, _ in rows)


def sample_items(samples: dict[str, Iterable[Sample]]) -> Iterable[str]:
  """Every item id (histories and targets) of split -> samples."""
  return (item for rows in samples.values() for sample in rows
          for item in (*sample.history, sample.target))


def group_events(events: Iterable[tuple[str, str, float | None]]
                 ) -> dict[str, list[tuple[str, float | None]]]:
  """(user, item, timestamp) rows to user -> [(item, timestamp)], in source order."""
  grouped = collections.defaultdict(list)
  for user, item, timestamp in events:
    grouped[user].append((item, timestamp))
  return dict(grouped)


def time_order(events: dict[str, list[tuple[str, float | None]]], drops: collections.Counter
               ) -> dict[str, list[tuple[str, float | None]]]:
  """Each user's events without exact duplicates, stably sorted by timestamp (see module doc)."""
  ordered = {}
  for user, rows in events.items():
    if any(timestamp is None for _, timestamp in rows):
      ordered[user] = rows
      continue
    unique = list(dict.fromkeys(rows))
    drops["duplicate_interactions"] += len(rows) - len(unique)
    ordered[user] = sorted(unique, key=lambda row: row[1])
  return ordered


def build(events: dict[str, list[tuple[str, float | None]]], catalog: dict[str, ItemText] | None,
          missing_text: str, drops: collections.Counter | None = None,
          notes: tuple[str, ...] = ()) -> RawDataset:
  """A RawDataset from user -> [(item, timestamp or None)] and the item-text catalog (or None)."""
  if missing_text not in MISSING_TEXT_MODES:
    raise ValueError(f"config.data.missing_text must be one of {MISSING_TEXT_MODES}, "
                     f"not {missing_text!r}")
  drops = collections.Counter() if drops is None else drops
  events = time_order(events, drops)
  if catalog is None:
    catalog = dict.fromkeys((item for rows in events.values() for item, _ in rows), ItemText())
    notes = notes + (NO_TEXT_NOTE,)
  unknown = collections.Counter(item for rows in events.values() for item, _ in rows
                                if item not in catalog)
  if unknown and missing_text == "drop":
    drops["interactions_without_item_text"] += sum(unknown.values())
    drops["items_without_item_text"] += len(unknown)
    events = {user: [row for row in rows if row[0] in catalog] for user, rows in events.items()}
  elif unknown:
    drops["items_kept_without_text"] += len(unknown)
    catalog = catalog | dict.fromkeys(unknown, ItemText())
  sequences = {user: tuple(item for item, _ in rows) for user, rows in events.items()}
  has_times = all(timestamp is not None for rows in events.values() for _, timestamp in rows)
  timestamps = ({user: tuple(float(t) for _, t in rows) for user, rows in events.items()}
                if has_times and events else {})
  return RawDataset(items=catalog, sequences=sequences, timestamps=timestamps, split=None,
                    drops=dict(+drops), notes=notes)


def samples_from_parts(parts: dict[str, dict[str, list[str]]]) -> dict[str, list[Sample]]:
  """Split samples from per-split interaction lists (split -> user -> items in time order).

  Each user's items are concatenated train, valid, test; every item after the first is the target
  of a sample in the split it came from, with everything before it as history.
  """
  samples = {split: [] for split in SPLITS}
  users = dict.fromkeys(user for split in SPLITS for user in parts.get(split, {}))
  for user in users:
    seen = []
    for split in SPLITS:
      for item in parts.get(split, {}).get(user, []):
        if seen:
          samples[split].append(Sample(user, tuple(seen), item))
        seen.append(item)
  return samples


def build_from_split(samples: dict[str, Iterable[Sample]], catalog: dict[str, ItemText] | None,
                     drops: collections.Counter | None = None,
                     notes: tuple[str, ...] = ()) -> RawDataset:
  """A RawDataset that keeps a source's own split; each user's sequence is rebuilt from it.

  A user's sequence is the history of their first sample followed by the target of every sample,
  in split order (train, valid, test) and file order within a split.
  """
  drops = collections.Counter() if drops is None else drops
  samples = {split: tuple(samples.get(split, ())) for split in SPLITS}
  sequences = {}
  for split in SPLITS:
    for user, history, target in samples[split]:
      sequences[user] = sequences.get(user, history) + (target,)
  used = dict.fromkeys(item for sample_list in samples.values() for sample in sample_list
                       for item in sample.history + (sample.target,))
  if catalog is None:
    catalog, notes = {}, notes + (NO_TEXT_NOTE,)
  else:
    catalog = dict(catalog)
    unknown = [item for item in used if item not in catalog]
    if unknown:
      drops["items_kept_without_text"] += len(unknown)
  catalog.update(dict.fromkeys((item for item in used if item not in catalog), ItemText()))
  return RawDataset(items=catalog, sequences=sequences, timestamps={}, split=samples,
                    drops=dict(+drops), notes=notes)
