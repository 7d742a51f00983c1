"""The GRPO loop: rollouts with the current policy, a scoring pass, one sharded update per step.

Update u (1-based, numbered as in `lasar_jax.train.loop`) runs, all jitted and sharded like the
SFT step (rows split over data x fsdp, parameters by their logical axes):
  1. the next B training prompts from a grain pipeline (shuffled deterministically from the seed;
     its position is checkpointed with the state), padded to one length (`prompt_buckets`);
  2. `rollout.rollout` with the current parameters: G rollouts per prompt, key
     `fold_in(fold_in(key(seed), ROLLOUT_STREAM), u)`;
  3. the scoring pass (`grpo_loss.sid_log_probs`): the sampled SID tokens' log-probs under the
     current parameters (the old policy of the ratio) and under the frozen reference;
  4. one optimizer update by `loop.make_train_step` with `grpo_loss.make_loss_fn`.
Checkpoints (state + data position), metrics.jsonl, TensorBoard and the NaN stop are those of the
SFT loop (`lasar_jax.train.checkpoint`, `lasar_jax.train.metrics`, `loop.check_finite`).
"""

import functools
import pathlib
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from lasar_jax import distributed, inference, sharding
from lasar_jax.model.config import ModelConfig
from lasar_jax.rl import grpo_loss, grpo_math
from lasar_jax.rl import rollout as rollout_lib
from lasar_jax.sid.trie import SidTrie
from lasar_jax.train import checkpoint, input_pipeline, loop, metrics, optim

PROMPT_FIELDS = ("prompt", input_pipeline.MASK_FIELD, "target_codes")  # what the rollout reads
ROLLOUT_STREAM = 1  # rollout keys: fold_in(key(seed), ROLLOUT_STREAM), apart from the step's keys


def grpo_train_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config.train` (optimizer, buckets, checkpoint keeping) with GRPO's steps, learning rate
  (its own warmup, then constant), logging and checkpoint intervals; one rollout batch per update
  (no accumulation)."""
  g = config.grpo
  train = ml_collections.ConfigDict(config.train.to_dict())
  train.update(steps=g.steps, learning_rate=g.learning_rate, warmup_steps=g.warmup_steps,
               schedule="constant", log_every=g.log_every, checkpoint_every=g.checkpoint_every,
               batch_size=g.prompts_per_step * g.group_size, grad_accum=1)
  return train


def check_config(grpo_config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
  """Raises ValueError naming the first `config.grpo` key that cannot work."""
  g = grpo_config
  for key in ("steps", "log_every", "checkpoint_every", "prompts_per_step"):
    if int(g[key]) <= 0:
      raise ValueError(f"--config.grpo.{key}={g[key]} must be positive")
  if g.group_size < 2:
    raise ValueError(f"--config.grpo.group_size={g.group_size} must be >= 2 (advantages are "
                     "relative to the group)")
  split = mesh.shape["data"] * mesh.shape["fsdp"]
  if g.prompts_per_step % split or g.prompts_per_step % jax.process_count():
    raise ValueError(f"--config.grpo.prompts_per_step={g.prompts_per_step} must be divisible by "
                     f"data x fsdp = {split} and by {jax.process_count()} processes")
  if not g.temperature > 0:
    raise ValueError(f"--config.grpo.temperature={g.temperature} must be > 0")
  if g.kl_kind not in grpo_math.KL_KINDS:
    raise ValueError(f"--config.grpo.kl_kind={g.kl_kind!r} is not one of {grpo_math.KL_KINDS}")
  if g.depth_reward not in grpo_loss.DEPTH_REWARDS:
    raise ValueError(f"--config.grpo.depth_reward={g.depth_reward!r} is not one of "
                     f"{grpo_loss.DEPTH_REWARDS}")
  if g.aggregation not in grpo_math.AGGREGATIONS:
    raise ValueError(f"--config.grpo.aggregation={g.aggregation!r} is not one of "
                     f"{grpo_math.AGGREGATIONS}")


def prompt_buckets(examples: Sequence[dict], buckets: Sequence[int]) -> tuple[int]:
  """The one padded prompt length of every GRPO batch: the smallest of `buckets` that holds the
  longest prompt (or the largest). One shape means one compile of each of the rollout, scoring
  and update functions; padding costs only prefill compute, the latent steps and the SID
  sampling do not depend on it."""
  buckets = sorted(int(b) for b in buckets)
  longest = min(max(len(e["prompt"]) for e in examples), buckets[-1])
  return (input_pipeline.bucket_length(longest, buckets),)


def _window_row(window: list[dict[str, float]]) -> dict[str, float]:
  """Mean of each metric over the updates of a logging window."""
  return {name: float(np.mean([m[name] for m in window])) for name in window[0]}


def train(config: ml_collections.ConfigDict, stage_dir, *, cfg: ModelConfig,
          spec: inference.ReasoningSpec, params: dict, logical_specs: dict, reference: dict,
          examples: Sequence[dict], trie: SidTrie, code_token_ids: np.ndarray, pad_id: int,
          mesh: jax.sharding.Mesh | None = None,
          callback: Callable[[int, dict[str, float]], None] | None = None, probe=None
          ) -> tuple[loop.TrainState, dict]:
  """Runs GRPO to `config.grpo.steps` updates, resuming from the last checkpoint in `stage_dir`.

  Args:
    config: the run config (`grpo`, `train` for the optimizer and buckets, `reasoning.tau` and
      `reasoning.remat`, `mesh`, `seed`).
    stage_dir: WORKDIR/grpo; holds `checkpoints/`, `metrics.jsonl`, `tensorboard/`.
    cfg: the decoder's ModelConfig.
    spec: the reasoning spec (`rollout.SUPPORTED_MODES`).
    params: plain {'backbone', 'projection'?, 'policy'?} to train (the Stage-2 model).
    logical_specs: their logical axis names (a tree like `params`).
    reference: the frozen reference, `grpo_loss.reference_params` of the Stage-2 parameters.
    examples: one per training prompt: 'prompt' [T] int32 (prompt block with the mode's suffix),
      'target_codes' [L'] int32, and for 'lasar' 'anchor' [D] f32 and 'has_anchor' bool.
    trie: the SidTrie of the valid SIDs.
    code_token_ids: [L', C] token id of each SID code.
    pad_id: padding id of the prompts.
    mesh: the device mesh; default `sharding.make_mesh(config.mesh)`.
    callback: called as `callback(update, metrics)` after each update's metrics reach the host.
    probe: a validation probe (`lasar_jax.eval.probe.Probe`) or None; at the updates it is due,
      its scores of the current parameters join that update's metrics row.
  Returns:
    (final TrainState, summary: steps, start_step, final_loss, compile_s, wall_s and final_<m>
    for the metrics of the last logged window).
  Raises:
    NonFiniteError: a loss term or the parameters became NaN/Inf (message names step and term).
  """
  rollout_lib.check_mode(spec.mode)
  g = config.grpo
  mesh = mesh if mesh is not None else sharding.make_mesh(config.mesh)
  check_config(g, mesh)
  c = grpo_train_config(config)
  stage_dir = pathlib.Path(stage_dir)
  # The Policy Head (a small fresh MLP trained by REINFORCE) has its own learning rate.
  groups = {"policy": g.policy_learning_rate} if "policy" in params else None
  optimizer, schedule = optim.make_optimizer(c, groups)
  params, params_sharding = loop.param_shardings(params, mesh, logical_specs)
  shardings = loop.state_shardings(optimizer, params, params_sharding, mesh)
  reference_sharding = grpo_loss.reference_params(params_sharding)
  reference = jax.device_put(reference, reference_sharding)
  replicated, rows = sharding.replicated(mesh), sharding.batch_sharding(mesh, 1)
  trie, code_token_ids = jax.device_put((trie, jnp.asarray(code_token_ids, jnp.int32)), replicated)

  rollout_fn = jax.jit(
      functools.partial(rollout_lib.rollout, cfg=cfg, spec=spec, group_size=g.group_size),
      in_shardings=(params_sharding, replicated, replicated, rows, rows, rows, replicated,
                    replicated),
      out_shardings=rows)
  score_fn = jax.jit(functools.partial(grpo_loss.sid_log_probs, cfg=cfg, spec=spec),
                     in_shardings=(reference_sharding, rows), out_shardings=rows)
  weights = grpo_loss.GrpoWeights.from_config(g, config.reasoning.tau)
  loss_fn = grpo_loss.make_loss_fn(cfg, spec, weights, remat=config.reasoning.remat)
  step_fn = loop.make_train_step(loss_fn, optimizer, shardings, mesh)

  iterator = iter(input_pipeline.make_batches(
      examples, g.prompts_per_step, prompt_buckets(examples, c.buckets), {"prompt": pad_id},
      config.seed, shard_index=jax.process_index(), shard_count=jax.process_count(),
      truncation=c.truncation, num_threads=c.data_threads))
  manager = checkpoint.make_manager(stage_dir / loop.CHECKPOINT_DIR, keep=c.keep_checkpoints,
                                    async_save=c.async_checkpointing)
  start = manager.latest_step() or 0
  if start:
    target = loop.abstract_train_state(params, optimizer, config.seed, shardings)
    state = checkpoint.restore(manager, target, iterator, step=start)
  else:
    state = loop.init_train_state(params, optimizer, config.seed, shardings)
  del params
  rollout_key = jax.random.fold_in(jax.random.key(config.seed), ROLLOUT_STREAM)
  temperature = jnp.float32(g.temperature)
  writer = metrics.MetricsWriter(stage_dir, start)
  progress = tqdm.tqdm(total=c.steps, initial=start, desc=stage_dir.name, dynamic_ncols=True,
                       disable=not distributed.is_primary())
  summary = {"steps": start, "start_step": start, "final_loss": None, "compile_s": None}
  window: list[dict[str, float]] = []
  t_begin = t_window = time.perf_counter()

  def update_fn(state: loop.TrainState, update: int):
    """Rollouts, scoring pass and optimizer update of `update` (all dispatched asynchronously).

    Each process holds a block of the prompts and, repeated G times, the same block of rollout
    rows (row n = b * G + g), so the global `prompts` and `group` arrays line up.
    """
    local = next(iterator)
    prompts = input_pipeline.global_batch({k: local[k] for k in PROMPT_FIELDS}, mesh)
    group = input_pipeline.global_batch(
        {k: np.repeat(v, g.group_size, axis=0) for k, v in local.items()}, mesh)
    sampled = rollout_fn(state.params, trie, code_token_ids, prompts["prompt"],
                         prompts[input_pipeline.MASK_FIELD], prompts["target_codes"],
                         jax.random.fold_in(rollout_key, update), temperature)
    batch = {**group, "depth": sampled.depth, "codes": sampled.codes,
             "sid_tokens": sampled.sid_tokens, "target_logq": sampled.target_logprobs}
    old_logp = score_fn(grpo_loss.reference_params(state.params), batch)
    ref_logp = score_fn(reference, batch)
    return step_fn(state, {**batch, "old_logp": old_logp, "ref_logp": ref_logp})

  def finish(update: int, device_metrics, probed=None) -> None:
    """Host side of one update: NaN check, progress bar, logging (with the probe's scores
    `probed`, if any), callback."""
    nonlocal t_window
    host = jax.device_get(device_metrics)
    try:
      loop.check_finite(update, host)
    except loop.NonFiniteError as error:
      manager.wait_until_finished()
      raise loop.NonFiniteError(f"{error}; latest checkpoint: {manager.latest_step() or 'none'} "
                                f"in {manager.directory}") from None
    values = {k: float(v) for k, v in host.items() if k != loop.PARAMS_FINITE}
    window.append(values)
    summary.update(steps=update, final_loss=values["loss"])
    progress.update(1)
    progress.set_postfix(loss=f"{values['loss']:.4f}", reward=f"{values['reward_mean']:.3f}",
                         depth=f"{values['depth_mean']:.2f}")
    if probed or update % c.log_every == 0 or update == c.steps:
      row = _window_row(window)
      elapsed = max(time.perf_counter() - t_window, 1e-9)
      rollouts = len(window) * g.prompts_per_step * g.group_size
      writer.write(update, {**row, "lr": float(schedule(update - 1)),
                            "rollouts_per_s": rollouts / elapsed, **(probed or {})})
      summary.update({f"final_{k}": v for k, v in row.items()}, **(probed or {}))
      window.clear()
      t_window = time.perf_counter()
    if callback is not None:
      callback(update, values)

  try:
    pending = None  # (update, device metrics): read back once the next update is dispatched
    for update in range(start + 1, c.steps + 1):
      t0 = time.perf_counter()
      state, step_metrics = update_fn(state, update)
      if summary["compile_s"] is None:
        jax.block_until_ready(step_metrics)
        summary["compile_s"] = time.perf_counter() - t0
      pending = loop.settle(pending, (update, step_metrics), state, finish, probe,
                            update % c.checkpoint_every == 0 or update == c.steps,
                            lambda: checkpoint.save(manager, update, state, iterator))  # noqa: B023
  finally:
    progress.close()
    manager.wait_until_finished()
    manager.close()
    writer.close()
  summary["wall_s"] = time.perf_counter() - t_begin
  return state, summary
