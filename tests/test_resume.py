"""A killed run restarted with the same call ends bitwise where an uninterrupted run ends."""

import jax
import ml_collections
import numpy as np
import pytest

from lasar_jax import sharding
from lasar_jax.train import checkpoint, loop, metrics

import tiny_lm  # noqa: E402
from tiny_lm import compilation_cache_dir  # noqa: F401  (module-scoped autouse fixture)


class _Killed(Exception):
  """Stands for the process dying."""


def _run(stage_dir, checksums, kill_at=None):
  """The same `train` call every time; `kill_at` aborts it once that update's metrics are read."""

  def callback(step, values):
    checksums[step] = values["checksum"]
    if step == kill_at:
      raise _Killed()

  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1)),
                            jax.devices()[:1])
  return loop.train(tiny_lm.loss_fn, tiny_lm.boxed_params(), tiny_lm.examples(), tiny_lm.train_config(), seed=0,
                    stage_dir=stage_dir, pad_values=tiny_lm.PAD, mesh=mesh, callback=callback)


def test_killed_run_resumes_to_the_uninterrupted_parameters_and_batches(tmp_path):
  expected_sums = {}
  expected, _ = _run(tmp_path / "straight", expected_sums)

  stage_dir = tmp_path / "killed"
  with pytest.raises(_Killed):
    _run(stage_dir, {}, kill_at=17)  # checkpoint 10 is on disk; updates 11..17 are lost
  manager = checkpoint.make_manager(stage_dir / loop.CHECKPOINT_DIR, keep=3)
  assert manager.latest_step() == 10
  manager.close()
  assert [r["step"] for r in metrics.read_rows(stage_dir / metrics.METRICS_FILE)] == [5, 10, 15]

  resumed_sums = {}
  resumed, summary = _run(stage_dir, resumed_sums)
  assert summary["start_step"] == 10 and sorted(resumed_sums) == list(range(11, 31))
  assert resumed_sums == {s: expected_sums[s] for s in range(11, 31)}  # same batches after resume
  assert int(resumed.step) == int(expected.step) == 30
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               resumed.params, expected.params)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               resumed.opt_state, expected.opt_state)
  rows = metrics.read_rows(stage_dir / metrics.METRICS_FILE)
  assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30]  # the killed run's row 15 replaced
