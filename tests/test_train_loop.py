"""The shared train step and loop on a tiny decoder: sharding, accumulation, learning, NaNs."""

import functools
import json

import flax.linen as nn
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
from lasar_jax.train import checkpoint, input_pipeline, loop, metrics, optim

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


def _mesh(data, fsdp, tensor):
  devices = jax.devices()[:data * fsdp * tensor]
  return sharding.make_mesh(ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor)),
                            devices)


def _train_config(**overrides):
  """A short run. eps=1e-3 keeps Adam's first update g / (|g| + eps) smooth in g, so gradients equal
  up to float rounding give parameters equal to 1e-5 (with eps=1e-8 it is about sign(g))."""
  c = common.train_config()
  c.update(dict(steps=30, batch_size=8, buckets=(16, 24), learning_rate=1e-2, eps=1e-3,
                warmup_steps=3, log_every=5, checkpoint_every=10, data_threads=1), **overrides)
  return c


def _examples(n=64, seed=0, poison_index=None):
  """Arithmetic sequences (start, stride): every token after the second is predictable."""
  rng = np.random.RandomState(seed)
  out = []
  for i in range(n):
    length = rng.randint(8, 21)
    tokens = (rng.randint(1, 64) + rng.randint(1, 4) * np.arange(length)) % 63 + 1
    out.append({"tokens": tokens.astype(np.int32), "loss_mask": np.ones(length, np.int32),
                "poison": np.array(i == poison_index, np.int32), "index": np.array(i, np.int32)})
  return out


def _loss_fn(params, batch, rng):
  """Next-token CE, plus a `penalty` term that is NaN for a batch holding a poisoned example."""
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


def _host_batch(batch_size=8, length=16, seed=0):
  rng = np.random.RandomState(seed)
  tokens = rng.randint(1, 64, (batch_size, length)).astype(np.int32)
  return {"tokens": tokens, "loss_mask": np.ones_like(tokens), "mask": np.ones(tokens.shape, bool),
          "poison": np.zeros(batch_size, np.int32), "index": np.arange(batch_size, dtype=np.int32)}


def _one_step(mesh, train_config, batches):
  """Params and metrics after feeding `batches` to a fresh state on `mesh`."""
  optimizer, _ = optim.make_optimizer(train_config)
  params, params_sharding = loop.param_shardings(_boxed_params(), mesh)
  shardings = loop.state_shardings(optimizer, params, params_sharding, mesh)
  state = loop.init_train_state(params, optimizer, 0, shardings)
  step = loop.make_train_step(_loss_fn, optimizer, shardings, mesh)
  for batch in batches:
    state, step_metrics = step(state, input_pipeline.global_batch(batch, mesh))
  return state, jax.device_get(step_metrics)


def test_sharded_step_equals_unsharded_step():
  c = _train_config()
  batch = _host_batch()
  state_1, metrics_1 = _one_step(_mesh(1, 1, 1), c, [batch])
  state_8, metrics_8 = _one_step(_mesh(2, 2, 2), c, [batch])
  q_proj = state_8.params["layers"]["attn"]["q_proj"]
  assert len(q_proj.sharding.device_set) == 8 and q_proj.sharding.spec[1:3] == ("fsdp", "tensor")
  assert state_8.opt_state[1][0].mu["layers"]["attn"]["q_proj"].sharding == q_proj.sharding
  assert int(state_8.step) == 1
  np.testing.assert_allclose(metrics_8["loss"], metrics_1["loss"], rtol=1e-5)
  np.testing.assert_allclose(metrics_8["grad_norm"], metrics_1["grad_norm"], rtol=1e-5)
  moved = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).max(),
                       state_1.params, nn.meta.unbox(_boxed_params()))
  assert min(jax.tree.leaves(moved)) > 0  # every parameter was updated
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5),
               state_8.params, state_1.params)


def test_plain_params_with_logical_specs_shard_like_boxed_params():
  mesh = _mesh(2, 2, 2)
  boxed = jax.eval_shape(lambda: transformer.init_params(CFG, jax.random.key(0)))
  plain, from_specs = loop.param_shardings(nn.meta.unbox(boxed), mesh, nn.get_partition_spec(boxed))
  _, from_boxes = loop.param_shardings(boxed, mesh)
  assert from_specs == from_boxes
  down_proj = from_specs["layers"]["mlp"]["down_proj"]
  assert down_proj.spec == jax.sharding.PartitionSpec(None, "tensor", "fsdp")
  assert jax.tree.structure(plain) == jax.tree.structure(from_specs)


def test_grad_accumulation_equals_one_step_on_the_concatenated_batch():
  # Every row has 16 counted tokens, so the token-mean loss is a mean over examples.
  mesh = _mesh(1, 1, 1)
  batch = _host_batch(batch_size=8, seed=1)
  halves = [{k: v[:4] for k, v in batch.items()}, {k: v[4:] for k, v in batch.items()}]
  whole, _ = _one_step(mesh, _train_config(batch_size=8), [batch])
  accumulated, _ = _one_step(mesh, _train_config(batch_size=8, grad_accum=2), halves)
  partial, _ = _one_step(mesh, _train_config(batch_size=8, grad_accum=2), halves[:1])
  untouched = jax.tree.map(np.array_equal, partial.params, nn.meta.unbox(_boxed_params()))
  assert all(jax.tree.leaves(untouched))  # no update before the k-th micro-batch
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6),
               accumulated.params, whole.params)


def test_weight_decay_skips_norms_and_biases():
  params = {"attn_norm": {"scale": 1}, "attn": {"q_proj": 1, "q_bias": 1}, "embedding": 1}
  mask = optim.decay_mask(params, "norm|bias")
  assert mask == {"attn_norm": {"scale": False}, "attn": {"q_proj": True, "q_bias": False},
                  "embedding": True}


def test_schedule_warms_up_from_the_first_update_and_decays_to_the_final_fraction():
  schedule = optim.make_schedule(_train_config(steps=10, warmup_steps=4, learning_rate=1.0,
                                               final_lr_fraction=0.1))
  lrs = [float(schedule(n)) for n in range(10)]  # lrs[s - 1] is the rate of update s
  np.testing.assert_allclose(lrs[:4], [0.25, 0.5, 0.75, 1.0], rtol=1e-6)
  assert all(a > b for a, b in zip(lrs[3:], lrs[4:]))
  assert lrs[-1] == pytest.approx(0.1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """One 30-step run of `train` on the toy task (single device), with its stage dir."""
  stage_dir = tmp_path_factory.mktemp("run") / "toy_stage"
  traces = []

  def counted_loss(params, batch, rng):
    traces.append(batch["tokens"].shape)
    return _loss_fn(params, batch, rng)

  state, summary = loop.train(counted_loss, _boxed_params(), _examples(), _train_config(), seed=0,
                              stage_dir=stage_dir, pad_values=PAD, mesh=_mesh(1, 1, 1))
  return state, summary, stage_dir, traces


def test_loss_goes_down_on_a_learnable_task(trained):
  state, summary, stage_dir, _ = trained
  rows = metrics.read_rows(stage_dir / metrics.METRICS_FILE)
  assert int(state.step) == 30 and summary["steps"] == 30
  assert rows[-1]["ce"] < 0.6 * rows[0]["ce"]
  assert summary["final_loss"] < 0.6 * rows[0]["ce"]
  assert summary["compile_s"] > 0 and summary["tokens_per_s"] > 0


def test_steps_compile_once_per_bucket(trained):
  _, _, _, traces = trained
  assert len(traces) == len(set(traces)) and {t[1] for t in traces} == {16, 24}


def test_metrics_jsonl_and_tensorboard_are_written(trained):
  _, _, stage_dir, _ = trained
  lines = (stage_dir / metrics.METRICS_FILE).read_text().splitlines()
  rows = [json.loads(line) for line in lines]
  assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30]
  for row in rows:
    assert {"step", "loss", "ce", "penalty", "accuracy", "lr", "tokens_per_s",
            "grad_norm"} <= row.keys()
    assert "params_finite" not in row
  assert rows[0]["lr"] == pytest.approx(float(optim.make_schedule(_train_config())(4)))
  assert list((stage_dir / metrics.TENSORBOARD_DIR).glob("events.out.tfevents.*"))
  manager = checkpoint.make_manager(stage_dir / loop.CHECKPOINT_DIR, keep=3)
  assert manager.all_steps() == [10, 20, 30]
  manager.close()


def test_nan_in_a_loss_term_stops_with_the_step_and_keeps_earlier_checkpoints(tmp_path):
  c = _train_config(checkpoint_every=3)
  it = iter(input_pipeline.make_batches(_examples(), c.batch_size, c.buckets, PAD, seed=0))
  first_epoch = [next(it)["index"] for _ in range(8)]  # 64 examples: updates 1..8 see each once
  index = int(first_epoch[7][0])  # poison an example of update 8 (shuffling ignores contents)
  assert index not in np.concatenate(first_epoch[:7])
  stage_dir = tmp_path / "nan_stage"
  with pytest.raises(loop.NonFiniteError, match=r"^step 8: non-finite loss term 'penalty'") as err:
    loop.train(_loss_fn, _boxed_params(), _examples(poison_index=index), c, seed=0,
               stage_dir=stage_dir, pad_values=PAD, mesh=_mesh(1, 1, 1))
  assert "ce=" not in str(err.value) and "latest checkpoint: 6" in str(err.value)
  manager = checkpoint.make_manager(stage_dir / loop.CHECKPOINT_DIR, keep=3)
  assert manager.latest_step() == 6
  manager.close()
  assert metrics.read_rows(stage_dir / metrics.METRICS_FILE)[-1]["step"] == 5


def test_non_finite_parameters_are_reported_with_the_step():
  loop.check_finite(3, {"loss": 1.0, "ce": 1.0, loop.PARAMS_FINITE: 1.0})
  with pytest.raises(loop.NonFiniteError, match=r"^step 3: parameters became non-finite"):
    loop.check_finite(3, {"loss": 1.0, "ce": 1.0, loop.PARAMS_FINITE: 0.0})
  with pytest.raises(loop.NonFiniteError,
                     match=r"^step 4: non-finite loss term 'ce' \(ce=inf, loss=inf\)"):
    loop.check_finite(4, {"loss": np.inf, "ce": np.inf, loop.PARAMS_FINITE: 0.0})
