"""GRPO math against float64 NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lasar_jax.rl import grpo_math


def _f32(x):
  return jnp.asarray(x, jnp.float32)


def _np_surrogate_tokens(logp_new, logp_old, adv, lo, hi):
  """Per-token -min(ratio * A, clip(ratio) * A), written with explicit branches."""
  ratio = np.exp(logp_new - logp_old)
  a = np.broadcast_to(adv[..., None], ratio.shape)
  out = np.empty_like(ratio)
  clipped = np.zeros(ratio.shape, bool)
  for idx in np.ndindex(ratio.shape):
    r, ai = ratio[idx], a[idx]
    # A > 0: the objective is capped at (1 + hi) A; A < 0: at (1 - lo) A.
    if ai > 0 and r > 1 + hi:
      out[idx], clipped[idx] = -(1 + hi) * ai, True
    elif ai < 0 and r < 1 - lo:
      out[idx], clipped[idx] = -(1 - lo) * ai, True
    else:
      out[idx] = -r * ai
  return out, clipped, ratio


def _np_token_mean(values, mask):
  return (values * mask).sum() / max(mask.sum(), 1)


def _np_sequence_mean(values, mask):
  per_seq = []
  for idx in np.ndindex(mask.shape[:-1]):
    if mask[idx].sum() > 0:
      per_seq.append((values[idx] * mask[idx]).sum() / mask[idx].sum())
  return np.mean(per_seq) if per_seq else 0.0


def test_group_advantages_match_population_std_reference():
  rng = np.random.RandomState(0)
  rewards = rng.rand(4, 6)
  rewards[1] = 0.3  # a constant group
  expected = np.zeros_like(rewards)
  for b in range(4):
    mean = rewards[b].mean()
    std = np.sqrt(((rewards[b] - mean) ** 2).sum() / 6)  # population std, ddof = 0
    expected[b] = (rewards[b] - mean) / (std + 1e-6)
  got = np.asarray(jax.jit(grpo_math.group_advantages)(_f32(rewards)))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  assert np.all(got[1] == 0.0)
  unscaled = np.asarray(grpo_math.group_advantages(_f32(rewards), scale=False))
  np.testing.assert_allclose(unscaled, rewards - rewards.mean(1, keepdims=True), atol=1e-6)


def test_group_advantages_of_binary_rewards():
  got = np.asarray(grpo_math.group_advantages(_f32([[1.0, 0.0, 0.0, 0.0]]), eps=0.0))
  std = np.sqrt(0.75 * 0.25)
  np.testing.assert_allclose(got, [[0.75 / std, -0.25 / std, -0.25 / std, -0.25 / std]],
                             rtol=1e-6)


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean"])
@pytest.mark.parametrize("clip_eps_high", [None, 0.28])
def test_clipped_surrogate_matches_reference(aggregation, clip_eps_high):
  rng = np.random.RandomState(1)
  shape = (3, 4, 5)
  logp_old = -rng.rand(*shape) * 3
  logp_new = logp_old + rng.randn(*shape) * 0.4  # ratios well inside and outside [0.8, 1.2]
  adv = rng.randn(3, 4)
  adv[0, 0] = 0.0
  mask = rng.rand(*shape) > 0.3
  mask[2, 1] = False  # a sequence with no counted token
  hi = 0.2 if clip_eps_high is None else clip_eps_high
  tokens, clipped, ratio = _np_surrogate_tokens(logp_new, logp_old, adv, 0.2, hi)
  # Every branch is exercised on counted tokens.
  a = np.broadcast_to(adv[..., None], shape)
  for branch in (mask & clipped & (a > 0), mask & clipped & (a < 0),
                 mask & ~clipped & (a > 0) & (ratio > 1), mask & ~clipped & (a < 0)):
    assert branch.any()
  agg = _np_token_mean if aggregation == "token_mean" else _np_sequence_mean
  fn = jax.jit(grpo_math.clipped_surrogate, static_argnames=("clip_eps", "clip_eps_high",
                                                              "aggregation"))
  loss, aux = fn(_f32(logp_new), _f32(logp_old), _f32(adv), jnp.asarray(mask),
                 clip_eps=0.2, clip_eps_high=clip_eps_high, aggregation=aggregation)
  np.testing.assert_allclose(float(loss), agg(tokens, mask), rtol=1e-5)
  np.testing.assert_allclose(float(aux["clip_fraction"]), _np_token_mean(clipped, mask), rtol=1e-6)
  np.testing.assert_allclose(float(aux["ratio_mean"]), _np_token_mean(ratio, mask), rtol=1e-5)


def test_aggregation_modes_differ_on_unequal_lengths():
  values = np.array([[1.0, 1.0, 1.0, 1.0], [5.0, 0.0, 0.0, 0.0]])
  mask = np.array([[1, 1, 1, 1], [1, 0, 0, 0]], bool)
  token = grpo_math.aggregate_tokens(_f32(values), jnp.asarray(mask), "token_mean")
  seq = grpo_math.aggregate_tokens(_f32(values), jnp.asarray(mask), "sequence_mean")
  np.testing.assert_allclose(float(token), 9.0 / 5.0, rtol=1e-6)
  np.testing.assert_allclose(float(seq), 3.0, rtol=1e-6)
  assert float(grpo_math.aggregate_tokens(_f32(values), jnp.zeros((2, 4), bool),
                                          "sequence_mean")) == 0.0
  with pytest.raises(ValueError, match="aggregation"):
    grpo_math.aggregate_tokens(_f32(values), jnp.asarray(mask), "sum")


def test_clipped_surrogate_gradient_vanishes_only_where_clipped():
  logp_old = np.log(np.array([[[0.5, 0.5, 0.5, 0.5]]]))
  ratios = np.array([1.5, 1.1, 0.5, 0.9])  # outside above, inside, outside below, inside
  logp_new = logp_old + np.log(ratios)
  adv = np.array([[2.0]])
  mask = jnp.ones((1, 1, 4), bool)
  grad = jax.grad(lambda lp: grpo_math.clipped_surrogate(lp, _f32(logp_old), _f32(adv), mask)[0])(
      _f32(logp_new))
  # d/dlogp of -(ratio * A) / 4 = -ratio * A / 4 where unclipped; A > 0 caps only ratio > 1.2.
  np.testing.assert_allclose(np.asarray(grad)[0, 0], [0.0, -1.1 * 2 / 4, -0.5 * 2 / 4,
                                                      -0.9 * 2 / 4], rtol=1e-5, atol=1e-7)


def test_kl_estimators_match_reference():
  rng = np.random.RandomState(2)
  logp = -rng.rand(4, 7) * 4
  logp_ref = -rng.rand(4, 7) * 4
  x = logp_ref - logp
  expected = {"k1": logp - logp_ref, "k2": 0.5 * (logp - logp_ref) ** 2,
              "k3": np.exp(x) - x - 1}
  for kind, want in expected.items():
    got = np.asarray(jax.jit(grpo_math.kl_estimate, static_argnames="kind")(
        _f32(logp), _f32(logp_ref), kind=kind))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=kind)
  assert np.all(np.asarray(grpo_math.kl_estimate(_f32(logp), _f32(logp_ref))) >= 0)
  for kind in expected:
    assert np.all(np.asarray(grpo_math.kl_estimate(_f32(logp), _f32(logp), kind)) == 0.0)
  with pytest.raises(ValueError, match="KL estimator"):
    grpo_math.kl_estimate(_f32(logp), _f32(logp_ref), "k4")


def test_k3_is_accurate_and_nonnegative_for_tiny_differences():
  logp = np.linspace(-3.0, -0.1, 50)
  delta = np.logspace(-6, -2, 50) * np.where(np.arange(50) % 2, 1, -1)
  got = np.asarray(grpo_math.kl_estimate(_f32(logp), _f32(logp + delta), "k3"), np.float64)
  x = np.asarray(_f32(logp + delta), np.float64) - np.asarray(_f32(logp), np.float64)
  # exp(x) - x - 1 in f32 would be rounding noise of size 1e-7 here.
  np.testing.assert_allclose(got, np.expm1(x) - x, rtol=2e-2, atol=1e-13)
  assert np.all(got >= 0)


def test_k3_mean_estimates_true_kl():
  # Sampling from the policy, the mean of k3 (and of k1) is KL(policy || ref).
  rng = np.random.RandomState(3)
  p = np.array([0.5, 0.3, 0.15, 0.05])
  q = np.array([0.25, 0.25, 0.25, 0.25])
  samples = rng.choice(4, size=200_000, p=p)
  k3 = np.asarray(grpo_math.kl_estimate(_f32(np.log(p[samples])), _f32(np.log(q[samples]))),
                  np.float64)
  np.testing.assert_allclose(k3.mean(), np.sum(p * np.log(p / q)), rtol=2e-2)


def test_depth_rewards_and_reinforce_advantages():
  rng = np.random.RandomState(4)
  rewards = (rng.rand(3, 5) > 0.5).astype(np.float64)
  depth = rng.randint(0, 5, (3, 5))
  expected = rewards - 0.2 * depth / 4
  got = np.asarray(jax.jit(grpo_math.depth_rewards, static_argnums=2)(
      _f32(rewards), jnp.asarray(depth), 4, 0.2))
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
  adv = np.asarray(grpo_math.reinforce_advantages(_f32(expected)))
  np.testing.assert_allclose(adv, expected - expected.mean(1, keepdims=True), atol=1e-6)
  np.testing.assert_allclose(adv.sum(1), 0.0, atol=1e-6)
  # Equal rewards: the shallower rollout gets the positive advantage.
  adv2 = np.asarray(grpo_math.reinforce_advantages(
      grpo_math.depth_rewards(_f32([[1.0, 1.0]]), jnp.asarray([[1, 3]]), 4, 0.5)))
  np.testing.assert_allclose(adv2, [[0.125, -0.125]], rtol=1e-6)
  # K_max = 0 charges nothing.
  np.testing.assert_allclose(np.asarray(grpo_math.depth_rewards(
      _f32([[0.5]]), jnp.asarray([[0]]), 0, 1.0)), [[0.5]])
