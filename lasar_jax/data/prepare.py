"""Preparation: a source read once into the canonical prepared form every later stage loads.

`prepare(config.data, seed, out_dir)` writes to `out_dir`:
  items.jsonl      one line per item index: index, item (source id), title, brand, categories,
                   description, text (what the item is embedded with, see `records.item_text`)
  sequences.jsonl  one line per user index: user (source id), items (indices, time order),
                   train_length (how many leading items are training interactions)
                   [, timestamps]
  splits.npz       {train,valid,test}_{users,histories,lengths,targets} (see `Split`)
  stats.json       counts, counted drops, notes and the source/config fingerprint
The files are written into a temporary sibling directory that then replaces `out_dir` whole
(`lasar_jax.atomic.directory`), so a reader never sees a half-prepared dataset; `prepare` reuses a
directory whose stats.json has the same source/config fingerprint.

Split (METHOD section 6): leave-one-out per user (last item = test target, second last = valid
target, every earlier item after the first = a train target with all items before it as history),
or the source's own split when it ships one. Histories keep the last `max_history` items. A
source split is scored per user, like leave-one-out: its valid and test splits keep each user's
first sample of the split (the one right after what the model may know; the later ones are counted
in stats.json as `*_samples_beyond_first_per_user`). A user's training interactions (what
baselines count) are the leading `train_length` items of the sequence: all but the held-out
targets.
The item table holds the items of the kept interactions (catalog items never interacted with are
counted and left out); with a source's own split it holds the source's whole catalog, the
benchmark's candidate set. Users and items are indexed in the order of their source ids (numbers
numerically).
"""

import dataclasses
import hashlib
import json
import pathlib

import numpy as np

from lasar_jax import atomic, reporting
from lasar_jax.data import sources, synthetic
from lasar_jax.data.sources.records import SPLITS, ItemText, RawDataset, item_text

PREPARE_VERSION = 2  # bump when the prepared form or its rules change: old directories are redone
STRINGS = np.dtypes.StringDType()


@dataclasses.dataclass(frozen=True)
class Split:
  """(history -> target) samples of one split, as arrays."""

  users: np.ndarray  # [N] int32 user index of each sample
  histories: np.ndarray  # [N, H] int32 item indices, oldest first, right-padded with -1
  lengths: np.ndarray  # [N] int32 real items in each history (at most H)
  targets: np.ndarray  # [N] int32 item index to predict

  def __len__(self) -> int:
    """Number of samples."""
    return len(self.targets)

  def history(self, i: int) -> np.ndarray:
    """The real history items of sample i, oldest first. [lengths[i]] int32"""
    return self.histories[i, :self.lengths[i]]

  def subset(self, indices: np.ndarray) -> "Split":
    """The samples at `indices` [M], in that order."""
    return Split(self.users[indices], self.histories[indices], self.lengths[indices],
                 self.targets[indices])


@dataclasses.dataclass(frozen=True)
class PreparedData:
  """The prepared dataset: items, users, sequences and splits, indexed from 0."""

  item_ids: np.ndarray  # [I] str: source item id of each item index
  items: tuple[ItemText, ...]  # [I] text fields of each item (empty where the source has none)
  titles: np.ndarray  # [I] str: title, or the source item id where the item has none
  item_texts: np.ndarray  # [I] str: the text each item is embedded with
  user_ids: np.ndarray  # [U] str: source user id of each user index
  sequences: tuple[np.ndarray, ...]  # [U] of [n_u] int32: each user's item indices in time order
  train_lengths: np.ndarray  # [U] int32: leading items of each sequence that are training interactions
  train: Split  # every training sample
  valid: Split  # validation samples (one per user with leave-one-out)
  test: Split  # test samples (one per user with leave-one-out)
  stats: dict  # what stats.json holds: counts, drops, notes, fingerprint

  @property
  def num_items(self) -> int:
    """Items in the catalog."""
    return len(self.item_ids)

  def training_sequences(self) -> list[np.ndarray]:
    """Each user's training interactions (the sequence without its held-out targets), the only
    interactions a baseline may count. [U] of [train_lengths[u]] int32"""
    return [seq[:n] for seq, n in zip(self.sequences, self.train_lengths)]

  def split(self, name: str) -> Split:
    """The split called `name` ('train', 'valid' or 'test')."""
    return {"train": self.train, "valid": self.valid, "test": self.test}[name]


def source_order(ids) -> list[str]:
  """Source ids sorted: numeric ids numerically first, then the others as strings."""
  return sorted(ids, key=lambda i: (0, int(i), "") if i.isascii() and i.isdigit() else (1, 0, i))


def load_source(cfg, seed: int) -> RawDataset:
  """Reads (or, for 'synthetic', generates) the dataset `cfg.format` names."""
  if cfg.format == "synthetic":
    return synthetic.generate(cfg.synthetic, seed)
  if cfg.format not in sources.READERS:
    raise ValueError(f"config.data.format {cfg.format!r} is not one of "
                     f"{['synthetic', *sources.READERS]}")
  return sources.READERS[cfg.format](cfg)


def fingerprint(cfg, seed: int) -> str:
  """A hash of the config, the seed where it matters, and every source file's name, size, mtime."""
  files = []
  if cfg.format != "synthetic":
    folder = pathlib.Path(cfg.path).expanduser().resolve()
    files = sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in folder.rglob("*") if p.is_file())
  key = {"version": PREPARE_VERSION, "config": cfg.to_dict(), "files": files,
         "path": str(pathlib.Path(cfg.path).expanduser().resolve()) if cfg.path else "",
         "seed": seed if cfg.format == "synthetic" else None}
  return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def make_split(flat: np.ndarray, users: np.ndarray, starts: np.ndarray, ends: np.ndarray,
               max_history: int) -> Split:
  """Samples whose history is `flat[starts:ends]` (cut to its last `max_history` items) and whose
  target is `flat[ends]`."""
  starts = np.maximum(starts, ends - max_history)
  positions = starts[:, None] + np.arange(max_history)  # [N, H]
  padded = np.append(flat, -1).astype(np.int32)
  histories = np.where(positions < ends[:, None], padded[np.minimum(positions, len(flat))], -1)
  return Split(users=users.astype(np.int32), histories=histories.astype(np.int32),
               lengths=(ends - starts).astype(np.int32), targets=padded[ends])


def leave_one_out(sequences: list[list[int]], max_history: int) -> dict[str, Split]:
  """METHOD section 6: per user the last item is the test target, the second last the valid
  target, and every earlier item but the first a train target; its history is all items before."""
  lengths = np.array([len(s) for s in sequences], np.int64)
  flat = np.array([i for s in sequences for i in s], np.int32)
  offsets = np.cumsum(lengths) - lengths
  users = np.arange(len(sequences))
  train_counts = np.maximum(lengths - 3, 0)
  train_users = np.repeat(users, train_counts)
  rank = np.arange(train_counts.sum()) - np.repeat(np.cumsum(train_counts) - train_counts,
                                                   train_counts)
  ends = {"train": offsets[train_users] + 1 + rank, "valid": offsets + lengths - 2,
          "test": offsets + lengths - 1}
  split_users = {"train": train_users, "valid": users, "test": users}
  return {split: make_split(flat, split_users[split], offsets[split_users[split]], ends[split],
                            max_history) for split in SPLITS}


def source_split(samples: list[tuple[int, list[int], int]], max_history: int) -> Split:
  """A source's own (user, history, target) samples as a Split."""
  flat = np.array([i for _, history, target in samples for i in (*history, target)], np.int32)
  lengths = np.array([len(history) for _, history, _ in samples], np.int64)
  starts = np.cumsum(lengths + 1) - (lengths + 1)
  users = np.array([user for user, _, _ in samples], np.int64)
  return make_split(flat, users, starts, starts + lengths, max_history)


def first_per_user(split: Split) -> Split:
  """The first sample of each user in `split`, in the order of those first samples."""
  _, first = np.unique(split.users, return_index=True)
  return split.subset(np.sort(first))


def build(raw: RawDataset, cfg, key: str) -> tuple[PreparedData, list[dict]]:
  """The prepared dataset of a RawDataset (fingerprint `key`), and its sequences.jsonl rows."""
  drops = dict(raw.drops)
  sequences = dict(raw.sequences)
  if raw.split is None:
    if cfg.min_interactions < 3:
      raise ValueError("config.data.min_interactions must be at least 3 for leave-one-out")
    short = [user for user, items in sequences.items() if len(items) < cfg.min_interactions]
    drops["users_below_min_interactions"] = len(short)
    drops["interactions_of_short_users"] = sum(len(sequences.pop(user)) for user in short)
    used = set(item for items in sequences.values() for item in items)
    drops["catalog_items_without_interactions"] = sum(item not in used for item in raw.items)
  else:
    used = set(raw.items)
  item_ids = source_order(used)
  item_index = {item: i for i, item in enumerate(item_ids)}
  user_ids = source_order(sequences)
  user_index = {user: u for u, user in enumerate(user_ids)}
  indexed = [[item_index[i] for i in sequences[user]] for user in user_ids]
  lengths = np.array([len(s) for s in indexed])
  beyond_first = {}
  if raw.split is None:
    splits = leave_one_out(indexed, cfg.max_history)
    train_lengths = np.maximum(lengths - 2, 0)
  else:
    splits = {split: source_split([(user_index[s.user], [item_index[i] for i in s.history],
                                    item_index[s.target]) for s in raw.split[split]],
                                  cfg.max_history) for split in SPLITS}
    # The held-out targets close each rebuilt sequence (train targets, then valid, then test).
    held_out = sum(np.bincount(splits[s].users, minlength=len(user_ids)) for s in SPLITS[1:])
    train_lengths = lengths - held_out
    for split in SPLITS[1:]:
      firsts = first_per_user(splits[split])
      beyond_first[f"{split}_samples_beyond_first_per_user"] = len(splits[split]) - len(firsts)
      splits[split] = firsts
  items = tuple(raw.items[item] for item in item_ids)
  rows = [{"user": user, "items": items_u, "train_length": int(n)} | (
      {"timestamps": list(raw.timestamps[user])} if user in raw.timestamps else {})
          for user, items_u, n in zip(user_ids, indexed, train_lengths)]
  stats = {
      "format": cfg.format, "path": cfg.path, "name": cfg.name,
      "split": "leave-one-out" if raw.split is None else "source",
      "users": len(user_ids), "items": len(item_ids), "interactions": int(lengths.sum()),
      "avg_sequence_length": round(float(lengths.mean()), 2) if len(lengths) else 0.0,
      "min_sequence_length": int(lengths.min()) if len(lengths) else 0,
      "max_sequence_length": int(lengths.max()) if len(lengths) else 0,
      "sparsity": round(1.0 - lengths.sum() / max(len(user_ids) * len(item_ids), 1), 6),
      "train_samples": len(splits["train"]), "valid_samples": len(splits["valid"]),
      "test_samples": len(splits["test"]), **beyond_first,
      "items_without_text": sum(item.is_empty() for item in items),
      "drops": {reason: int(count) for reason, count in sorted(drops.items()) if count},
      "notes": list(raw.notes),
      "max_history": cfg.max_history, "max_description_chars": cfg.max_description_chars,
      "fingerprint": key,
  }
  texts = [item_text(item, i, cfg.max_description_chars) for i, item in zip(item_ids, items)]
  return assemble_prepared(item_ids, items, texts, user_ids, indexed, train_lengths, splits,
                           stats), rows


def assemble_prepared(item_ids, items, texts, user_ids, sequences, train_lengths, splits,
                      stats) -> PreparedData:
  """PreparedData from plain lists; a title falls back to the item id where the item has none."""
  return PreparedData(
      item_ids=np.array(item_ids, STRINGS), items=tuple(items),
      titles=np.array([item.title or i for i, item in zip(item_ids, items)], STRINGS),
      item_texts=np.array(texts, STRINGS),
      user_ids=np.array(user_ids, STRINGS),
      sequences=tuple(np.array(s, np.int32) for s in sequences),
      train_lengths=np.asarray(train_lengths, np.int32),
      train=splits["train"], valid=splits["valid"], test=splits["test"], stats=stats)


def write_jsonl(path: pathlib.Path, rows) -> None:
  """One JSON object per line."""
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def save(data: PreparedData, sequence_rows: list[dict], out_dir: pathlib.Path) -> None:
  """Writes the prepared form, replacing `out_dir` whole once every file is written."""
  arrays = {f"{name}_{field.name}": getattr(data.split(name), field.name)
            for name in SPLITS for field in dataclasses.fields(Split)}
  with atomic.directory(out_dir) as tmp:
    write_jsonl(tmp / "items.jsonl", (
        {"index": i, "item": str(item_id), "title": item.title, "brand": item.brand,
         "categories": list(item.categories), "description": item.description, "text": str(text)}
        for i, (item_id, item, text) in enumerate(zip(data.item_ids, data.items,
                                                      data.item_texts))))
    write_jsonl(tmp / "sequences.jsonl", sequence_rows)
    np.savez(tmp / "splits.npz", **arrays)
    (tmp / "stats.json").write_text(json.dumps(data.stats, indent=1), encoding="utf-8")


def read_jsonl(path: pathlib.Path) -> list[dict]:
  """Every line of a JSON-lines file."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def load_prepared(out_dir) -> PreparedData:
  """Reads back what `prepare` wrote to `out_dir`."""
  out_dir = pathlib.Path(out_dir)
  stats_path = out_dir / "stats.json"
  if not stats_path.is_file():
    raise FileNotFoundError(f"{stats_path}: no complete prepared dataset in {out_dir}")
  stats = json.loads(stats_path.read_text(encoding="utf-8"))
  item_rows = read_jsonl(out_dir / "items.jsonl")
  sequence_rows = read_jsonl(out_dir / "sequences.jsonl")
  with np.load(out_dir / "splits.npz") as arrays:
    splits = {name: Split(**{field.name: arrays[f"{name}_{field.name}"]
                             for field in dataclasses.fields(Split)}) for name in SPLITS}
  items = [ItemText(row["title"], row["brand"], tuple(row["categories"]), row["description"])
           for row in item_rows]
  return assemble_prepared(
      [row["item"] for row in item_rows], items, [row["text"] for row in item_rows],
      [row["user"] for row in sequence_rows], [row["items"] for row in sequence_rows],
      [row["train_length"] for row in sequence_rows], splits, stats)


def stats_table(stats: dict) -> str:
  """The statistics as a small two-column text table."""
  source = f"{stats['format']}" + (f": {stats['path']}" if stats["path"] else "")
  source += f" ({stats['name']})" if stats["name"] else ""
  rows = [("source", source), ("split", stats["split"])]
  rows += [(key.replace("_", " "), f"{stats[key]:,}" if isinstance(stats[key], int) else
            str(stats[key]))
           for key in ("users", "items", "interactions", "avg_sequence_length",
                       "min_sequence_length", "max_sequence_length", "sparsity", "train_samples",
                       "valid_samples", "test_samples", "valid_samples_beyond_first_per_user",
                       "test_samples_beyond_first_per_user", "items_without_text")
           if key in stats]
  rows += [(f"dropped: {reason.replace('_', ' ')}", f"{count:,}")
           for reason, count in stats["drops"].items()] or [("dropped", "nothing")]
  rows += [("note", note) for note in stats["notes"]]
  width = max(len(name) for name, _ in rows)
  return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def prepare(cfg, seed: int, out_dir) -> PreparedData:
  """Reads the source `cfg` names, prepares it into `out_dir` (or reuses it, saying so in one
  line) and prints the stats table when it prepares."""
  out_dir = pathlib.Path(out_dir)
  key = fingerprint(cfg, seed)
  stats_path = out_dir / "stats.json"
  if stats_path.is_file() and json.loads(stats_path.read_text()).get("fingerprint") == key:
    data = load_prepared(out_dir)
    reporting.say(f"reusing prepared data in {out_dir} ({data.stats['users']:,} users, "
                  f"{data.stats['items']:,} items)")
    return data
  data, sequence_rows = build(load_source(cfg, seed), cfg, key)
  save(data, sequence_rows, out_dir)
  reporting.say(f"prepared data in {out_dir}\n{stats_table(data.stats)}")
  return data
