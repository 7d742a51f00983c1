"""MiniOneRec's Amazon 2018 folders: `index/NAME.item.json` (item text) and
`{train,valid,test}/NAME*.csv` (one row per sample: `user_id, history_item_id, item_id, ...`, the
history a Python list of at most 10 item ids; samples split globally by time 8:1:1).

Its own split is kept. The published folder lacks the train CSV; then the train samples are rebuilt
from what valid/test show: every prefix of each user's first held-out history (items whose own
samples fall before that user's held-out ones). That is a subset of MiniOneRec's train split (at
most 10 items per user are visible), and the notes say so.
"""

import ast
import csv
import io

from lasar_jax.data.errors import DataError
from lasar_jax.data.sources import assemble, files
from lasar_jax.data.sources.records import SPLITS, ItemText, RawDataset, Sample

REBUILT_TRAIN_NOTE = ("no train CSV in the source: train samples rebuilt from the valid/test "
                      "histories (a subset of MiniOneRec's train split)")


def list_literal_or_text(text):
  """A stringified Python list (`"['a', 'b']"`) as that list; any other value as it is."""
  if isinstance(text, str) and text.startswith("[") and text.endswith("]"):
    try:
      return ast.literal_eval(text)
    except (ValueError, SyntaxError):
      return text
  return text


def read_catalog(path) -> dict[str, ItemText]:
  """`NAME.item.json`: item id -> {title, description (a stringified list), brand, categories}."""
  document = files.read_json(path)
  if not isinstance(document, dict) or not all(isinstance(v, dict) for v in document.values()):
    raise DataError(path, "expected a JSON object: item id -> object of item fields")
  return {str(item): ItemText.from_fields(fields.get("title"), fields.get("brand"),
                                          fields.get("categories"),
                                          list_literal_or_text(fields.get("description")))
          for item, fields in document.items()}


def split_file(folder, split: str, name: str):
  """The CSV of one split (`split/NAME*.csv`, plain or gzipped), or None."""
  directory = folder / split
  if not directory.is_dir():
    return None
  matches = sorted(p for p in directory.iterdir()
                   if p.name.startswith(name) and p.name.removesuffix(".gz").endswith(".csv"))
  return matches[0] if matches else None


def read_samples(path) -> list[Sample]:
  """The (user, history, target) rows of one split CSV."""
  text = files.read_text(path)
  reader = csv.DictReader(io.StringIO(text, newline=""))
  missing = {"user_id", "history_item_id", "item_id"} - set(reader.fieldnames or ())
  if missing:
    raise DataError(path, f"header lacks {sorted(missing)}", 1)
  samples = []
  for row in reader:
    try:
      history = ast.literal_eval(row["history_item_id"])
    except (ValueError, SyntaxError):
      history = None
    if not isinstance(history, list) or row["item_id"] in (None, ""):
      raise DataError(path, "history_item_id is not a list, or item_id is empty", reader.line_num)
    samples.append(Sample(row["user_id"], tuple(str(i) for i in history), str(row["item_id"])))
  return samples


def rebuilt_train(held_out: list[Sample]) -> list[Sample]:
  """Train samples implied by held-out ones: every prefix of each user's first history."""
  first = {}
  for sample in held_out:
    first.setdefault(sample.user, sample.history)
  return [Sample(user, history[:j], history[j])
          for user, history in first.items() for j in range(1, len(history))]


def read(cfg) -> RawDataset:
  """Reads `cfg.path` for the category `cfg.name` (e.g. 'Office_Products')."""
  folder = files.source_folder(cfg.path)
  index = folder / "index"
  if not index.is_dir():
    raise DataError(index, "missing folder (MiniOneRec keeps item text in index/NAME.item.json)")
  name = files.dataset_name(index, cfg.name, ".item.json")
  item_path = files.require_file(index, f"{name}.item.json")
  catalog = read_catalog(item_path)
  paths = {split: split_file(folder, split, name) for split in SPLITS}
  for split in ("valid", "test"):
    if paths[split] is None:
      raise DataError(folder / split, f"missing file: {name}*.csv[.gz]")
  samples = {split: read_samples(paths[split]) for split in SPLITS if paths[split] is not None}
  assemble.check_text_keys(assemble.sample_items(samples), catalog, paths["test"], item_path)
  notes = ()
  if "train" not in samples:
    samples["train"] = rebuilt_train(samples["valid"] + samples["test"])
    notes = (REBUILT_TRAIN_NOTE,)
  return assemble.build_from_split(samples, catalog, notes=notes)
