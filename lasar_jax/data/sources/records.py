"""The common in-memory form every source returns: item text, user sequences, counted drops."""

import dataclasses
import html
import re
from typing import NamedTuple

SPLITS = ("train", "valid", "test")

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([.,;:!?])")


def clean_text(text) -> str:
  """One text field as a clean string: a list is joined, HTML entities and tags go, spaces collapse
  (none is left before punctuation)."""
  if text is None:
    return ""
  if isinstance(text, (list, tuple)):
    text = " ".join(clean_text(part) for part in text)
  text = _TAG.sub(" ", html.unescape(str(text)))
  return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", _SPACE.sub(" ", text)).strip()


def clean_categories(categories) -> tuple[str, ...]:
  """Categories as a tuple of distinct non-empty names, in source order.

  Accepts a comma-separated string, a list of names, or a list of category paths (Amazon 2014).
  """
  if categories is None:
    return ()
  if isinstance(categories, str):
    categories = categories.split(",")
  names = []
  for entry in categories:
    for name in (entry if isinstance(entry, (list, tuple)) else [entry]):
      name = clean_text(name)
      if name and name not in names:
        names.append(name)
  return tuple(names)


@dataclasses.dataclass(frozen=True)
class ItemText:
  """An item's text as its source gives it; empty where the source has none."""

  title: str = ""
  brand: str = ""
  categories: tuple[str, ...] = ()
  description: str = ""

  @classmethod
  def from_fields(cls, title=None, brand=None, categories=None, description=None) -> "ItemText":
    """Builds an ItemText from raw source fields (strings, lists or None), cleaned."""
    return cls(title=clean_text(title), brand=clean_text(brand),
               categories=clean_categories(categories), description=clean_text(description))

  def is_empty(self) -> bool:
    """True when the item has no text at all."""
    return not (self.title or self.brand or self.categories or self.description)


def item_text(item: ItemText, item_id: str, max_description_chars: int = 256) -> str:
  """The text an item is embedded with: title, brand, categories, description (truncated).

  The source item id stands for the title when the item has none.
  """
  parts = [item.title or item_id]
  if item.brand:
    parts.append(f"Brand: {item.brand}")
  if item.categories:
    parts.append("Categories: " + ", ".join(item.categories))
  if item.description and max_description_chars > 0:
    description = item.description
    if len(description) > max_description_chars:
      description = description[:max_description_chars].rsplit(" ", 1)[0] + " ..."
    parts.append(description)
  text = parts[0]
  for part in parts[1:]:
    text += (" " if text.endswith((".", "!", "?")) else ". ") + part
  return text


class Sample(NamedTuple):
  """One (history -> next item) sample of a split the source ships."""

  user: str  # source user id
  history: tuple[str, ...]  # source item ids, oldest first
  target: str  # source item id


@dataclasses.dataclass(frozen=True)
class RawDataset:
  """What a source read, before preparation. Ids are strings, as in the source data."""

  items: dict[str, ItemText]  # source item id -> text (ItemText() where the source has none)
  sequences: dict[str, tuple[str, ...]]  # source user id -> item ids in time order
  timestamps: dict[str, tuple[float, ...]]  # source user id -> time of each item; {} without times
  split: dict[str, tuple[Sample, ...]] | None  # the source's own SPLITS; None: leave-one-out
  drops: dict[str, int]  # reason -> non-zero count of what reading dropped (interactions, users...)
  notes: tuple[str, ...] = ()  # facts about the source worth reporting (e.g. no item text)
