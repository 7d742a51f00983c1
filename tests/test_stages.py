"""The SFT stages end to end on a tiny synthetic data set: every reasoning mode trains.

One workdir is shared: the SID stage and Stage 1 run once, then Stage 2 runs in each mode
(each writes its own WORKDIR/stage2[_<mode>]/).
"""

import json
import math

import pytest

from lasar_jax import pipeline
from lasar_jax.configs import common
from lasar_jax.stages import latent_stage

MODES = ("none", "pause", "cot", "latent", "lasar")


def tiny_config():
  """A config small enough for CPU tests: 60 items, 80 users, 2-level SIDs, a few steps."""
  config = common.base_config()
  config.data.synthetic.num_items = 60
  config.data.synthetic.num_users = 80
  config.sid.levels = 2
  config.sid.codebook_size = 16
  config.sid.epochs = 5
  config.sid.hidden_dims = (64, 32)
  config.train.steps = 12
  config.train.batch_size = 16
  config.train.learning_rate = 3e-3
  config.train.warmup_steps = 1
  config.train.log_every = 1
  config.train.checkpoint_every = 100
  config.train.buckets = (64, 128, 256)
  config.reasoning.max_depth = 3
  config.cot.max_steps = 3
  config.reasoning.fixed_depth = 2
  config.reasoning.num_pause = 2
  config.reasoning.policy_hidden = 32
  # Probes shaped like the eval tests' ranking, so the compiled search serves both.
  config.eval.update(beam_width=10, batch_size=16, ks=(1, 5, 10), probe_users=16, probe_times=2)
  return config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return tmp_path_factory.mktemp("stages")


def _losses(stage_dir):
  rows = [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]
  return [row["loss"] for row in rows], rows


def test_sid_and_stage1(workdir):
  config = tiny_config()
  config.stage = "stage1"
  summaries = pipeline.run(config, str(workdir))
  sids = json.loads((workdir / "sid" / "sids.json").read_text())
  assert len({tuple(v) for v in sids.values()}) == len(sids)  # every item has its own SID
  losses, _ = _losses(workdir / "stage1")
  assert losses[-1] < losses[0]
  assert summaries["stage1"]["steps"] == config.train.steps
  assert (workdir / "stage1" / "model" / "config.json").is_file()


def test_validation_probe_scores_the_trained_parameters(workdir):
  """The probe's rows (at the evenly spaced updates) hold the valid NDCG@10 of the parameters of
  that update: the last one equals the saved Stage-1 model ranked again on the same users."""
  from lasar_jax import trained
  from lasar_jax.eval import probe as probe_lib

  config = tiny_config()
  _, rows = _losses(workdir / "stage1")
  probed = {row["step"]: row["valid_ndcg@10"] for row in rows if "valid_ndcg@10" in row}
  assert set(probed) == {6, 12} == probe_lib.probe_updates(12, config.eval.probe_times)
  stage = trained.load_stage(config, workdir, "stage1")
  probe = probe_lib.make_probe(config, stage.data, stage.rec, stage.codes_il, 12, "none")
  assert len(probe.prompt_list) == min(config.eval.probe_users, len(stage.data.valid))
  again = probe(stage.rec.params)
  assert again["valid_ndcg@10"] == pytest.approx(probed[12], abs=1e-9)
  assert probe_lib.probe_updates(10, 3) == {4, 7, 10} and not probe_lib.probe_updates(10, 0)


@pytest.mark.parametrize("mode", MODES)
def test_stage2_mode_trains(workdir, mode):
  config = tiny_config()
  config.stage = "stage2"
  config.reasoning.mode = mode
  summary = pipeline.run(config, str(workdir))["stage2"]
  stage_dir = workdir / latent_stage.stage_name(mode)
  losses, rows = _losses(stage_dir)
  assert all(math.isfinite(x) for x in losses)
  assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
  assert summary["mode"] == mode
  if mode == "lasar":  # the three loss terms are logged by name
    assert {"sid_ce", "bkl", "policy_ce"} <= set(rows[-1])
    assert 1 <= summary["avg_target_depth"] <= config.reasoning.max_depth
  # a second run with the same config reuses the finished stage
  assert pipeline.run(config, str(workdir))["stage2"]["fingerprint"] == summary["fingerprint"]


def test_eval_metrics_equal_independent_scorer(workdir):
  from lasar_jax.data.prepare import load_prepared
  from lasar_jax.eval import scorer

  config = tiny_config()
  config.stage = "eval"
  config.reasoning.mode = "lasar"
  config.eval.beam_width = 10
  config.eval.ks = (1, 5, 10)
  config.eval.batch_size = 16
  pipeline.run(config, str(workdir))
  data = load_prepared(workdir / "data")
  for split_name in ("valid", "test"):
    split = data.split(split_name)
    targets = {str(data.user_ids[u]): str(data.item_ids[t])
               for u, t in zip(split.users, split.targets)}
    path = workdir / "eval" / f"{split_name}_predictions.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == len(targets)
    assert all(len(row["items"]) == 10 and len(set(row["items"])) == 10 for row in rows)
    written = json.loads((workdir / "eval" / f"{split_name}_metrics.json").read_text())
    independent = scorer.score_predictions_file(path, targets, ks=(1, 5, 10))
    for key, value in independent.items():
      assert written[key] == pytest.approx(value, abs=1e-12), key
    assert 0 <= written["avg_depth"] <= config.reasoning.max_depth
    assert sum(written["depth_histogram"]) == len(targets)
  # the earlier stages were scored beside the final model, on validation only
  assert (workdir / "stage1" / "eval" / "valid_metrics.json").is_file()
  assert not (workdir / "stage1" / "eval" / "test_metrics.json").exists()


def test_eval_of_another_mode_keeps_its_own_directory(workdir):
  lasar_metrics = workdir / "eval" / "test_metrics.json"
  before = lasar_metrics.read_bytes()
  config = tiny_config()
  config.stage = "eval"
  config.reasoning.mode = "pause"
  config.eval.update(beam_width=5, ks=(1, 5), batch_size=16, max_users=16)  # no K=10 scored
  pipeline.run(config, str(workdir))
  written = json.loads((workdir / "eval_pause" / "test_metrics.json").read_text())
  assert written["mode"] == "pause" and written["users"] == 16
  assert {"recall@5", "ndcg@5"} <= set(written) and "recall@10" not in written
  assert lasar_metrics.read_bytes() == before  # LASAR's scores are not overwritten


def test_eval_of_an_untrained_mode_is_refused(workdir, tmp_path):
  import shutil
  for name in ("data", "sid", "stage1", "cache"):
    if (workdir / name).exists():
      shutil.copytree(workdir / name, tmp_path / name)
  config = tiny_config()
  config.stage = "eval"
  config.reasoning.mode = "pause"
  with pytest.raises(FileNotFoundError, match="no trained 'pause' model"):
    pipeline.run(config, str(tmp_path))
  assert not (tmp_path / "eval_pause").exists()  # Stage 1 is not scored as if it were 'pause'
