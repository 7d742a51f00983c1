"""Rollout rewards for GRPO (METHOD.md section 4): the target item, optional SID-prefix credit."""

import jax
import jax.numpy as jnp


def matched_prefix_length(sampled_codes: jax.Array, target_codes: jax.Array) -> jax.Array:
  """Number of leading SID codes the sample shares with the target. [...] int32 in 0..L"""
  same_l = sampled_codes == target_codes  # [..., L]
  return jnp.sum(jnp.cumprod(same_l.astype(jnp.int32), axis=-1), axis=-1)


def sid_reward(sampled_codes: jax.Array, target_codes: jax.Array, exact_reward: float = 1.0,
               prefix_credit: tuple[float, ...] = ()) -> jax.Array:
  """Reward of each sampled SID: `exact_reward` for the target, else credit by matched prefix.

  Args:
    sampled_codes: [..., L] int codes of the sampled SIDs (a failed sample may hold -1s).
    target_codes: [..., L] int codes of the target item's SID (broadcasts against the samples,
      e.g. [B, 1, L] targets for [B, G, L] rollouts).
    exact_reward: reward when all L codes match.
    prefix_credit: () for exact-match only, or L values: entry m is the reward when exactly the
      first m codes match (m = 0..L-1), e.g. (0.0, 0.1, 0.3) for L = 3. Static (a tuple).
  Returns:
    [...] f32 rewards. Jit-able with `prefix_credit` and `exact_reward` fixed.
  """
  length = sampled_codes.shape[-1]
  if prefix_credit and len(prefix_credit) != length:
    raise ValueError(f"prefix_credit has {len(prefix_credit)} values; SIDs have {length} codes, "
                     f"so give {length} (credit for 0..{length - 1} matched codes) or none")
  credit_m = jnp.asarray(tuple(prefix_credit or (0.0,) * length) + (exact_reward,), jnp.float32)
  return credit_m[matched_prefix_length(sampled_codes, target_codes)]


def expected_sid_reward(path_logq_l: jax.Array, exact_reward: float = 1.0,
                        prefix_credit: tuple[float, ...] = ()) -> jax.Array:
  """Expected `sid_reward` of one sample, from the target's path log-probs.

  Args:
    path_logq_l: [..., L] f32 log-prob of each target code given the target codes before it,
      under the sampling distribution (`sampling.sid_path_log_probs` of the target's codes).
    exact_reward, prefix_credit: as in `sid_reward`.
  Returns:
    [...] f32: sum over m of reward(m) * P(exactly m leading codes match), where
    P(at least m match) = exp(sum of the first m path log-probs).
  """
  length = path_logq_l.shape[-1]
  if prefix_credit and len(prefix_credit) != length:
    raise ValueError(f"prefix_credit has {len(prefix_credit)} values; SIDs have {length} codes")
  at_least_m = jnp.exp(jnp.cumsum(path_logq_l.astype(jnp.float32), axis=-1))  # m = 1 .. L
  at_least_m = jnp.concatenate([jnp.ones_like(at_least_m[..., :1]), at_least_m], axis=-1)
  exactly_m = at_least_m[..., :-1] - at_least_m[..., 1:]  # m = 0 .. L-1
  credit_m = jnp.asarray(tuple(prefix_credit or (0.0,) * length), jnp.float32)
  return jnp.sum(exactly_m * credit_m, axis=-1) + exact_reward * at_least_m[..., -1]
