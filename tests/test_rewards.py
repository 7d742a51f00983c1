"""SID rewards: exact match and prefix credit against a Python loop; expected rewards against a sum
over every SID."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lasar_jax.rl import rewards


def _reference(sampled, target, exact, credit):
  out = np.zeros(sampled.shape[:-1])
  for idx in np.ndindex(sampled.shape[:-1]):
    m = 0
    while m < sampled.shape[-1] and sampled[idx][m] == target[idx][m]:
      m += 1
    out[idx] = exact if m == sampled.shape[-1] else (credit[m] if credit else 0.0)
  return out


@pytest.mark.parametrize("credit", [(), (0.0, 0.1, 0.3)])
def test_sid_reward_matches_loop(credit):
  rng = np.random.RandomState(0)
  target = rng.randint(0, 3, (4, 1, 3))
  sampled = rng.randint(0, 3, (4, 6, 3))  # small codebooks: every prefix length occurs
  sampled[0, 0] = target[0, 0]
  sampled[1, 0] = -1  # a failed sample
  target_b = np.broadcast_to(target, sampled.shape)
  m = (np.cumprod(sampled == target_b, axis=-1)).sum(-1)
  assert set(m.ravel()) == {0, 1, 2, 3}
  fn = jax.jit(rewards.sid_reward, static_argnames=("exact_reward", "prefix_credit"))
  got = np.asarray(fn(jnp.asarray(sampled), jnp.asarray(target), exact_reward=1.0,
                      prefix_credit=credit))
  np.testing.assert_allclose(got, _reference(sampled, target_b, 1.0, credit), rtol=1e-6)
  assert got[0, 0] == 1.0 and got[1, 0] == 0.0


def test_sid_reward_credit_is_for_the_leading_codes_only():
  target = jnp.asarray([5, 6, 7])
  sampled = jnp.asarray([[5, 6, 7], [5, 6, 0], [5, 0, 7], [0, 6, 7], [9, 9, 9]])
  got = rewards.sid_reward(sampled, target, exact_reward=2.0, prefix_credit=(0.05, 0.1, 0.3))
  np.testing.assert_allclose(np.asarray(got), [2.0, 0.3, 0.1, 0.05, 0.05], rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(rewards.matched_prefix_length(sampled, target)),
                                [3, 2, 1, 0, 0])


def test_sid_reward_rejects_credit_of_wrong_length():
  with pytest.raises(ValueError, match="prefix_credit has 2 values; SIDs have 3 codes"):
    rewards.sid_reward(jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 3), jnp.int32),
                       prefix_credit=(0.0, 0.1))


@pytest.mark.parametrize("credit", [(), (0.0, 0.1, 0.3)])
def test_expected_sid_reward_equals_sum_over_every_sid(credit):
  """E[reward] from the target's path log-probs equals the sum of P(s) * reward(s) over every SID
  of a random distribution on a full 3 x 4 x 2 code tree."""
  rng = np.random.default_rng(1)
  sids = np.array(list(np.ndindex(3, 4, 2)))  # [24, 3]
  for _ in range(4):
    p = rng.dirichlet(np.full(len(sids), 0.5))
    target = sids[rng.integers(len(sids))]
    prefix_p = [p[(sids[:, :m] == target[:m]).all(1)].sum() for m in range(4)]  # m = 0 .. 3
    path_logq = np.log(np.array(prefix_p[1:]) / np.array(prefix_p[:-1]))  # [3]
    expected = sum(pi * r for pi, r in zip(p, _reference(sids, np.broadcast_to(
        target, sids.shape), 2.0, credit)))
    got = rewards.expected_sid_reward(jnp.asarray(path_logq, jnp.float32), exact_reward=2.0,
                                      prefix_credit=credit)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5, atol=1e-7)
