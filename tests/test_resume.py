"""A killed run restarted with the same call ends bitwise where an uninterrupted run ends."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache

from lasar_jax import losses, sharding
from lasar_jax.configs import common
from lasar_jax.model import transformer
from lasar_jax.model.config import PRESETS
from lasar_jax.train import checkpoint, loop, metrics

# The model, data and loss repeat tests/test_train_loop.py's, so the compiled steps are shared.
CFG = PRESETS["tiny"].replace(num_layers=2, vocab_size=64)
PAD = {"tokens": 0, "loss_mask": 0}


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
  """Identical programs (same step, config and shapes) compile once for the whole session."""
  saved = {name: getattr(jax.config, name) for name in
           ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")}
  compilation_cache.reset_cache()
  compilation_cache.set_cache_dir(str(tmp_path_factory.getbasetemp() / "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  yield
  for name, value in saved.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()


def _train_config():
  c = common.train_config()
  c.update(dict(steps=30, batch_size=8, buckets=(16, 24), learning_rate=1e-2, eps=1e-3,
                warmup_steps=3, log_every=5, checkpoint_every=10, data_threads=1))
  return c


def _examples(n=64, seed=0):
  """Arithmetic sequences (start, stride): every token after the second is predictable."""
  rng = np.random.RandomState(seed)
  out = []
  for i in range(n):
    length = rng.randint(8, 21)
    tokens = (rng.randint(1, 64) + rng.randint(1, 4) * np.arange(length)) % 63 + 1
    out.append({"tokens": tokens.astype(np.int32), "loss_mask": np.ones(length, np.int32),
                "poison": np.array(0, np.int32), "index": np.array(i, np.int32)})
  return out


def _loss_fn(params, batch, rng):
  """Next-token CE; `checksum` identifies the batch's examples."""
  del rng
  tokens, mask = batch["tokens"], batch["mask"]
  logits, _, _ = transformer.Decoder(CFG).apply(
      {"params": params}, tokens, positions=transformer.positions_from_mask(mask), mask=mask)
  ce, aux = losses.token_cross_entropy(logits[:, :-1], tokens[:, 1:],
                                       mask[:, 1:] & (batch["loss_mask"][:, 1:] > 0))
  penalty = jnp.where(jnp.any(batch["poison"] > 0), jnp.nan, 0.0)
  checksum = jnp.sum(batch["index"] * (1 + jnp.arange(batch["index"].shape[0])))  # which examples
  return ce + penalty, {"ce": ce, "penalty": penalty, "accuracy": aux["accuracy"],
                        "checksum": checksum.astype(jnp.float32)}


@functools.cache
def _boxed_params():
  return jax.jit(transformer.init_params, static_argnums=0)(CFG, jax.random.key(0))


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
  return loop.train(_loss_fn, _boxed_params(), _examples(), _train_config(), seed=0,
                    stage_dir=stage_dir, pad_values=PAD, mesh=mesh, callback=callback)


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
