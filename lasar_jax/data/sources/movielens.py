"""The original MovieLens files: ml-100k (`u.data`, `u.item`, `u.genre`) or ml-1m (`ratings.dat`,
`movies.dat`). Every rating is an interaction; time order is by timestamp."""

from lasar_jax.data.errors import DataError
from lasar_jax.data.sources import assemble, files
from lasar_jax.data.sources.records import ItemText, RawDataset

ENCODING = "latin-1"  # both releases are latin-1 text


def read_ratings(path, separator: str) -> list[tuple[str, str, float]]:
  """(user, movie, timestamp) rows of `u.data` (tabs) or `ratings.dat` ('::')."""
  rows = []
  for number, line in files.read_lines(path, ENCODING):
    user, movie, _, timestamp = files.split_fields(path, number, line.strip(), separator, 4)[:4]
    rows.append((user, movie, files.parse_number(path, number, timestamp, "timestamp")))
  return rows


def read_genres(path) -> list[str]:
  """Genre names of `u.genre` (`name|index` lines), in index order."""
  genres = {}
  for number, line in files.read_lines(path, ENCODING):
    name, index = files.split_fields(path, number, line, "|", 2)[:2]
    genres[int(files.parse_number(path, number, index, "genre index"))] = name
  return [genres[i] for i in sorted(genres)]


def read_100k_movies(path, genres: list[str]) -> dict[str, ItemText]:
  """`u.item`: `id|title|release date|video date|url|` then one 0/1 flag per genre."""
  catalog = {}
  for number, line in files.read_lines(path, ENCODING):
    fields = files.split_fields(path, number, line, "|", 5 + len(genres))
    flags = fields[5:5 + len(genres)]
    if any(flag not in ("0", "1") for flag in flags):
      raise DataError(path, "genre flags must be 0 or 1", number)
    names = [genre for genre, flag in zip(genres, flags) if flag == "1"]
    catalog[fields[0]] = ItemText.from_fields(title=fields[1], categories=names)
  return catalog


def read_1m_movies(path) -> dict[str, ItemText]:
  """`movies.dat`: `id::title::Genre1|Genre2`."""
  catalog = {}
  for number, line in files.read_lines(path, ENCODING):
    movie, title, genres = files.split_fields(path, number, line, "::", 3)[:3]
    catalog[movie] = ItemText.from_fields(title=title, categories=genres.split("|"))
  return catalog


def read(cfg) -> RawDataset:
  """Reads ml-100k or ml-1m from `cfg.path`, whichever files the folder holds."""
  folder = files.source_folder(cfg.path)
  if any(p.name.removesuffix(".gz").endswith(".inter") for p in folder.iterdir()):
    raise DataError(folder, "holds RecBole atomic files (*.inter): read it with format 'recbole'")
  if files.find_file(folder, "u.data") is not None:
    genres = read_genres(files.require_file(folder, "u.genre"))
    catalog = read_100k_movies(files.require_file(folder, "u.item"), genres)
    rows = read_ratings(files.require_file(folder, "u.data"), "\t")
  else:
    rows = read_ratings(files.require_file(folder, "ratings.dat", "u.data"), "::")
    catalog = read_1m_movies(files.require_file(folder, "movies.dat"))
  return assemble.build(assemble.group_events(rows), catalog, cfg.missing_text)
