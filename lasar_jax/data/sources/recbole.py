"""RecBole atomic files: `NAME.inter`, optional `NAME.item` and `NAME.text`, tab-separated with a
typed header (`user_id:token\titem_id:token\ttimestamp:float`).

When `NAME.train.inter`, `NAME.valid.inter` and `NAME.test.inter` exist, that split is kept instead
of leave-one-out. Their rows are either interactions (`user_id, item_id[, timestamp]`: each is the
target of a sample whose history is all the user's earlier items, train then valid then test) or
ready samples (`user_id, item_id_list, item_id`, the UniSRec layout).

UniSRec folders number their items: the `.inter` files hold indices that `NAME.item2index`
(`original id<TAB>index` lines) defines, while `NAME.text` is keyed by the original ids. When the
index file is there and the text file knows more items through it, the indices are read as the
original ids. Interaction and text files with no item id in common are refused.
"""

import collections
from collections.abc import Callable

from lasar_jax.data.errors import DataError
from lasar_jax.data.sources import assemble, files
from lasar_jax.data.sources.records import SPLITS, ItemText, RawDataset, Sample

TITLE_FIELDS = ("title", "movie_title", "item_name", "name")
CATEGORY_FIELDS = ("categories", "category", "class", "genre", "genres")
TEXT_FIELD = "text"  # the single field of UniSRec-style `NAME.text` files


def read_table(path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
  """Field names (type suffix removed) and (line number, field -> value) rows of an atomic file."""
  lines = files.read_lines(path)
  header = next(lines, None)
  if header is None:
    raise DataError(path, "empty file: expected a 'name:type' header line")
  names = [field.split(":")[0].strip() for field in header[1].split("\t")]
  rows = []
  for number, line in lines:
    values = line.split("\t")
    if len(values) != len(names):
      raise DataError(path, f"expected {len(names)} tab-separated fields, found {len(values)}",
                      number)
    rows.append((number, dict(zip(names, values))))
  return names, rows


def require_fields(path, names: list[str], *required: str) -> None:
  """A DataError naming the file when its header lacks one of `required`."""
  missing = [field for field in required if field not in names]
  if missing:
    raise DataError(path, f"header has no {missing} field (it has {names})", 1)


def read_events(path) -> dict[str, list[tuple[str, float | None]]]:
  """user -> [(item, timestamp or None)] in file order, from an interaction file."""
  names, rows = read_table(path)
  require_fields(path, names, "user_id", "item_id")
  timed = "timestamp" in names
  return assemble.group_events(
      (row["user_id"], row["item_id"],
       files.parse_number(path, number, row["timestamp"], "timestamp") if timed else None)
      for number, row in rows)


def read_catalog(folder, name: str) -> dict[str, ItemText] | None:
  """Item text from `NAME.item` and/or `NAME.text`; None when the folder has neither."""
  item_path = files.find_file(folder, f"{name}.item")
  text_path = files.find_file(folder, f"{name}.text")
  if item_path is None and text_path is None:
    return None
  fields = collections.defaultdict(dict)
  for path in (item_path, text_path):
    if path is not None:
      names, rows = read_table(path)
      require_fields(path, names, "item_id")
      for _, row in rows:
        fields[row["item_id"]].update(row)
  catalog = {}
  for item, row in fields.items():
    title = next((row[f] for f in TITLE_FIELDS if row.get(f)), "")
    categories = next((row[f].split() for f in CATEGORY_FIELDS if row.get(f)), [])
    description = row.get("description", "")
    text = row.get(TEXT_FIELD, "")
    if text and not title:
      title = text
    elif text and not description:
      description = text
    catalog[item] = ItemText.from_fields(title, row.get("brand"), categories, description)
  return catalog


def read_split_file(path, drops: collections.Counter
                    ) -> tuple[list[Sample] | None, dict[str, list[str]] | None]:
  """(ready samples, None) in the UniSRec layout, (None, user -> items in time order) otherwise."""
  names, rows = read_table(path)
  require_fields(path, names, "user_id", "item_id")
  if "item_id_list" in names:
    return [Sample(row["user_id"], tuple(row["item_id_list"].split()), row["item_id"])
            for _, row in rows], None
  events = assemble.time_order(read_events(path), drops)
  return None, {user: [item for item, _ in rows] for user, rows in events.items()}


def read_split(folder, paths: dict) -> tuple[dict[str, list[Sample]], collections.Counter]:
  """The samples of the three split files (which must share one layout), and counted drops."""
  drops = collections.Counter()
  samples, parts = {}, {}
  for split, path in paths.items():
    samples[split], parts[split] = read_split_file(path, drops)
  if None in samples.values() and None in parts.values():
    raise DataError(folder, "the .train/.valid/.test.inter files mix the interaction and the "
                    "item_id_list layouts")
  if None in samples.values():
    samples = assemble.samples_from_parts(parts)
  return samples, drops


def read_index(folder, name: str) -> tuple[dict[str, str], object] | None:
  """({index: original id}, path) of `NAME.item2index`, or None when the folder has none."""
  path = files.find_file(folder, f"{name}.item2index")
  if path is None:
    return None
  index = {}
  for number, line in files.read_lines(path):
    fields = [field.strip() for field in line.split("\t")]
    if len(fields) != 2:
      raise DataError(path, f"expected 'original id<TAB>index', found {len(fields)} fields", number)
    if not (number == 1 and ":" in fields[1]):  # a typed header line ('item_id:token ...')
      index[fields[1]] = fields[0]
  return index, path


def original_ids(items: set[str], index, catalog: dict | None,
                 source) -> Callable[[str], str]:
  """item id as read -> item id of the text file: through the index when the text file knows more
  items that way (the interactions hold indices), else unchanged."""
  if index is None or catalog is None:
    return str
  table, index_path = index
  if sum(table.get(i) in catalog for i in items) <= len(items & catalog.keys()):
    return str

  def original(item: str) -> str:
    """The original id of an index."""
    if item not in table:
      raise DataError(source, f"item {item!r} is not in {index_path}")
    return table[item]

  return original


def dataset_names(folder) -> list[str]:
  """The NAMEs of the `NAME.inter` and `NAME.<split>.inter` files in `folder`."""
  names = set()
  for path in folder.iterdir():
    stem = path.name.removesuffix(".gz")
    if stem.endswith(".inter"):
      stem = stem.removesuffix(".inter")
      for split in SPLITS:
        stem = stem.removesuffix(f".{split}")
      names.add(stem)
  return sorted(names)


def read(cfg) -> RawDataset:
  """Reads `cfg.path`/`NAME.*` (`NAME` = `cfg.name` or the only one there)."""
  folder = files.source_folder(cfg.path)
  names = [cfg.name] if cfg.name else dataset_names(folder)
  if len(names) != 1:
    raise DataError(folder, f"cannot tell which *.inter dataset to read (found {names}); "
                    "set config.data.name")
  name = names[0]
  catalog, index = read_catalog(folder, name), read_index(folder, name)
  text_path = files.find_file(folder, f"{name}.text") or files.find_file(folder, f"{name}.item")
  split_paths = {split: files.find_file(folder, f"{name}.{split}.inter") for split in SPLITS}
  if all(split_paths.values()):
    samples, drops = read_split(folder, split_paths)
    to_text = original_ids(set(assemble.sample_items(samples)), index, catalog, split_paths["test"])
    samples = {split: [Sample(s.user, tuple(map(to_text, s.history)), to_text(s.target))
                       for s in rows] for split, rows in samples.items()}
    assemble.check_text_keys(assemble.sample_items(samples), catalog, split_paths["test"],
                             text_path)
    return assemble.build_from_split(samples, catalog, drops)
  inter_path = files.require_file(folder, f"{name}.inter")
  events = read_events(inter_path)
  to_text = original_ids(set(assemble.event_items(events)), index, catalog, inter_path)
  events = {user: [(to_text(item), t) for item, t in rows] for user, rows in events.items()}
  assemble.check_text_keys(assemble.event_items(events), catalog, inter_path, text_path)
  return assemble.build(events, catalog, cfg.missing_text)
