"""The optimizer of every SFT stage: clipped AdamW on a warmup + cosine/constant schedule.

With `train.grad_accum = k > 1` the optimizer is wrapped in `optax.MultiSteps`: each call of the
train step feeds one micro-batch, gradients are averaged over k calls, and the parameters change
on every k-th call only. The schedule counts optimizer updates, not micro-batches.
"""

import re
from collections.abc import Mapping

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


def scale_groups(factors: Mapping[str, float]) -> optax.GradientTransformation:
  """Multiplies the updates under each top-level parameter key of `factors` by its factor.

  After AdamW, a factor r turns the group into AdamW with learning rate r x lr on the same schedule
  (the update and its decoupled weight decay are both proportional to the learning rate).
  """
  factors = dict(factors)

  def scale(updates, params=None):
    del params
    return {key: (jax.tree.map(lambda u, r=factors[key]: u * r, value) if key in factors else value)
            for key, value in updates.items()}

  return optax.stateless(scale)


def make_optimizer(train_config: ml_collections.ConfigDict,
                   group_learning_rates: Mapping[str, float] | None = None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimizer, learning-rate schedule) from `config.train`; the schedule is for logging.

  `group_learning_rates` maps top-level parameter keys (e.g. 'policy') to their own peak learning
  rate on the same schedule shape; every other key uses `train_config.learning_rate`. Gradient
  clipping is over all parameters together.
  """
  c = train_config
  if int(c.grad_accum) < 1:
    raise ValueError(f"train.grad_accum={c.grad_accum} must be >= 1")
  schedule = make_schedule(c)
  optimizer = optax.adamw(schedule, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay,
                          mask=lambda params: decay_mask(params, c.no_decay))
  if group_learning_rates:
    optimizer = optax.chain(optimizer, scale_groups(
        {key: peak / c.learning_rate for key, peak in group_learning_rates.items()}))
  if c.grad_clip > 0:
    optimizer = optax.chain(optax.clip_by_global_norm(c.grad_clip), optimizer)
  if int(c.grad_accum) > 1:
    optimizer = optax.MultiSteps(optimizer, every_k_schedule=int(c.grad_accum))
    optimizer = optimizer.gradient_transformation()
  return optimizer, schedule
