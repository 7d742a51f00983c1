"""GRPO math: group advantages, PPO-style clipped surrogate, KL estimators, depth REINFORCE.

Pure jit-able functions in f32 over explicit masks (the pieces of google/tunix
`tunix/rl/algo_core.py`). Shape letters: B prompts, G rollouts per prompt (the group), T tokens.
Every function also takes any leading batch shape in place of [B, G].
"""

import jax
import jax.numpy as jnp

from lasar_jax.losses import masked_mean

AGGREGATIONS = ("token_mean", "sequence_mean")
KL_KINDS = ("k1", "k2", "k3")


def group_advantages(rewards_bg: jax.Array, eps: float = 1e-6, scale: bool = True) -> jax.Array:
  """GRPO advantages: (r - group mean) / (group std + eps), per prompt over its G rollouts.

  The std is the population std (ddof=0), as GRPO uses; a group whose rewards are all equal
  gets advantage 0 for every rollout. With `scale=False` only the group mean is subtracted.

  Args:
    rewards_bg: [B, G] reward of each rollout.
  Returns:
    [B, G] f32 advantages.
  """
  r_bg = rewards_bg.astype(jnp.float32)
  centered_bg = r_bg - jnp.mean(r_bg, axis=-1, keepdims=True)
  if not scale:
    return centered_bg
  return centered_bg / (jnp.std(r_bg, axis=-1, keepdims=True) + eps)


def aggregate_tokens(values_bgt: jax.Array, mask_bgt: jax.Array,
                     mode: str = "token_mean") -> jax.Array:
  """Reduce per-token values to a scalar over the tokens in `mask_bgt`.

  'token_mean': mean over all counted tokens (long sequences weigh more);
  'sequence_mean': mean over each sequence's counted tokens, then over the sequences that have
  at least one counted token. Denominators are clamped, so an empty mask gives 0.
  """
  values_bgt = values_bgt.astype(jnp.float32)
  if mode == "token_mean":
    return masked_mean(values_bgt, mask_bgt)
  if mode == "sequence_mean":
    mask_f = mask_bgt.astype(jnp.float32)
    count_bg = jnp.sum(mask_f, axis=-1)
    seq_mean_bg = jnp.sum(values_bgt * mask_f, axis=-1) / jnp.maximum(count_bg, 1.0)
    return masked_mean(seq_mean_bg, count_bg > 0)
  raise ValueError(f"unknown aggregation {mode!r}; expected one of {AGGREGATIONS}")


def clipped_surrogate(logp_new_bgt: jax.Array, logp_old_bgt: jax.Array, advantages_bg: jax.Array,
                      mask_bgt: jax.Array, clip_eps: float = 0.2,
                      clip_eps_high: float | None = None,
                      aggregation: str = "token_mean") -> tuple[jax.Array, dict]:
  """PPO-style clipped policy loss: -min(ratio * A, clip(ratio, 1 - eps, 1 + eps_high) * A).

  Args:
    logp_new_bgt: [B, G, T] log-probabilities of the sampled tokens under the policy being trained.
    logp_old_bgt: [B, G, T] the same under the policy that sampled them (stop-gradient here).
    advantages_bg: [B, G] one advantage per rollout, shared by its tokens (stop-gradient here).
    mask_bgt: [B, G, T] bool, the tokens that count (the sampled SID codes).
    clip_eps: lower clip range, ratio >= 1 - clip_eps.
    clip_eps_high: upper clip range (ratio <= 1 + clip_eps_high); None means clip_eps.
    aggregation: 'token_mean' or 'sequence_mean' (see `aggregate_tokens`).
  Returns:
    (loss, {'clip_fraction': share of counted tokens where the clipped term is the smaller
    objective (no gradient there), 'ratio_mean': mean ratio over counted tokens}).
  """
  clip_eps_high = clip_eps if clip_eps_high is None else clip_eps_high
  logp_old_bgt = jax.lax.stop_gradient(logp_old_bgt.astype(jnp.float32))
  adv_bg1 = jax.lax.stop_gradient(advantages_bg.astype(jnp.float32))[..., None]
  ratio_bgt = jnp.exp(logp_new_bgt.astype(jnp.float32) - logp_old_bgt)
  unclipped_bgt = ratio_bgt * adv_bg1
  clipped_bgt = jnp.clip(ratio_bgt, 1.0 - clip_eps, 1.0 + clip_eps_high) * adv_bg1
  loss_bgt = -jnp.minimum(unclipped_bgt, clipped_bgt)
  return aggregate_tokens(loss_bgt, mask_bgt, aggregation), {
      "clip_fraction": masked_mean(clipped_bgt < unclipped_bgt, mask_bgt),
      "ratio_mean": masked_mean(ratio_bgt, mask_bgt)}


def kl_estimate(logp_policy_bgt: jax.Array, logp_ref_bgt: jax.Array,
                kind: str = "k3") -> jax.Array:
  """Per-token estimate of KL(policy || ref) from the sampled tokens' log-probabilities.

  With x = logp_ref - logp_policy: k1 = -x (unbiased, can be negative); k2 = x^2 / 2;
  k3 = exp(x) - x - 1 (unbiased, >= 0, 0 when equal; the GRPO default). Reduce the result with
  `aggregate_tokens` (or `losses.masked_mean`) over the same mask as the policy loss.

  Returns:
    f32 array of the inputs' shape.
  """
  x = logp_ref_bgt.astype(jnp.float32) - logp_policy_bgt.astype(jnp.float32)
  if kind == "k1":
    return -x
  if kind == "k2":
    return 0.5 * jnp.square(x)
  if kind == "k3":
    return jnp.maximum(jnp.expm1(x) - x, 0.0)  # expm1 keeps small x accurate; max(0) for rounding
  raise ValueError(f"unknown KL estimator {kind!r}; expected one of {KL_KINDS}")


def depth_rewards(rewards_bg: jax.Array, depth_bg: jax.Array, max_depth: int,
                  lambda_step: float) -> jax.Array:
  """Policy Head reward: r - lambda_step * d / K_max (a cost per latent step). [B, G] f32

  `max_depth` (K_max) is clamped to at least 1, so K_max = 0 charges nothing.
  """
  cost_bg = lambda_step * depth_bg.astype(jnp.float32) / jnp.maximum(max_depth, 1)
  return rewards_bg.astype(jnp.float32) - cost_bg


def reinforce_advantages(depth_rewards_bg: jax.Array) -> jax.Array:
  """REINFORCE advantages of the sampled depths with the group mean as baseline. [B, G] f32"""
  return group_advantages(depth_rewards_bg, scale=False)
