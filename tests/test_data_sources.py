"""Every source format on small files written here (plain and gzipped, good and bad), and the
shared real folders where present."""

import gzip
import hashlib
import json

import pytest

from lasar_jax.configs import common
from lasar_jax.data import prepare
from lasar_jax.data.errors import DataError
from lasar_jax.data.sources import amazon_raw, assemble, records


def write(path, text: str, gz: bool = False, encoding: str = "utf-8"):
  """Writes `text` to `path` (or `path`.gz, compressed) and returns the file's path."""
  if gz:
    path = path.with_name(path.name + ".gz")
    with gzip.open(path, "wt", encoding=encoding) as f:
      f.write(text)
  else:
    path.write_text(text, encoding=encoding)
  return path


def config(fmt: str, path, name: str = "", **overrides):
  """A data config reading `path` in format `fmt`."""
  cfg = common.data_config()
  cfg.format, cfg.path, cfg.name = fmt, str(path), name
  for key, value in overrides.items():
    setattr(cfg, key, value)
  return cfg


def read(fmt: str, path, name: str = "", **overrides):
  """The RawDataset a format reads from `path`."""
  return prepare.load_source(config(fmt, path, name, **overrides), seed=0)


def folder_digest(folder) -> dict:
  """name -> content hash of every file under `folder`."""
  return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- lcrec

def write_lcrec(folder, gz: bool, inter: dict, items: dict):
  """An LC-Rec folder with NAME 'Toy'."""
  folder.mkdir(exist_ok=True)
  write(folder / "Toy.inter.json", json.dumps(inter, indent=1), gz)
  write(folder / "Toy.item.json", json.dumps(items, indent=1), gz)


@pytest.mark.parametrize("gz", [False, True])
def test_lcrec_reads_items_and_sequences_and_drops_items_without_text(tmp_path, gz):
  items = {"0": {"title": "Red &amp; Blue Pen", "brand": "Acme", "description": "A <b>pen</b>.",
                 "categories": "Office, Pens"},
           "1": {"title": "Notebook", "brand": "", "description": ""},
           "2": {"title": "Stapler", "brand": "Acme", "description": ""}}
  write_lcrec(tmp_path, gz, {"0": [0, 1, 2, 1], "1": [2, 9, 0, 1]}, items)
  before = folder_digest(tmp_path)
  raw = read("lcrec", tmp_path)
  assert raw.sequences == {"0": ("0", "1", "2", "1"), "1": ("2", "0", "1")}
  assert raw.items["0"] == records.ItemText("Red & Blue Pen", "Acme", ("Office", "Pens"), "A pen.")
  assert raw.drops == {"interactions_without_item_text": 1, "items_without_item_text": 1}
  assert raw.split is None and raw.timestamps == {}
  assert folder_digest(tmp_path) == before


def test_lcrec_keeps_items_without_text_when_asked(tmp_path):
  write_lcrec(tmp_path, False, {"7": [0, 9, 0]}, {"0": {"title": "Pen"}})
  raw = read("lcrec", tmp_path, missing_text="keep")
  assert raw.sequences == {"7": ("0", "9", "0")}
  assert raw.items["9"].is_empty() and raw.drops == {"items_kept_without_text": 1}


def test_lcrec_malformed_json_names_file_and_line(tmp_path):
  write(tmp_path / "Toy.inter.json", '{\n "0": [1, 2],\n "1": [3 4]\n}')
  write(tmp_path / "Toy.item.json", "{}")
  with pytest.raises(DataError, match=r"Toy\.inter\.json:3: malformed JSON"):
    read("lcrec", tmp_path)


def test_lcrec_missing_item_file_is_named(tmp_path):
  write(tmp_path / "Toy.inter.json", '{"0": [1, 2, 3]}', gz=True)
  with pytest.raises(DataError, match=r"missing file: none of Toy\.item\.json\[\.gz\]"):
    read("lcrec", tmp_path)


def test_missing_source_folder_is_named(tmp_path):
  with pytest.raises(DataError, match="nowhere: source folder does not exist"):
    read("lcrec", tmp_path / "nowhere")


# ---------------------------------------------------------------- recbole

RECBOLE_INTER = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                 "u1\ta\t5\t30\n"
                 "u1\tb\t4\t10\n"
                 "u1\tc\t3\t20\n"
                 "u1\td\t3\t20\n"  # same second as c: file order is kept (c before d)
                 "u1\tb\t4\t10\n"  # exact duplicate: dropped and counted
                 "u2\ta\t1\t5\n"
                 "u2\tz\t1\t6\n")
RECBOLE_ITEM = ("item_id:token\tmovie_title:token_seq\tclass:token_seq\n"
                "a\tAlpha\tDrama Sci-Fi\nb\tBeta\tComedy\nc\tGamma\t\nd\tDelta\tDrama\n")


@pytest.mark.parametrize("gz", [False, True])
def test_recbole_time_order_ties_duplicates_and_text(tmp_path, gz):
  write(tmp_path / "Toy.inter", RECBOLE_INTER, gz)
  write(tmp_path / "Toy.item", RECBOLE_ITEM, gz)
  raw = read("recbole", tmp_path)
  assert raw.sequences == {"u1": ("b", "c", "d", "a"), "u2": ("a",)}
  assert raw.timestamps["u1"] == (10.0, 20.0, 20.0, 30.0)
  assert raw.items["a"] == records.ItemText(title="Alpha", categories=("Drama", "Sci-Fi"))
  assert raw.drops == {"duplicate_interactions": 1, "interactions_without_item_text": 1,
                       "items_without_item_text": 1}


def test_recbole_without_item_file_keeps_items_with_empty_text(tmp_path):
  write(tmp_path / "Toy.inter", RECBOLE_INTER)
  raw = read("recbole", tmp_path)
  assert raw.items["z"].is_empty() and assemble.NO_TEXT_NOTE in raw.notes
  assert "items_kept_without_text" not in raw.drops


def test_recbole_bad_field_count_names_file_and_line(tmp_path):
  write(tmp_path / "Toy.inter", RECBOLE_INTER + "u3\tb\n", gz=True)
  with pytest.raises(DataError, match=r"Toy\.inter\.gz:9: expected 4 tab-separated fields"):
    read("recbole", tmp_path)


def test_recbole_bad_timestamp_names_file_and_line(tmp_path):
  write(tmp_path / "Toy.inter", RECBOLE_INTER.replace("\t30\n", "\tlate\n"))
  with pytest.raises(DataError, match=r"Toy\.inter:2: timestamp 'late' is not a number"):
    read("recbole", tmp_path)


def test_recbole_explicit_interaction_split_is_kept(tmp_path):
  header = "user_id:token\titem_id:token\ttimestamp:float\n"
  write(tmp_path / "Toy.train.inter", header + "u1\ta\t1\nu1\tb\t2\nu2\tb\t1\nu2\tc\t2\n")
  write(tmp_path / "Toy.valid.inter", header + "u1\tc\t3\n")
  write(tmp_path / "Toy.test.inter", header + "u1\td\t4\nu2\ta\t3\n", gz=True)
  raw = read("recbole", tmp_path)
  assert raw.split["train"] == (("u1", ("a",), "b"), ("u2", ("b",), "c"))
  assert raw.split["valid"] == (("u1", ("a", "b"), "c"),)
  assert raw.split["test"] == (("u1", ("a", "b", "c"), "d"), ("u2", ("b", "c"), "a"))
  assert raw.sequences == {"u1": ("a", "b", "c", "d"), "u2": ("b", "c", "a")}


def test_recbole_explicit_sample_split_is_kept(tmp_path):
  header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
  write(tmp_path / "Toy.train.inter", header + "u1\ta\tb\n")
  write(tmp_path / "Toy.valid.inter", header + "u1\ta b\tc\n")
  write(tmp_path / "Toy.test.inter", header + "u1\ta b c\td\n")
  write(tmp_path / "Toy.item", "item_id:token\ttitle:token_seq\na\tAlpha\n")
  raw = read("recbole", tmp_path)
  assert raw.split["test"] == (("u1", ("a", "b", "c"), "d"),)
  assert raw.sequences == {"u1": ("a", "b", "c", "d")}
  assert raw.drops == {"items_kept_without_text": 3} and raw.items["a"].title == "Alpha"


def test_recbole_mixed_split_layouts_are_an_error(tmp_path):
  write(tmp_path / "Toy.train.inter", "user_id:token\titem_id:token\nu1\ta\nu1\tb\n")
  write(tmp_path / "Toy.valid.inter", "user_id:token\titem_id_list:token_seq\titem_id:token\n"
        "u1\ta b\tc\n")
  write(tmp_path / "Toy.test.inter", "user_id:token\titem_id:token\nu1\td\n")
  with pytest.raises(DataError, match="mix the interaction and the item_id_list layouts"):
    read("recbole", tmp_path)


# ---------------------------------------------------------------- p5

@pytest.mark.parametrize("gz", [False, True])
def test_p5_sequences_with_and_without_item_text(tmp_path, gz):
  write(tmp_path / "user_sequence.txt", "A1 i1 i2 i3\nA2 i3 i1\n\nA3 i2 i2 i1 i3\n", gz)
  raw = read("p5", tmp_path)
  assert raw.sequences == {"A1": ("i1", "i2", "i3"), "A2": ("i3", "i1"),
                           "A3": ("i2", "i2", "i1", "i3")}
  assert all(item.is_empty() for item in raw.items.values()) and len(raw.items) == 3
  assert raw.notes == (assemble.NO_TEXT_NOTE,)
  write(tmp_path / "item_plain_text.txt",
        "i1 title: shea butter; brand: acme; categories: beauty, skin care; description: soft; "
        "price: 3.5\ni2 title: comb; brand: na\ni3 title: soap\n", gz)
  raw = read("p5", tmp_path)
  assert raw.items["i1"] == records.ItemText("shea butter", "acme", ("beauty", "skin care"), "soft")
  assert raw.notes == () and raw.drops == {}


def test_p5_repeated_user_is_an_error_naming_both_lines(tmp_path):
  write(tmp_path / "user_sequence.txt", "A1 i1 i2 i3\nA2 i3 i1 i2\nA1 i4 i5 i6\n")
  with pytest.raises(DataError, match=r"user_sequence\.txt:3: user 'A1' already has a line \(1\)"):
    read("p5", tmp_path)


def test_p5_malformed_item_text_line(tmp_path):
  write(tmp_path / "user_sequence.txt", "A1 i1 i2 i3\n")
  write(tmp_path / "item_plain_text.txt", "i1 title: pen\ni2 just some words\n")
  with pytest.raises(DataError, match=r"item_plain_text\.txt:2: expected 'ITEM title"):
    read("p5", tmp_path)


# ---------------------------------------------------------------- movielens

GENRES = "unknown|0\nComedy|1\nDrama|2\n\n"


@pytest.mark.parametrize("gz", [False, True])
def test_movielens_100k(tmp_path, gz):
  write(tmp_path / "u.genre", GENRES, gz)
  write(tmp_path / "u.item", "1|Amélie (2001)|01-Jan-2001||http://x|0|1|1\n"
        "2|Heat (1995)|01-Jan-1995||http://y|0|0|1\n", gz, encoding="latin-1")
  write(tmp_path / "u.data", "7\t2\t5\t300\n7\t1\t3\t100\n8\t1\t4\t100\n7\t3\t1\t200\n", gz)
  raw = read("movielens", tmp_path)
  assert raw.items["1"] == records.ItemText(title="Amélie (2001)", categories=("Comedy", "Drama"))
  assert raw.sequences == {"7": ("1", "2"), "8": ("1",)}
  assert raw.timestamps["7"] == (100.0, 300.0)
  assert raw.drops == {"interactions_without_item_text": 1, "items_without_item_text": 1}


def test_movielens_points_recbole_folders_to_the_recbole_format(tmp_path):
  write(tmp_path / "ml-100k.inter", RECBOLE_INTER, gz=True)
  with pytest.raises(DataError, match="read it with format 'recbole'"):
    read("movielens", tmp_path)


def test_movielens_1m(tmp_path):
  write(tmp_path / "movies.dat", "1::Toy Story (1995)::Animation|Comedy\n2::Heat (1995)::Action\n",
        encoding="latin-1")
  write(tmp_path / "ratings.dat", "1::2::5::978300760\n1::1::3::978300000\n", gz=True)
  raw = read("movielens", tmp_path)
  assert raw.sequences == {"1": ("1", "2")}
  assert raw.items["1"].categories == ("Animation", "Comedy")


def test_movielens_bad_line_and_missing_files(tmp_path):
  with pytest.raises(DataError, match=r"none of ratings\.dat\[\.gz\], u\.data\[\.gz\]"):
    read("movielens", tmp_path)
  write(tmp_path / "u.genre", GENRES)
  write(tmp_path / "u.item", "1|A (2001)|d||u|0|1|0\n")
  write(tmp_path / "u.data", "7\t1\t5\t300\n7\t1\t5\n")
  with pytest.raises(DataError, match=r"u\.data:2: expected 4 '\\t'-separated fields, found 3"):
    read("movielens", tmp_path)


# ---------------------------------------------------------------- amazon_raw

def review(user: str, item: str, time: int) -> str:
  """One 2014/2018 review line."""
  return json.dumps({"reviewerID": user, "asin": item, "unixReviewTime": time, "overall": 5.0})


def test_amazon_raw_2014_layout_with_kcore_until_stable(tmp_path):
  # k = 2. Item x has one review: it goes, which leaves u3 with one item, so u3 goes, which
  # leaves item c with one review, so c goes too. u1 and u2 remain.
  lines = [review("u1", "a", 3), review("u1", "b", 1), review("u1", "a", 3),  # duplicate
           review("u2", "a", 5), review("u2", "b", 6), review("u3", "c", 1), review("u3", "x", 2),
           review("u1", "c", 2), review("u4", "nometa", 1), review("u4", "a", 2)]
  write(tmp_path / "reviews_Toys_5.json", "\n".join(lines) + "\n", gz=True)
  meta = [str({"asin": asin, "title": f"Item {asin}", "brand": "Acme",
               "categories": [["Toys", "Blocks"], ["Toys", "Cars"]], "description": "Fun."})
          for asin in "abcx"]
  write(tmp_path / "meta_Toys.json", "\n".join(meta) + "\n", gz=True)
  raw = read("amazon_raw", tmp_path, kcore=2)
  assert raw.sequences == {"u1": ("b", "a"), "u2": ("a", "b")}
  assert raw.timestamps == {"u1": (1.0, 3.0), "u2": (5.0, 6.0)}
  assert raw.items["a"] == records.ItemText("Item a", "Acme", ("Toys", "Blocks", "Cars"), "Fun.")
  assert raw.drops == {"duplicate_interactions": 1, "interactions_without_item_text": 1,
                       "items_without_item_text": 1, "kcore_users": 2, "kcore_interactions": 4}


def test_amazon_raw_2018_layout(tmp_path):
  lines = [review(u, i, t) for u, i, t in [("u1", "a", 1), ("u1", "b", 2), ("u1", "a", 3)]]
  write(tmp_path / "Toys.json", "\n".join(lines) + "\n")
  meta = [json.dumps({"asin": "a", "title": "A", "brand": "B", "category": ["Toys", "Cars"],
                      "description": ["Line one.", "Line two."]}),
          json.dumps({"asin": "b", "title": "Bee", "category": []})]
  write(tmp_path / "meta_Toys.json", "\n".join(meta) + "\n")
  raw = read("amazon_raw", tmp_path, kcore=0)
  assert raw.sequences == {"u1": ("a", "b", "a")}
  assert raw.items["a"] == records.ItemText("A", "B", ("Toys", "Cars"), "Line one. Line two.")


def test_amazon_raw_malformed_lines(tmp_path):
  write(tmp_path / "meta_Toys.json", json.dumps({"asin": "a", "title": "A"}) + "\n")
  write(tmp_path / "Toys_5.json", review("u1", "a", 1) + "\n{not json\n")
  with pytest.raises(DataError, match=r"Toys_5\.json:2: neither JSON nor a Python literal"):
    read("amazon_raw", tmp_path)
  write(tmp_path / "Toys_5.json", review("u1", "a", 1) + '\n{"asin": "a"}\n')
  with pytest.raises(DataError, match=r"Toys_5\.json:2: review without \['reviewerID'"):
    read("amazon_raw", tmp_path)


def test_kcore_of_an_empty_core_drops_everything():
  raw = records.RawDataset(items={}, sequences={"u": ("a", "b")}, timestamps={}, split=None,
                           drops={})
  assert amazon_raw.kcore(raw, 3).sequences == {}


# ---------------------------------------------------------------- minionerec

MINI_HEADER = "user_id,history_item_title,item_title,history_item_id,item_id\n"


def test_minionerec_rebuilds_train_from_held_out_histories(tmp_path):
  (tmp_path / "index").mkdir()
  for split in ("valid", "test"):
    (tmp_path / split).mkdir()
  items = {str(i): {"title": f"T{i}", "brand": "B", "categories": "",
                    "description": f"['Desc {i}.', 'More.']"} for i in range(6)}
  write(tmp_path / "index" / "Office.item.json", json.dumps(items), gz=True)
  write(tmp_path / "valid" / "Office_5_2016.csv", MINI_HEADER + '7,"[]",x,"[0, 1, 2]",3\n', gz=True)
  write(tmp_path / "test" / "Office_5_2016.csv",
        MINI_HEADER + '7,"[]",x,"[0, 1, 2, 3]",4\n9,"[]",x,"[2, 3]",1\n')
  raw = read("minionerec", tmp_path)
  assert raw.split["train"] == (("7", ("0",), "1"), ("7", ("0", "1"), "2"), ("9", ("2",), "3"))
  assert raw.split["valid"] == (("7", ("0", "1", "2"), "3"),)
  assert raw.sequences == {"7": ("0", "1", "2", "3", "4"), "9": ("2", "3", "1")}
  assert raw.items["0"].description == "Desc 0. More."
  assert len(raw.notes) == 1 and "rebuilt" in raw.notes[0]
  write(tmp_path / "test" / "Office_5_2016.csv", MINI_HEADER + '7,"[]",x,"0, 1",4\n')
  with pytest.raises(DataError, match=r"Office_5_2016\.csv:2: history_item_id is not a list"):
    read("minionerec", tmp_path)


# ---------------------------------------------------------------- shared real data

def test_shared_movielens100k_counts(shared_data):
  data, _ = prepare.build(read("recbole", shared_data / "movielens100k"),
                          config("recbole", shared_data / "movielens100k"), key="")
  counts = (data.stats["users"], data.stats["items"], data.stats["interactions"])
  assert counts == (943, 1682, 100000)
  assert data.stats["min_sequence_length"] == 20 and data.titles[0] == "Toy Story"


def test_shared_p5_toys_counts(shared_data):
  cfg = config("p5", shared_data / "amazon2014_toys")
  data, _ = prepare.build(prepare.load_source(cfg, 0), cfg, key="")
  assert (data.stats["users"], data.stats["items"], data.stats["interactions"]) == (
      19412, 11924, 167597)
  assert data.stats["items_without_text"] == 11924 and data.titles[0] == data.item_ids[0]


def test_shared_minionerec_office_keeps_its_split(shared_data):
  cfg = config("minionerec", shared_data / "minionerec_amazon2018", "Office_Products")
  data, _ = prepare.build(prepare.load_source(cfg, 0), cfg, key="")
  # 4,866 valid and 4,866 test samples, scored per user: each user's first sample of the split
  assert (len(data.valid), len(data.test), data.num_items) == (1795, 2024, 3459)
  assert (data.stats["valid_samples_beyond_first_per_user"],
          data.stats["test_samples_beyond_first_per_user"]) == (4866 - 1795, 4866 - 2024)
  assert len(set(data.user_ids[data.test.users].tolist())) == 2024
