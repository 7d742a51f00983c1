"""The optimizer of every SFT stage: clipped AdamW on a warmup + cosine/constant schedule.

With `train.grad_accum = k > 1` the optimizer is wrapped in `optax.MultiSteps`: each call of the
train step feeds one micro-batch, gradients are averaged over k calls, and the parameters change
on every k-th call only. The schedule counts optimizer updates, not micro-batches.
"""

import re

import jax
import ml_collections
import optax

SCHEDULES = ("cosine", "constant")


def make_schedule(train_config: ml_collections.ConfigDict) -> optax.Schedule:
  """Learning rate by optimizer-state count n (updates done): update n + 1 uses `schedule(n)`.

  Linear warmup reaching the peak at update `warmup_steps` (the first update already moves, at
  peak / warmup_steps), then cosine decay to `final_lr_fraction * peak` at update `steps`, or
  constant.
  """
  c = train_config
  if c.schedule not in SCHEDULES:
    raise ValueError(f"train.schedule={c.schedule!r} is not one of {SCHEDULES}")
  warmup = int(c.warmup_steps)
  if c.schedule == "cosine":
    base = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=c.learning_rate, warmup_steps=warmup,
        decay_steps=max(int(c.steps), warmup + 1), end_value=c.learning_rate * c.final_lr_fraction)
  elif warmup == 0:
    base = optax.constant_schedule(c.learning_rate)
  else:
    base = optax.join_schedules(
        [optax.linear_schedule(0.0, c.learning_rate, warmup),
         optax.constant_schedule(c.learning_rate)], [warmup])
  return lambda count: base(count + 1)


def decay_mask(params, no_decay: str):
  """True for parameters that get weight decay: those whose 'a/b/c' path misses `no_decay`."""
  pattern = re.compile(no_decay) if no_decay else None

  def decays(path, _):
    name = "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
    return pattern is None or pattern.search(name) is None

  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(train_config: ml_collections.ConfigDict
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimizer, learning-rate schedule) from `config.train`; the schedule is for logging."""
  c = train_config
  if int(c.grad_accum) < 1:
    raise ValueError(f"train.grad_accum={c.grad_accum} must be >= 1")
  schedule, no_decay = make_schedule(c), c.no_decay
  adamw = optax.adamw(schedule, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay,
                      mask=lambda params: decay_mask(params, no_decay))
  optimizer = adamw
  if c.grad_clip > 0:
    optimizer = optax.chain(optax.clip_by_global_norm(c.grad_clip), adamw)
  if int(c.grad_accum) > 1:
    optimizer = optax.MultiSteps(optimizer, every_k_schedule=int(c.grad_accum))
    optimizer = optimizer.gradient_transformation()
  return optimizer, schedule
