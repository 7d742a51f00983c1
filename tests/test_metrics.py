"""Ranking metrics vs a brute-force loop; the independent scorer vs the metrics; popularity."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from lasar_jax.data.errors import DataError
from lasar_jax.eval import metrics, popularity, scorer


def _brute_force(ranked, targets, ks):
  out = {}
  for k in ks:
    recall = ndcg = 0.0
    for row, target in zip(ranked.tolist(), targets.tolist()):
      for pos, item in enumerate(row[:k]):
        if item == target:
          recall += 1.0
          ndcg += 1.0 / math.log2(pos + 2)
          break
    out[f"recall@{k}"] = recall / len(targets)
    out[f"ndcg@{k}"] = ndcg / len(targets)
  return out


def _random_lists(seed, n=200, r=25, num_items=40, holes=True):
  """Random ranked lists with -1 padding, holes (-1 inside a list), target repeats, hits, misses."""
  rng = np.random.RandomState(seed)
  ranked = np.stack([rng.permutation(num_items)[:r] for _ in range(n)])
  lengths = rng.randint(0, r + 1, n)
  targets = rng.randint(0, num_items, n)
  dup = np.flatnonzero((rng.rand(n) < 0.2) & (lengths > 0))
  ranked[dup, lengths[dup] - 1] = targets[dup]  # a later repeat must not count over a hit
  ranked[np.arange(r)[None, :] >= lengths[:, None]] = -1
  if holes:
    ranked[rng.rand(n, r) < 0.05] = -1
  return ranked, targets


def test_ranking_metrics_match_brute_force():
  ranked, targets = _random_lists(0)
  ks = (1, 5, 10, 20, 30)
  got = metrics.ranking_metrics(ranked, targets, ks)
  want = _brute_force(ranked, targets, ks)
  assert list(got) == [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")]
  for key, value in want.items():
    np.testing.assert_allclose(got[key], value, rtol=1e-12, err_msg=key)
  assert 0 < got["recall@1"] < got["recall@10"] < got["recall@20"] < 1
  assert metrics.recall_at_k(ranked, targets, 10) == got["recall@10"]
  assert metrics.ndcg_at_k(ranked, targets, 5) == got["ndcg@5"]


def test_ranking_metrics_by_hand():
  ranked = np.array([[3, 1, 2], [2, 3, -1], [-1, -1, -1], [1, 2, 3]])
  targets = np.array([1, 1, 1, 1])  # ranks 1, miss, miss, 0
  got = metrics.ranking_metrics(ranked, targets, ks=(1, 2))
  assert got == pytest.approx({"recall@1": 0.25, "ndcg@1": 0.25, "recall@2": 0.5,
                               "ndcg@2": (1.0 + 1.0 / math.log2(3)) / 4})
  with pytest.raises(ValueError, match="k must be >= 1"):
    metrics.recall_at_k(ranked, targets, 0)
  with pytest.raises(ValueError, match="-1 is the padding"):
    metrics.ranking_metrics(ranked, np.array([1, 1, 1, -1]))
  with pytest.raises(ValueError, match="no users"):
    metrics.ranking_metrics(np.zeros((0, 3), int), np.zeros(0, int))


def _write_predictions(path, ranked, user_ids, item_ids):
  with open(path, "w") as f:
    for u, row in zip(user_ids, ranked):
      f.write(json.dumps({"user": u, "items": [item_ids[i] for i in row if i >= 0]}) + "\n")


def test_scorer_equals_ranking_metrics(tmp_path):
  ranked, targets = _random_lists(1, n=150, holes=False)  # exported lists are only right-padded
  user_ids = [f"u{u:03d}" for u in range(len(targets))]
  item_ids = [f"B{i:05d}" for i in range(40)]
  path = tmp_path / "predictions.jsonl"
  _write_predictions(path, ranked, user_ids, item_ids)
  target_map = {u: item_ids[t] for u, t in zip(user_ids, targets)}
  got = scorer.score_predictions_file(path, target_map, ks=(1, 5, 10, 20))
  want = metrics.ranking_metrics(ranked, targets, ks=(1, 5, 10, 20))
  assert list(got) == list(want)
  for key in want:
    np.testing.assert_allclose(got[key], want[key], rtol=1e-12, err_msg=key)


def test_scorer_cli_with_json_and_jsonl_targets(tmp_path):
  ranked = np.array([[0, 1, 2], [2, 0, 1], [1, 2, -1]])
  targets = np.array([0, 0, 0])
  _write_predictions(tmp_path / "p.jsonl", ranked, [7, 8, 9], ["a", "b", "c"])  # integer users
  (tmp_path / "t.json").write_text(json.dumps({"7": "a", "8": "a", "9": "a"}))
  (tmp_path / "t.jsonl").write_text("".join(
      json.dumps({"user": u, "item": "a"}) + "\n" for u in (7, 8, 9)))
  want = metrics.ranking_metrics(ranked, targets, ks=(1, 2))
  for name in ("t.json", "t.jsonl"):
    assert scorer.load_targets(tmp_path / name) == {"7": "a", "8": "a", "9": "a"}
    out = subprocess.run([sys.executable, "-m", "lasar_jax.eval.scorer",
                          f"--predictions={tmp_path / 'p.jsonl'}", f"--targets={tmp_path / name}",
                          "--ks=1,2"], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == pytest.approx({"users": 3, **want})


@pytest.mark.parametrize("lines, match", [
    (['{"user": "a", "items": ["x"]}', '{"user": "b", "items": ["x"'], r":2: not valid JSON"),
    (['{"user": "a", "items": ["x"]}', '["b"]'], r":2: expected a JSON object"),
    (['{"user": "a", "item": ["x"]}'], r':1: expected keys "user" and "items"'),
    (['{"user": "a", "items": "x"}'], r':1: "items" must be a list'),
    (['{"user": "a", "items": [["x"]]}'], r":1: item must be a string or an integer"),
    (['{"user": "a", "items": []}', '', '{"user": "a", "items": []}'],
     r":3: user 'a' appears again \(first on line 1\)"),
    (['{"user": "a", "items": []}', '{"user": "z", "items": []}'], r":2: user 'z' has no target"),
    (['{"user": "b", "items": []}'],
     r"predictions.jsonl: 1 target users have no line, e.g. \['a'\]"),
])
def test_scorer_errors_name_file_and_line(tmp_path, lines, match):
  path = tmp_path / "predictions.jsonl"
  path.write_text("\n".join(lines) + "\n")
  with pytest.raises(DataError, match=match) as info:
    scorer.score_predictions_file(path, {"a": "x", "b": "y"})
  assert str(info.value).startswith(str(path))


def test_load_targets_errors(tmp_path):
  (tmp_path / "t.json").write_text('{"a": "x", "a": "y"}')
  with pytest.raises(DataError, match=r"t.json: user 'a' is given twice"):
    scorer.load_targets(tmp_path / "t.json")
  (tmp_path / "t.jsonl").write_text('{"user": "a", "item": "x"}\n{"user": "a", "item": "y"}\n')
  with pytest.raises(DataError, match=r"t.jsonl:2: user 'a' appears again \(first on line 1\)"):
    scorer.load_targets(tmp_path / "t.jsonl")


def test_popularity_ranking_and_predictions():
  counts = popularity.count_items([[2, 3, 3], [3, 1, -1], [2]], num_items=6)
  np.testing.assert_array_equal(counts, [0, 1, 2, 3, 0, 0])
  np.testing.assert_array_equal(popularity.popularity_ranking(counts, 6, 4), [3, 2, 1, 0])
  # Ties by lower index; counts shorter than the catalog; -1 beyond the catalog.
  np.testing.assert_array_equal(popularity.popularity_ranking(np.array([1, 2, 1]), 5, 7),
                                [1, 0, 2, 3, 4, -1, -1])
  preds = popularity.most_popular_predictions(counts, 6, num_users=3, k=3)
  np.testing.assert_array_equal(preds, [[3, 2, 1]] * 3)
  excluded = popularity.most_popular_predictions(
      counts, 6, num_users=3, k=3, exclude=np.array([[3, -1], [2, 1], [-1, -1]]))
  np.testing.assert_array_equal(excluded, [[2, 1, 0], [3, 0, 4], [3, 2, 1]])
  tiny = popularity.most_popular_predictions(np.array([0, 5]), 2, num_users=1, k=3,
                                             exclude=np.array([[1]]))
  np.testing.assert_array_equal(tiny, [[0, -1, -1]])
