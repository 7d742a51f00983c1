"""The shared train step and loop on a tiny decoder: sharding, accumulation, learning, NaNs."""

import json

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
import pytest

from lasar_jax import sharding
from lasar_jax.model import transformer
from lasar_jax.train import checkpoint, input_pipeline, loop, metrics, optim

import tiny_lm  # noqa: E402
from tiny_lm import compilation_cache_dir  # noqa: F401  (module-scoped autouse fixture)

def _mesh(data, fsdp, tensor):
  devices = jax.devices()[:data * fsdp * tensor]
  return sharding.make_mesh(ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor)),
                            devices)


def _host_batch(batch_size=8, length=16, seed=0):
  rng = np.random.RandomState(seed)
  tokens = rng.randint(1, 64, (batch_size, length)).astype(np.int32)
  return {"tokens": tokens, "loss_mask": np.ones_like(tokens), "mask": np.ones(tokens.shape, bool),
          "poison": np.zeros(batch_size, np.int32), "index": np.arange(batch_size, dtype=np.int32)}


def _one_step(mesh, train_config, batches):
  """Params and metrics after feeding `batches` to a fresh state on `mesh`."""
  optimizer, _ = optim.make_optimizer(train_config)
  params, params_sharding = loop.param_shardings(tiny_lm.boxed_params(), mesh)
  shardings = loop.state_shardings(optimizer, params, params_sharding, mesh)
  state = loop.init_train_state(params, optimizer, 0, shardings)
  step = loop.make_train_step(tiny_lm.loss_fn, optimizer, shardings, mesh)
  for batch in batches:
    state, step_metrics = step(state, input_pipeline.global_batch(batch, mesh))
  return state, jax.device_get(step_metrics)


def test_sharded_step_equals_unsharded_step():
  c = tiny_lm.train_config()
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
                       state_1.params, nn.meta.unbox(tiny_lm.boxed_params()))
  assert min(jax.tree.leaves(moved)) > 0  # every parameter was updated
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5),
               state_8.params, state_1.params)


def test_plain_params_with_logical_specs_shard_like_boxed_params():
  mesh = _mesh(2, 2, 2)
  boxed = jax.eval_shape(lambda: transformer.init_params(tiny_lm.CFG, jax.random.key(0)))
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
  whole, _ = _one_step(mesh, tiny_lm.train_config(batch_size=8), [batch])
  accumulated, _ = _one_step(mesh, tiny_lm.train_config(batch_size=8, grad_accum=2), halves)
  partial, _ = _one_step(mesh, tiny_lm.train_config(batch_size=8, grad_accum=2), halves[:1])
  untouched = jax.tree.map(np.array_equal, partial.params, nn.meta.unbox(tiny_lm.boxed_params()))
  assert all(jax.tree.leaves(untouched))  # no update before the k-th micro-batch
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6),
               accumulated.params, whole.params)


def test_weight_decay_skips_norms_and_biases():
  params = {"attn_norm": {"scale": 1}, "attn": {"q_proj": 1, "q_bias": 1}, "embedding": 1}
  mask = optim.decay_mask(params, "norm|bias")
  assert mask == {"attn_norm": {"scale": False}, "attn": {"q_proj": True, "q_bias": False},
                  "embedding": True}


def test_schedule_warms_up_from_the_first_update_and_decays_to_the_final_fraction():
  schedule = optim.make_schedule(tiny_lm.train_config(steps=10, warmup_steps=4, learning_rate=1.0,
                                               final_lr_fraction=0.1))
  lrs = [float(schedule(n)) for n in range(10)]  # lrs[s - 1] is the rate of update s
  np.testing.assert_allclose(lrs[:4], [0.25, 0.5, 0.75, 1.0], rtol=1e-6)
  assert all(a > b for a, b in zip(lrs[3:], lrs[4:]))
  assert lrs[-1] == pytest.approx(0.1)


def test_group_learning_rates_move_each_group_at_its_own_rate():
  config = tiny_lm.train_config(steps=10, warmup_steps=0, learning_rate=1e-3, schedule="constant",
                                weight_decay=0.1, grad_clip=0.0, no_decay="")
  optimizer, _ = optim.make_optimizer(config, {"policy": 0.5})
  params = {"backbone": {"w": np.full(3, 2.0, np.float32)}, "policy": {"w": np.ones(2, np.float32)}}
  grads = {"backbone": {"w": np.array([2.0, -3.0, 0.5], np.float32)},
           "policy": {"w": np.array([-1.0, 4.0], np.float32)}}
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  for group, rate in (("backbone", 1e-3), ("policy", 0.5)):  # AdamW's first update, in float64
    g, p = grads[group]["w"].astype(np.float64), params[group]["w"].astype(np.float64)
    expected = -rate * (g / (np.abs(g) + config.eps) + config.weight_decay * p)
    np.testing.assert_allclose(updates[group]["w"], expected, rtol=1e-5)
  # the optimizer state's shardings can be derived (optax.tree_map_params) like any other's
  shapes = jax.eval_shape(optimizer.init, params)
  assert optax.tree_map_params(optimizer, lambda p: p.shape, shapes) is not None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """One 30-step run of `train` on the toy task (single device), with its stage dir."""
  stage_dir = tmp_path_factory.mktemp("run") / "toy_stage"
  traces = []

  def counted_loss(params, batch, rng):
    traces.append(batch["tokens"].shape)
    return tiny_lm.loss_fn(params, batch, rng)

  state, summary = loop.train(counted_loss, tiny_lm.boxed_params(), tiny_lm.examples(), tiny_lm.train_config(), seed=0,
                              stage_dir=stage_dir, pad_values=tiny_lm.PAD, mesh=_mesh(1, 1, 1))
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
  assert rows[0]["lr"] == pytest.approx(float(optim.make_schedule(tiny_lm.train_config())(4)))
  assert list((stage_dir / metrics.TENSORBOARD_DIR).glob("events.out.tfevents.*"))
  manager = checkpoint.make_manager(stage_dir / loop.CHECKPOINT_DIR, keep=3)
  assert manager.all_steps() == [10, 20, 30]
  manager.close()


def test_nan_in_a_loss_term_stops_with_the_step_and_keeps_earlier_checkpoints(tmp_path):
  c = tiny_lm.train_config(checkpoint_every=3)
  it = iter(input_pipeline.make_batches(tiny_lm.examples(), c.batch_size, c.buckets, tiny_lm.PAD, seed=0))
  first_epoch = [next(it)["index"] for _ in range(8)]  # 64 examples: updates 1..8 see each once
  index = int(first_epoch[7][0])  # poison an example of update 8 (shuffling ignores contents)
  assert index not in np.concatenate(first_epoch[:7])
  stage_dir = tmp_path / "nan_stage"
  with pytest.raises(loop.NonFiniteError, match=r"^step 8: non-finite loss term 'penalty'") as err:
    loop.train(tiny_lm.loss_fn, tiny_lm.boxed_params(), tiny_lm.examples(poison_index=index), c, seed=0,
               stage_dir=stage_dir, pad_values=tiny_lm.PAD, mesh=_mesh(1, 1, 1))
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
  with pytest.raises(loop.NonFiniteError, match=r"^step 5: non-finite gradient norm \(grad_norm=nan"):
    loop.check_finite(5, {"loss": 1.0, "grad_norm": np.nan, loop.PARAMS_FINITE: 1.0})
