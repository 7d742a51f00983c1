"""Policy Head: shapes, cross entropy against NumPy, REINFORCE direction, seeded sampling."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lasar_jax.reasoning import policy_head as ph

K_MAX, D = 5, 16
FAST_COMPILE = {"xla_backend_optimization_level": 0}  # faster CPU compiles; same f32 math
HEAD = ph.PolicyHead(max_depth=K_MAX, hidden_features=32)
PARAMS = nn.meta.unbox(jax.jit(functools.partial(ph.init_policy_head, HEAD, hidden_size=D),
                               compiler_options=FAST_COMPILE)(jax.random.key(0)))
H = jax.random.normal(jax.random.key(1), (6, D))


def test_shapes_and_logical_axes():
  logits = HEAD.apply({"params": PARAMS}, H)
  assert logits.shape == (6, K_MAX + 1) and logits.dtype == jnp.float32
  init = functools.partial(ph.init_policy_head, HEAD, hidden_size=D)
  boxed = jax.eval_shape(init, jax.random.key(0))
  assert tuple(nn.get_partition_spec(boxed)["hidden"]["kernel"]) == ("embed", "mlp")
  depth = ph.choose_depth(logits)
  assert depth.shape == (6,) and depth.dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(depth), np.asarray(logits).argmax(-1))


def test_policy_loss_matches_numpy():
  rng = np.random.RandomState(0)
  logits, target = rng.randn(6, K_MAX + 1) * 2, rng.randint(0, K_MAX + 1, 6)
  mask = np.array([1, 1, 0, 1, 0, 1], bool)
  z = logits - logits.max(-1, keepdims=True)
  nll = -(z - np.log(np.exp(z).sum(-1, keepdims=True)))[np.arange(6), target]
  loss, metrics = ph.policy_loss(jnp.asarray(logits, jnp.float32), jnp.asarray(target),
                                 jnp.asarray(mask))
  np.testing.assert_allclose(float(loss), nll[mask].mean(), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["accuracy"]),
                             (logits.argmax(-1) == target)[mask].mean(), rtol=1e-6)
  full, _ = ph.policy_loss(jnp.asarray(logits, jnp.float32), jnp.asarray(target))
  np.testing.assert_allclose(float(full), nll.mean(), rtol=1e-5)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_reinforce_step_moves_sampled_depth_with_the_advantage(sign):
  sampled = jnp.asarray([0, 3, 5, 2, 2, 1])
  advantage = sign * jnp.ones(6)

  def log_prob(params):
    logp = jax.nn.log_softmax(HEAD.apply({"params": params}, H))
    return jnp.take_along_axis(logp, sampled[:, None], axis=1)[:, 0]  # [B]

  def loss(params):
    return ph.reinforce_loss(HEAD.apply({"params": params}, H), sampled, advantage)[0]

  grads = jax.jit(jax.grad(loss), compiler_options=FAST_COMPILE)(PARAMS)
  stepped = optax.apply_updates(PARAMS, jax.tree.map(lambda g: -0.05 * g, grads))
  change = float(jnp.mean(log_prob(stepped) - log_prob(PARAMS)))
  assert sign * change > 1e-4
  _, metrics = ph.reinforce_loss(HEAD.apply({"params": PARAMS}, H), sampled, advantage)
  assert 0.0 < float(metrics["entropy"]) <= np.log(K_MAX + 1) + 1e-6


def test_sampling_is_deterministic_given_a_key():
  logits = jnp.tile(jnp.zeros((1, K_MAX + 1)), (256, 1))  # uniform: samples must spread
  a = ph.choose_depth(logits, "sample", jax.random.key(7))
  b = ph.choose_depth(logits, "sample", jax.random.key(7))
  c = ph.choose_depth(logits, "sample", jax.random.key(8))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert (np.asarray(a) != np.asarray(c)).any()
  assert set(np.asarray(a).tolist()) == set(range(K_MAX + 1))
  with pytest.raises(ValueError):
    ph.choose_depth(logits, "sample")
  with pytest.raises(ValueError):
    ph.choose_depth(logits, "greedy")
