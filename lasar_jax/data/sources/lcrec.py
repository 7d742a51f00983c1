"""LC-Rec / LETTER folders: `NAME.inter.json` (user -> items in time order, no timestamps) and
`NAME.item.json` (item id -> title, description, brand, categories)."""

from lasar_jax.data.errors import DataError
from lasar_jax.data.sources import assemble, files
from lasar_jax.data.sources.records import ItemText, RawDataset


def read_catalog(path) -> dict[str, ItemText]:
  """An LC-Rec item file: JSON object item id -> {title, description, brand, categories}."""
  document = files.read_json(path)
  if not isinstance(document, dict):
    raise DataError(path, "expected a JSON object: item id -> item fields")
  catalog = {}
  for item, fields in document.items():
    if not isinstance(fields, dict):
      raise DataError(path, f"item {item!r}: expected an object of text fields")
    catalog[str(item)] = ItemText.from_fields(fields.get("title"), fields.get("brand"),
                                              fields.get("categories"), fields.get("description"))
  return catalog


def read_sequences(path) -> dict[str, list[tuple[str, None]]]:
  """An LC-Rec interaction file: JSON object user id -> list of item ids in time order."""
  document = files.read_json(path)
  if not isinstance(document, dict):
    raise DataError(path, "expected a JSON object: user id -> list of item ids")
  events = {}
  for user, items in document.items():
    if not isinstance(items, list) or not all(isinstance(i, (str, int)) for i in items):
      raise DataError(path, f"user {user!r}: expected a list of item ids")
    events[str(user)] = [(str(item), None) for item in items]
  return events


def read(cfg) -> RawDataset:
  """Reads `cfg.path`/`NAME.inter.json` and `NAME.item.json` (NAME: `cfg.name` or the only one)."""
  folder = files.source_folder(cfg.path)
  name = files.dataset_name(folder, cfg.name, ".inter.json")
  inter_path = files.require_file(folder, f"{name}.inter.json")
  item_path = files.require_file(folder, f"{name}.item.json")
  events, catalog = read_sequences(inter_path), read_catalog(item_path)
  assemble.check_text_keys(assemble.event_items(events), catalog, inter_path, item_path)
  return assemble.build(events, catalog, cfg.missing_text)
