"""The comparison run end to end on the tiny chain: rows over seeds, the same users for every row,
the bootstrap interval of the reference against itself, reuse of finished work."""

import json

import numpy as np
import pytest

from lasar_jax import pipeline
from lasar_jax.configs import chain
from lasar_jax.stages import compare_stage


def compare_config():
  """Two seeds of two baselines and one mode on the tiny chain."""
  config = chain.get_config("tiny")
  config.stage = "compare"
  config.compare.update(seeds=2, models="most_popular,transition,none", reference="none",
                        beam_widths=(10, 12), bootstrap_resamples=200)
  config.baselines.list_length = 12
  return config


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
  """(config, workdir) of a finished tiny comparison."""
  config, workdir = compare_config(), tmp_path_factory.mktemp("compare")
  pipeline.run(config, str(workdir))
  return config, workdir


def test_results_table_rows_and_intervals(compared):
  config, workdir = compared
  results = json.loads((workdir / "results.json").read_text())
  assert [row["model"] for row in results["rows"]] == ["most_popular", "transition", "none"]
  assert results["users"] == config.eval.max_users and results["seeds"] == [0, 1]
  by_name = {row["model"]: row for row in results["rows"]}
  assert by_name["none"]["none_minus_ndcg@10"] == {"mean": 0.0, "low": 0.0, "high": 0.0}
  for name, row in by_name.items():
    per_seed = []
    for seed in (0, 1):
      directory = (workdir / f"seed_{seed}" / "baselines" / name if name != "none" else
                   workdir / f"seed_{seed}" / "eval_none")
      per_seed.append(json.loads((directory / "test_metrics.json").read_text())["ndcg@10"])
    assert row["test_beam10"]["ndcg@10"]["mean"] == pytest.approx(np.mean(per_seed))
    assert row["test_beam10"]["ndcg@10"]["std"] == pytest.approx(np.std(per_seed, ddof=1))
    interval = row["none_minus_ndcg@10"]
    # Paired over the same users: the mean difference is the difference of the means.
    assert interval["mean"] == pytest.approx(by_name["none"]["test_beam10"]["ndcg@10"]["mean"] -
                                             row["test_beam10"]["ndcg@10"]["mean"])
    assert interval["low"] <= interval["mean"] <= interval["high"]
    assert row["valid_ndcg@10"] is not None
  # The second width is scored on test only, into its own directory.
  assert (workdir / "seed_0" / "eval_none_beam12" / "test_metrics.json").is_file()
  assert not (workdir / "seed_0" / "eval_none_beam12" / "valid_metrics.json").exists()
  markdown = (workdir / "results.md").read_text()
  assert markdown.count("\n| ") == 1 + 3 and "none − row" in markdown


def test_every_seed_scores_the_same_users(compared):
  _, workdir = compared
  users = {}
  for path in sorted(workdir.glob("seed_*/**/test_predictions.jsonl")):
    users[path] = [json.loads(line)["user"] for line in path.read_text().splitlines()]
  assert len(users) == 2 * 4  # 2 baselines + none at 2 widths, per seed
  assert len({tuple(u) for u in users.values()}) == 1


def test_finished_comparison_is_reused(compared, monkeypatch):
  config, workdir = compared
  before = json.loads((workdir / "results.json").read_text())["rows"]

  def no_training(*args, **kwargs):
    raise AssertionError("a finished stage was trained again")

  monkeypatch.setattr(compare_stage.latent_stage.loop, "train", no_training)
  pipeline.run(config, str(workdir))
  assert json.loads((workdir / "results.json").read_text())["rows"] == before


def test_unknown_model_is_refused():
  with pytest.raises(ValueError, match="unknown model 'sasrek'"):
    compare_stage.parse_models("sasrek,lasar")


def test_probe_settings_are_not_part_of_an_eval_identity():
  from lasar_jax.stages import common
  config = compare_config()
  before = common.fingerprint(config.eval)
  config.eval.update(probe_users=7, probe_times=5)
  assert common.fingerprint(config.eval) == before  # the probe cannot change any score
  config.eval.beam_width = 11
  assert common.fingerprint(config.eval) != before
