"""The training loop every stage shares: train state, jitted step, and `train()`.

A stage supplies `loss_fn(params, batch, rng) -> (loss, metrics)`, where `metrics` holds each loss
term by name (scalars), plus its initial parameters and examples. Nothing here knows about SIDs or
reasoning modes. The pieces are usable alone: `make_train_step` and `init_train_state` for a
stage with its own batch producer (GRPO), `lasar_jax.train.checkpoint` and
`lasar_jax.train.metrics` for saving and logging.

Step numbering: "step s" is the s-th optimizer update (1-based); the checkpoint named s holds the
state after s updates; `metrics.jsonl` rows carry the same s. With `train.grad_accum = k`, an update
is k calls of the jitted step, one micro-batch each.
"""

import functools
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax
import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from lasar_jax import distributed, sharding
from lasar_jax.configs import common
from lasar_jax.train import checkpoint, input_pipeline, metrics, optim

PARAMS_FINITE = "params_finite"  # step metric: 1.0 while every parameter is finite after the update
CHECKPOINT_DIR = "checkpoints"

LossFn = Callable[[Any, Mapping[str, jax.Array], jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data position."""

  step: jax.Array  # int32 []: calls of the train step so far (micro-batches; updates * grad_accum)
  params: Any  # model parameters, plain arrays, f32 master copy
  opt_state: Any  # optimizer state (AdamW moments; MultiSteps accumulator when grad_accum > 1)
  rng: jax.Array  # uint32 raw key data; call t draws from fold_in(key, t)


class NonFiniteError(FloatingPointError):
  """A loss term or the parameters became NaN/Inf; the message names the step and what broke."""


def param_shardings(params, mesh: jax.sharding.Mesh, logical_specs=None):
  """(plain params, their NamedShardings) from boxed params, or plain params + logical specs.

  `logical_specs` is a tree like `params` whose leaves are tuples / PartitionSpecs of logical
  axis names (what `nn.get_partition_spec` gives for boxed parameters).
  """
  if logical_specs is not None:
    params = jax.tree.map(lambda v, names: nn.LogicallyPartitioned(v, tuple(names)),
                          params, logical_specs)
  return nn.meta.unbox(params), sharding.logical_shardings(params, mesh)


def _new_state(optimizer: optax.GradientTransformation, seed: int, params) -> TrainState:
  """A state at step 0 for a copy of `params` (the step donates the state, never the caller's)."""
  params = jax.tree.map(jnp.copy, params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                    rng=jax.random.key_data(jax.random.key(seed)))


def state_shardings(optimizer: optax.GradientTransformation, params, params_sharding,
                    mesh: jax.sharding.Mesh) -> TrainState:
  """NamedShardings of a TrainState: optimizer moments like their parameters, the rest replicated."""
  opt_shapes = jax.eval_shape(optimizer.init, params)
  replicated = sharding.replicated(mesh)
  opt_sharding = optax.tree_map_params(optimizer, lambda _, s: s, opt_shapes, params_sharding,
                                       transform_non_params=lambda _: replicated)
  return TrainState(step=replicated, params=params_sharding, opt_state=opt_sharding, rng=replicated)


def init_train_state(params, optimizer: optax.GradientTransformation, seed: int,
                     shardings: TrainState) -> TrainState:
  """The step-0 state, every leaf placed as `shardings` says (`params` itself is not donated)."""
  params = jax.device_put(params, shardings.params)
  return jax.jit(functools.partial(_new_state, optimizer, seed), out_shardings=shardings)(params)


def abstract_train_state(params, optimizer: optax.GradientTransformation, seed: int,
                         shardings: TrainState) -> TrainState:
  """Shapes, dtypes and shardings of the state (the restore target); allocates nothing."""
  shapes = jax.eval_shape(functools.partial(_new_state, optimizer, seed), params)
  return checkpoint.abstract_state(shapes, shardings)


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation,
                    shardings: TrainState, mesh: jax.sharding.Mesh):
  """`step(state, batch) -> (state, metrics)`, jitted with explicit shardings; donates `state`.

  `batch` is a dict of global arrays split on their leading axis over data x fsdp. `metrics` is
  replicated: the loss_fn's metrics plus `loss`, `grad_norm` (before clipping) and
  `params_finite`.
  """
  batch_sharding = sharding.batch_sharding(mesh, 1)  # prefix: leading axis split, the rest whole

  def step(state: TrainState, batch):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))
    out = {**aux, "loss": loss, "grad_norm": optax.tree.norm(grads),
           PARAMS_FINITE: finite.astype(jnp.float32)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), out

  return jax.jit(step, in_shardings=(shardings, batch_sharding),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)


def check_finite(step: int, step_metrics: Mapping[str, Any]) -> None:
  """Raises NonFiniteError naming `step` and each non-finite term (or the parameters)."""
  bad = sorted((name for name, value in step_metrics.items()
                if name != PARAMS_FINITE and not np.all(np.isfinite(value))),
               key=lambda name: (name == "loss", name))
  if bad:
    values = ", ".join(f"{name}={float(step_metrics[name])}" for name in bad)
    what = "gradient norm" if bad[0] == "grad_norm" else f"loss term {bad[0]!r}"
    raise NonFiniteError(f"step {step}: non-finite {what} ({values}); training stopped, the "
                         f"state of this step is not saved")
  if PARAMS_FINITE in step_metrics and not step_metrics[PARAMS_FINITE]:
    raise NonFiniteError(f"step {step}: parameters became non-finite after the update (every loss "
                         f"term was finite); training stopped, the state of this step is not saved")


def count_tokens(batch: Mapping[str, jax.Array]) -> jax.Array | int:
  """Real positions in a global batch, every process's rows: the sum of its `mask` field (0 when
  it has none). An int32 [] device array, read back with the step's metrics."""
  mask = batch.get(input_pipeline.MASK_FIELD)
  return 0 if mask is None else jnp.sum(mask, dtype=jnp.int32)


def micro_batch_size(train_config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> int:
  """Global examples per train-step call; checks they split over grad_accum, mesh and processes."""
  c = train_config
  if c.batch_size % c.grad_accum:
    raise ValueError(f"train.batch_size={c.batch_size} is not divisible by "
                     f"train.grad_accum={c.grad_accum}")
  micro = c.batch_size // c.grad_accum
  split = mesh.shape["data"] * mesh.shape["fsdp"]
  if micro % split or micro % jax.process_count():
    raise ValueError(f"micro-batch {micro} (train.batch_size / grad_accum) must be divisible by "
                     f"data x fsdp = {split} and by {jax.process_count()} processes")
  return micro


def _data_iterator(data, train_config, batch_size: int, pad_values, seed: int):
  """A checkpointable iterator over this process's rows of global batches of `batch_size`, from
  examples, an IterDataset or an iterator (which already yield this process's rows)."""
  if isinstance(data, grain.DatasetIterator):
    return data
  if isinstance(data, grain.IterDataset):
    return iter(data)
  if not isinstance(data, Sequence):
    raise TypeError(f"train() data must be a list of examples or a grain IterDataset / "
                    f"DatasetIterator (its position is checkpointed), got {type(data).__name__}")
  if pad_values is None:
    raise ValueError("train() on a list of examples needs pad_values (field -> padding value)")
  c = train_config
  return iter(input_pipeline.make_batches(
      data, batch_size, tuple(c.buckets), pad_values, seed, shard_index=jax.process_index(),
      shard_count=jax.process_count(), padding_side=c.padding_side, truncation=c.truncation,
      num_threads=c.data_threads))


class _Meter:
  """Host-side bookkeeping: metric sums since the last logged row, and overall throughput."""

  def __init__(self):
    self.reset()
    self.timed_tokens = 0  # tokens of the updates after the first (its time is mostly compilation)
    self.first_done = None  # perf_counter when the first update of this run finished

  def reset(self) -> None:
    """Starts a new logging window."""
    self.sums, self.updates, self.tokens, self.start = {}, 0, 0, time.perf_counter()

  def add(self, values: Mapping[str, float], tokens: int) -> None:
    """Counts one finished update."""
    for name, value in values.items():
      self.sums[name] = self.sums.get(name, 0.0) + value
    self.updates += 1
    self.tokens += tokens
    if self.first_done is None:
      self.first_done = time.perf_counter()
    else:
      self.timed_tokens += tokens

  def row(self) -> dict[str, float]:
    """Mean of each metric over the window, and the window's tokens per second."""
    elapsed = max(time.perf_counter() - self.start, 1e-9)
    means = {name: total / self.updates for name, total in self.sums.items()}
    return {**means, "tokens_per_s": self.tokens / elapsed}

  def tokens_per_s(self) -> float:
    """Tokens per second since the first update of this run finished (0 before a second one)."""
    if self.first_done is None:
      return 0.0
    return self.timed_tokens / max(time.perf_counter() - self.first_done, 1e-9)


def settle(previous: tuple | None, current: tuple, state: TrainState, finish: Callable, probe,
           checkpoint_due: bool, save: Callable[[], None]) -> tuple | None:
  """The host side of a training loop once update `current[0]` is dispatched.

  Reads back the previous update (`finish(*previous)`) while the device runs this one; when the
  probe is due, finishes this update with its scores of `state.params`; when a checkpoint is due,
  finishes this update and calls `save()`. Returns what is left to finish (this update or None).
  `current` is `(update, *device values)`, what `finish` takes.
  """
  if previous is not None:
    finish(*previous)
  if probe is not None and probe.due(current[0]):
    finish(*current, probed=probe(state.params))
    current = None
  if checkpoint_due:
    if current is not None:
      finish(*current)
      current = None
    save()
  return current


def train(loss_fn: LossFn, params, data, train_config: ml_collections.ConfigDict, *, seed: int,
          stage_dir, pad_values: Mapping[str, int] | None = None,
          mesh: jax.sharding.Mesh | None = None,
          mesh_config: ml_collections.ConfigDict | None = None,
          logical_specs=None, callback: Callable[[int, dict[str, float]], None] | None = None,
          probe=None) -> tuple[TrainState, dict]:
  """Runs a stage to `train_config.steps` optimizer updates, resuming from its last checkpoint.

  Args:
    loss_fn: `(params, batch, rng) -> (loss, metrics)`; metrics are scalars, each loss term by name.
    params: initial parameters, boxed with logical axes (`init_params`), or plain with
      `logical_specs` (plain without specs are replicated). Only their shapes are used when a
      checkpoint exists.
    data: a list of examples (batched by `input_pipeline.make_batches` with `pad_values` and the
      train config), or a grain IterDataset / DatasetIterator yielding this process's rows of
      each micro-batch.
    train_config: `config.train`.
    seed: seeds the shuffle and the per-step keys.
    stage_dir: `WORKDIR/<stage>`; holds `checkpoints/`, `metrics.jsonl`, `tensorboard/`.
    pad_values: padded field -> padding value, when `data` is a list of examples.
    mesh: the device mesh; default `sharding.make_mesh(mesh_config)` (default: all on 'data').
    mesh_config: `config.mesh`, used when `mesh` is None.
    logical_specs: logical axis names of plain `params` (None when `params` are boxed).
    callback: called as `callback(step, metrics)` after each update's metrics reach the host;
      raising from it stops training (checkpoints already started are completed).
    probe: a validation probe (`lasar_jax.eval.probe.Probe`) or None; at the updates it is due,
      its scores of the current parameters join that update's metrics row.
  Returns:
    (final TrainState, summary: steps, start_step, final_loss, tokens_per_s, compile_s, wall_s,
    and the last probe's scores when there is a probe).
  Raises:
    NonFiniteError: a loss term or the parameters became NaN/Inf; the checkpoints on disk all
      predate that step.
  """
  c = train_config
  for key in ("steps", "log_every", "checkpoint_every", "keep_checkpoints"):
    if int(c[key]) <= 0:
      raise ValueError(f"train.{key}={c[key]} must be positive")
  stage_dir = pathlib.Path(stage_dir)
  mesh = mesh if mesh is not None else sharding.make_mesh(mesh_config or common.mesh_config())
  micro = micro_batch_size(c, mesh)
  optimizer, schedule = optim.make_optimizer(c)
  params, params_sharding = param_shardings(params, mesh, logical_specs)
  shardings = state_shardings(optimizer, params, params_sharding, mesh)
  iterator = _data_iterator(data, c, micro, pad_values, seed)
  manager = checkpoint.make_manager(stage_dir / CHECKPOINT_DIR, keep=c.keep_checkpoints,
                                    async_save=c.async_checkpointing)
  start = manager.latest_step() or 0
  if start:
    target = abstract_train_state(params, optimizer, seed, shardings)
    state = checkpoint.restore(manager, target, iterator, step=start)
  else:
    state = init_train_state(params, optimizer, seed, shardings)
  del params
  step_fn = make_train_step(loss_fn, optimizer, shardings, mesh)
  writer = metrics.MetricsWriter(stage_dir, start)
  progress = tqdm.tqdm(total=c.steps, initial=start, desc=stage_dir.name, dynamic_ncols=True,
                       disable=not distributed.is_primary())
  meter = _Meter()
  summary = {"steps": start, "start_step": start, "final_loss": None, "tokens_per_s": None,
             "compile_s": None}
  t_begin = time.perf_counter()

  def finish(update: int, micro_metrics: list, micro_tokens: list, probed=None) -> None:
    """Host side of one update: NaN check, progress bar, logging (with the probe's scores
    `probed`, if any), callback."""
    host, tokens = jax.device_get((micro_metrics, micro_tokens))
    tokens = int(sum(tokens))
    try:
      for m in host:
        check_finite(update, m)
    except NonFiniteError as error:
      manager.wait_until_finished()
      raise NonFiniteError(f"{error}; latest checkpoint: {manager.latest_step() or 'none'} in "
                           f"{manager.directory}") from None
    values = {k: float(np.mean([m[k] for m in host])) for k in host[0] if k != PARAMS_FINITE}
    meter.add(values, tokens)
    summary.update(steps=update, final_loss=values["loss"], tokens_per_s=meter.tokens_per_s())
    progress.update(1)
    progress.set_postfix(loss=f"{values['loss']:.4f}", tok_s=f"{summary['tokens_per_s']:.0f}")
    if probed or update % c.log_every == 0 or update == c.steps:
      writer.write(update, {**meter.row(), "lr": float(schedule(update - 1)), **(probed or {})})
      summary.update(probed or {})
      meter.reset()
    if callback is not None:
      callback(update, values)

  try:
    pending = None  # (update, device metrics, tokens): read back after the next update is queued
    for update in range(start + 1, c.steps + 1):
      micro_metrics, tokens = [], []
      for _ in range(c.grad_accum):
        batch = input_pipeline.global_batch(next(iterator), mesh)
        tokens.append(count_tokens(batch))
        t0 = time.perf_counter()
        state, step_metrics = step_fn(state, batch)
        if summary["compile_s"] is None:
          jax.block_until_ready(step_metrics)
          summary["compile_s"] = time.perf_counter() - t0
        micro_metrics.append(step_metrics)
      pending = settle(pending, (update, micro_metrics, tokens), state, finish, probe,
                       update % c.checkpoint_every == 0 or update == c.steps,
                       lambda: checkpoint.save(manager, update, state, iterator))  # noqa: B023
  finally:
    progress.close()
    manager.wait_until_finished()
    manager.close()
    writer.close()
  summary["wall_s"] = time.perf_counter() - t_begin
  return state, summary
