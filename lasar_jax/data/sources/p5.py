"""P5 / TIGER / GRAM folders: `user_sequence.txt` lines `USER ITEM_1 ... ITEM_n` in time order, and
optionally `item_plain_text.txt` lines `ITEM title: ...; brand: ...; categories: a, b; ...`."""

import re

from lasar_jax.data.errors import DataError
from lasar_jax.data.sources import assemble, files
from lasar_jax.data.sources.records import ItemText, RawDataset

SEQUENCE_FILES = ("user_sequence.txt", "sequential_data.txt")
TEXT_FILE = "item_plain_text.txt"
_FIELD = re.compile(r"(?:^|;\s*)(title|brand|categories|description|price|salesrank):\s*")


def read_item_line(path, number: int, line: str) -> tuple[str, ItemText]:
  """One `item_plain_text.txt` line: the item id, then `key: value` fields separated by '; '."""
  item, _, text = line.partition(" ")
  pieces = _FIELD.split(text.strip())
  if len(pieces) < 3 or pieces[0].strip():
    raise DataError(path, "expected 'ITEM title: ...; brand: ...' fields", number)
  fields = dict(zip(pieces[1::2], pieces[2::2]))
  return item, ItemText.from_fields(fields.get("title"), fields.get("brand"),
                                    fields.get("categories"), fields.get("description"))


def read(cfg) -> RawDataset:
  """Reads the user sequences of `cfg.path`, and its item text when the folder has it."""
  folder = files.source_folder(cfg.path)
  path = files.require_file(folder, *SEQUENCE_FILES)
  events, first_line = {}, {}
  for number, line in files.read_lines(path):
    user, *items = line.split()
    if user in events:
      raise DataError(path, f"user {user!r} already has a line ({first_line[user]})", number)
    events[user], first_line[user] = [(item, None) for item in items], number
  text_path = files.find_file(folder, TEXT_FILE)
  catalog = None
  if text_path is not None:
    catalog = dict(read_item_line(text_path, number, line)
                   for number, line in files.read_lines(text_path))
  assemble.check_text_keys(assemble.event_items(events), catalog, path, text_path)
  return assemble.build(events, catalog, cfg.missing_text)
