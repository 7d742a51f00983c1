"""Preparation: the leave-one-out split, the source's own split, files, reuse, statistics."""

import dataclasses
import hashlib
import json
import re

import numpy as np
import pytest

from lasar_jax.configs import common
from lasar_jax.data import prepare
from lasar_jax.data.sources.records import ItemText, RawDataset, Sample, item_text


def raw_dataset(sequences: dict, split=None, items="abcdexyz") -> RawDataset:
  """A RawDataset with one-letter items titled by their letter."""
  return RawDataset(items={i: ItemText(title=i.upper()) for i in items}, sequences=sequences,
                    timestamps={}, split=split, drops={"duplicate_interactions": 2})


def data_config(**overrides):
  """The default data config with some fields changed."""
  cfg = common.data_config()
  for key, value in overrides.items():
    setattr(cfg, key, value)
  return cfg


def test_leave_one_out_split_history_cap_and_drops():
  raw = raw_dataset({"10": ("x", "y", "z"), "2": tuple("abcde"), "1": ("a", "b")},
                    items="abcdexyzq")
  data, _ = prepare.build(raw, data_config(max_history=2), key="k")
  assert data.user_ids.tolist() == ["2", "10"]  # numeric ids in numeric order; "1" is too short
  assert data.item_ids.tolist() == list("abcdexyz")
  assert [s.tolist() for s in data.sequences] == [[0, 1, 2, 3, 4], [5, 6, 7]]
  np.testing.assert_array_equal(data.train.histories, [[0, -1], [0, 1]])
  np.testing.assert_array_equal(data.train.targets, [1, 2])
  np.testing.assert_array_equal(data.valid.histories, [[1, 2], [5, -1]])
  np.testing.assert_array_equal(data.valid.targets, [3, 6])
  np.testing.assert_array_equal(data.test.histories, [[2, 3], [5, 6]])
  np.testing.assert_array_equal(data.test.lengths, [2, 2])
  np.testing.assert_array_equal(data.test.users, [0, 1])
  assert data.test.history(1).tolist() == [5, 6]
  assert data.stats["drops"] == {"duplicate_interactions": 2, "users_below_min_interactions": 1,
                                 "interactions_of_short_users": 2,
                                 "catalog_items_without_interactions": 1}
  assert (data.stats["users"], data.stats["items"], data.stats["interactions"]) == (2, 8, 8)
  assert data.stats["sparsity"] == 0.5


def test_every_prefix_is_a_train_sample_with_full_history():
  data, _ = prepare.build(raw_dataset({"u": tuple("abcdexyz")}), data_config(), key="k")
  assert len(data.train) == 5  # targets b, c, d, e, x; y is valid, z is test
  assert [data.train.history(i).tolist() for i in range(5)] == [list(range(j)) for j in range(1, 6)]


def test_min_interactions_below_three_is_refused():
  with pytest.raises(ValueError, match="at least 3"):
    prepare.build(raw_dataset({"u": tuple("abc")}), data_config(min_interactions=2), key="k")


def test_source_split_is_kept_with_capped_histories():
  split = {"train": (Sample("u", ("a",), "b"),),
           "valid": (Sample("u", ("a", "b"), "c"),),
           "test": (Sample("u", ("a", "b", "c"), "d"), Sample("v", ("x",), "a"))}
  raw = raw_dataset({"u": tuple("abcd"), "v": ("x", "a")}, split=split)
  data, _ = prepare.build(raw, data_config(max_history=2), key="k")
  assert data.stats["split"] == "source" and data.num_items == 8  # the whole catalog
  np.testing.assert_array_equal(data.test.histories, [[1, 2], [5, -1]])
  np.testing.assert_array_equal(data.test.targets, [3, 0])
  np.testing.assert_array_equal(data.test.users, [0, 1])
  assert len(data.train) == 1 and len(data.valid) == 1


def test_item_text_truncates_and_falls_back_to_the_id():
  item = ItemText("Chef Knife", "Acme Co.", ("Kitchen", "Cutlery"), "Sharp steel blade " * 20)
  text = item_text(item, "K1", max_description_chars=30)
  assert text == ("Chef Knife. Brand: Acme Co. Categories: Kitchen, Cutlery. "
                  "Sharp steel blade Sharp steel ...")
  assert item_text(ItemText(), "B00X") == "B00X"


def write_recbole(folder):
  """A tiny RecBole folder with timestamps; returns its path."""
  folder.mkdir()
  (folder / "Toy.inter").write_text(
      "user_id:token\titem_id:token\ttimestamp:float\n"
      + "".join(f"u{u}\t{i}\t{t}\n" for u in range(3) for t, i in enumerate("abcd"[u:] + "a")))
  (folder / "Toy.item").write_text(
      "item_id:token\ttitle:token_seq\tbrand:token\n" + "".join(f"{i}\tThe {i}\tAcme\n"
                                                               for i in "abcd"))
  return folder


def folder_digest(folder) -> dict:
  """file name -> content hash of every file in `folder`."""
  return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_prepare_writes_loads_back_and_reuses(tmp_path, capsys, monkeypatch):
  source = write_recbole(tmp_path / "source")
  before = folder_digest(source)
  cfg = data_config(format="recbole", path=str(source))
  out = tmp_path / "prepared"
  data = prepare.prepare(cfg, 0, out)
  assert folder_digest(source) == before
  assert sorted(p.name for p in out.iterdir()) == ["items.jsonl", "sequences.jsonl", "splits.npz",
                                                   "stats.json"]
  printed = capsys.readouterr().out
  assert "prepared data in" in printed and re.search(r"\ninteractions +12\n", printed)
  items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
  assert items[0] == {"index": 0, "item": "a", "title": "The a", "brand": "Acme", "categories": [],
                      "description": "", "text": "The a. Brand: Acme"}
  first_user = json.loads((out / "sequences.jsonl").read_text().splitlines()[0])
  assert first_user == {"user": "u0", "items": [0, 1, 2, 3, 0], "train_length": 3,
                        "timestamps": [0, 1, 2, 3, 4]}
  loaded = prepare.load_prepared(out)
  for field in dataclasses.fields(prepare.PreparedData):
    mine, theirs = getattr(data, field.name), getattr(loaded, field.name)
    if isinstance(mine, prepare.Split):
      for array in dataclasses.fields(prepare.Split):
        np.testing.assert_array_equal(getattr(mine, array.name), getattr(theirs, array.name))
    elif isinstance(mine, np.ndarray):
      assert mine.tolist() == theirs.tolist()
    elif field.name == "sequences":
      assert [s.tolist() for s in mine] == [s.tolist() for s in theirs]
    else:
      assert mine == theirs, field.name

  def no_reading(*_):
    raise AssertionError("the source was read again")
  monkeypatch.setattr(prepare, "load_source", no_reading)
  again = prepare.prepare(cfg, 0, out)
  assert "reusing prepared data" in capsys.readouterr().out
  assert again.stats == data.stats
  monkeypatch.undo()
  changed = prepare.prepare(data_config(format="recbole", path=str(source), max_history=2), 0, out)
  assert changed.stats["fingerprint"] != data.stats["fingerprint"]
  assert changed.test.histories.shape == (3, 2)
  assert sorted(p.name for p in out.iterdir()) == ["items.jsonl", "sequences.jsonl", "splits.npz",
                                                   "stats.json"]


def test_load_prepared_of_an_incomplete_directory_is_an_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no complete prepared dataset"):
    prepare.load_prepared(tmp_path)


def test_unknown_format_is_refused():
  with pytest.raises(ValueError, match="'csv' is not one of"):
    prepare.load_source(data_config(format="csv"), 0)


def test_shared_amazon2014_office_counts(shared_data, tmp_path):
  cfg = data_config(format="lcrec", path=str(shared_data / "amazon2014_office"))
  data = prepare.prepare(cfg, 0, tmp_path)
  assert (data.stats["users"], data.stats["items"], data.stats["interactions"]) == (
      4905, 2420, 53258)
  assert data.stats["drops"] == {} and data.stats["min_sequence_length"] == 5
  assert len(data.valid) == len(data.test) == 4905
  assert len(data.train) == 53258 - 3 * 4905
  assert data.titles[0] == "HP 12C Financial Calculator"


def test_stage2_subset_is_seeded_ordered_and_shared_with_grpo():
  from lasar_jax.stages import latent_stage

  raw = raw_dataset({str(u): tuple("abcdexyz"[(u % 3):(u % 3) + 5]) for u in range(12)})
  data, _ = prepare.build(raw, data_config(), key="k")
  config = common.base_config()
  assert latent_stage.stage2_data(config, data) is data  # 0 = every sample
  config.reasoning.stage2_samples = 10
  first = latent_stage.stage2_data(config, data).train
  again = latent_stage.stage2_data(config, data).train
  assert len(first) == 10 and len(data.train) > 10
  np.testing.assert_array_equal(first.targets, again.targets)  # same seed, same subset
  # the subset is a set of whole samples of the full split, in split order
  rows = {(int(u), tuple(data.train.history(i)), int(t))
          for i, (u, t) in enumerate(zip(data.train.users, data.train.targets))}
  kept = [(int(u), tuple(first.history(i)), int(t))
          for i, (u, t) in enumerate(zip(first.users, first.targets))]
  assert set(kept) <= rows and len(set(kept)) == 10
  assert [k[0] for k in kept] == sorted(k[0] for k in kept)
  config.seed = 1
  other = latent_stage.stage2_data(config, data).train
  assert not np.array_equal(other.targets, first.targets) or not np.array_equal(
      other.users, first.users)
