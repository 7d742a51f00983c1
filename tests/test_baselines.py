"""Counting baselines against brute force, the baseline runner's files against the independent
scorer, the bootstrap interval, and training interactions that never include held-out targets."""

import collections
import json

import numpy as np
import pytest

from lasar_jax.baselines import runner, transition
from lasar_jax.configs import chain
from lasar_jax.data import prepare
from lasar_jax.data.sources.records import ItemText, RawDataset, Sample
from lasar_jax.eval import bootstrap, popularity, scorer
from lasar_jax.stages import common


def random_sequences(rng, users=30, items=12):
  """Leave-one-out-sized random sequences (at least 3 items each)."""
  return [rng.integers(0, items, size=rng.integers(3, 9)).astype(np.int32) for _ in range(users)]


def test_transition_rank_equals_brute_force():
  rng = np.random.default_rng(0)
  num_items, last_items, decay = 12, 3, 0.5
  sequences = random_sequences(rng, items=num_items)
  training = [seq[:-2] for seq in sequences]
  follows = collections.Counter((int(a), int(b)) for seq in training for a, b in zip(seq, seq[1:]))
  item_counts = collections.Counter(int(i) for seq in training for i in seq)
  counts = popularity.count_items(training, num_items)
  matrix = transition.transition_counts(training, num_items)
  histories = np.full((len(sequences), 8), -1, np.int32)
  lengths = np.array([len(seq) - 1 for seq in sequences], np.int32)  # everything before the test
  for row, seq in enumerate(sequences):
    histories[row, :lengths[row]] = seq[:-1]
  ranked = transition.rank(matrix, counts, histories, lengths, num_items, last_items, decay)
  for row, seq in enumerate(sequences):
    recent = list(seq[:-1])[::-1][:last_items]
    score = {j: sum(decay ** m * follows[(int(a), j)] for m, a in enumerate(recent))
             for j in range(num_items)}
    expected = sorted(range(num_items), key=lambda j: (-score[j], -item_counts[j], j))
    assert ranked[row].tolist() == expected


def test_transition_counts_only_training_pairs():
  matrix = transition.transition_counts([np.array([0, 1, 0, 1]), np.array([2])], 3).toarray()
  np.testing.assert_array_equal(matrix, [[0, 2, 0], [1, 0, 0], [0, 0, 0]])


def test_training_sequences_leave_out_the_held_out_targets():
  raw = RawDataset(items={i: ItemText(title=i) for i in "abcdef"},
                           sequences={"u": tuple("abcd"), "v": tuple("efab")}, timestamps={},
                           split=None, drops={})
  cfg = chain.get_config().data
  data, _ = prepare.build(raw, cfg, key="k")
  assert [s.tolist() for s in data.training_sequences()] == [[0, 1], [4, 5]]
  counts = popularity.count_items(data.training_sequences(), data.num_items)
  brute = collections.Counter(i for seq in ("ab", "ef") for i in seq)
  assert counts.tolist() == [brute[i] for i in "abcdef"]  # c, d (held out) count 0


def test_source_split_is_scored_once_per_user():
  split = {"train": (Sample("u", ("a",), "b"), Sample("v", ("x",), "a")),
           "valid": (Sample("u", ("a", "b"), "c"),),
           "test": (Sample("u", ("a", "b", "c"), "d"), Sample("u", ("a", "b", "c", "d"), "e"),
                    Sample("v", ("x", "a"), "b"))}
  raw = RawDataset(items={i: ItemText(title=i) for i in "abcdex"},
                           sequences={"u": tuple("abcde"), "v": tuple("xab")}, timestamps={},
                           split=split, drops={})
  data, rows = prepare.build(raw, chain.get_config().data, key="k")
  assert data.test.users.tolist() == [0, 1] and len(data.valid) == 1
  assert data.test.targets.tolist() == [3, 1]  # u's first test sample (d), v's (b)
  assert data.stats["test_samples_beyond_first_per_user"] == 1
  # u: a b + held-out c (valid), d, e (test); v: x a + held-out b (test)
  assert [s.tolist() for s in data.training_sequences()] == [[0, 1], [5, 0]]
  assert [row["train_length"] for row in rows] == [2, 2]


@pytest.fixture(scope="module")
def tiny_workdir(tmp_path_factory):
  """A tiny synthetic chain workdir with its data prepared, and its config."""
  config = chain.get_config("tiny")
  config.eval.splits = ("valid", "test")
  config.eval.max_users = 0
  config.baselines.list_length = 16
  config.baselines.sasrec.update(max_epochs=2, batch_size=32, hidden=8, inner=16, max_len=8)
  workdir = tmp_path_factory.mktemp("baselines")
  common.prepared_data(config, workdir)
  return config, workdir


@pytest.mark.parametrize("name", runner.NAMES)
def test_baseline_files_agree_with_the_independent_scorer(tiny_workdir, name):
  config, workdir = tiny_workdir
  summary = runner.run(config, workdir, name)
  data = common.prepared_data(config, workdir)
  out_dir = runner.baseline_dir(workdir, name)
  for split_name in ("valid", "test"):
    split = data.split(split_name)
    metrics = json.loads((out_dir / f"{split_name}_metrics.json").read_text())
    targets = {str(data.user_ids[u]): str(data.item_ids[t])
               for u, t in zip(split.users, split.targets)}
    rows = [json.loads(line) for line in
            (out_dir / f"{split_name}_predictions.jsonl").read_text().splitlines()]
    assert len(rows) == len(targets) == metrics["users"]
    assert all(len(row["items"]) == 16 for row in rows)
    scored = scorer.score_predictions_file(out_dir / f"{split_name}_predictions.jsonl", targets,
                                           config.eval.ks)
    for key, value in scored.items():
      assert metrics[key] == pytest.approx(value, abs=1e-12)
  assert summary["fingerprint"] == runner.run(config, workdir, name)["fingerprint"]  # reused


def test_most_popular_lists_the_training_counts_order(tiny_workdir):
  config, workdir = tiny_workdir
  runner.run(config, workdir, "most_popular")
  data = common.prepared_data(config, workdir)
  brute = collections.Counter(int(i) for seq in data.sequences for i in seq[:-2])
  expected = sorted(range(data.num_items), key=lambda i: (-brute[i], i))[:16]
  first = json.loads((runner.baseline_dir(workdir, "most_popular") / "test_predictions.jsonl")
                     .read_text().splitlines()[0])
  assert first["items"] == [str(data.item_ids[i]) for i in expected]


def test_bootstrap_of_a_model_against_itself_is_zero():
  ndcg_su = np.random.default_rng(1).random((3, 50))
  diff = bootstrap.paired_differences(ndcg_su, ndcg_su)
  assert bootstrap.bootstrap_interval(diff, 1000, seed=0) == (0.0, 0.0, 0.0)


def test_bootstrap_interval_against_a_brute_force_resampling():
  diff = np.random.default_rng(2).normal(0.01, 0.1, size=40)
  mean, low, high = bootstrap.bootstrap_interval(diff, 500, seed=3)
  picks = np.random.default_rng(3).integers(0, 40, size=(500, 40))
  means = np.array([np.mean([diff[i] for i in row]) for row in picks])
  assert mean == pytest.approx(diff.mean())
  assert (low, high) == pytest.approx((np.percentile(means, 2.5), np.percentile(means, 97.5)))
  assert low < mean < high
  paired = bootstrap.paired_differences([[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]])
  np.testing.assert_allclose(paired, [0.5, -0.5])  # averaged over the seeds, user by user
