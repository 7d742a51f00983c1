"""Bidirectional KL alignment against float64 NumPy references, and its basic properties."""

import jax
import jax.numpy as jnp
import numpy as np

from lasar_jax.reasoning import alignment

B, K, D, V = 3, 4, 6, 11
RNG = np.random.RandomState(0)
HEAD_DV = RNG.randn(D, V)  # a fixed linear LM head


def head_fn(hidden_btd):
  """Linear LM head used by the tests. [B, T, V]"""
  return jnp.einsum("BTD,DV->BTV", hidden_btd, jnp.asarray(HEAD_DV, jnp.float32))


def _np_bkl(logits_p, logits_q, tau):
  """float64 reference: KL(p||q) + KL(q||p) with explicit sums. [...]"""
  def logsoftmax(x):
    z = x / tau - (x / tau).max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))
  logp, logq = logsoftmax(np.float64(logits_p)), logsoftmax(np.float64(logits_q))
  p, q = np.exp(logp), np.exp(logq)
  return (p * (logp - logq)).sum(-1) + (q * (logq - logp)).sum(-1)


def _bkl(h, a, tau, mask):
  """`alignment.bidirectional_kl` with the test head, on NumPy inputs (as f32)."""
  return alignment.bidirectional_kl(jnp.asarray(h, jnp.float32), jnp.asarray(a, jnp.float32),
                                    head_fn, tau, jnp.asarray(mask, bool))


def test_bkl_from_logits_properties():
  a, b = jnp.asarray(RNG.randn(5, V) * 3), jnp.asarray(RNG.randn(5, V) * 3)
  ab = np.asarray(alignment.bkl_from_logits(a, b, 0.7))
  np.testing.assert_allclose(ab, np.asarray(alignment.bkl_from_logits(b, a, 0.7)), rtol=1e-6)
  assert (ab > 0.1).all()
  np.testing.assert_allclose(ab, _np_bkl(np.asarray(a), np.asarray(b), 0.7), rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(alignment.bkl_from_logits(a, a)), 0.0)
  near = np.asarray(alignment.bkl_from_logits(a, a + 1e-3 * b))
  assert (near >= 0).all() and near.max() < 1e-4


def test_bidirectional_kl_matches_float64_reference_with_temperature_and_mask():
  h, a = RNG.randn(B, K, D), RNG.randn(B, K, D)
  mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], bool)  # step 3 valid for row 1 only
  for tau in (1.0, 2.5):
    loss, per_step = _bkl(h, a, tau, mask)
    ref_bk = _np_bkl(h @ HEAD_DV, a @ HEAD_DV, tau)
    np.testing.assert_allclose(float(loss), ref_bk[mask].mean(), rtol=1e-5)
    ref_k = [ref_bk[mask[:, k], k].mean() for k in range(K)]
    np.testing.assert_allclose(np.asarray(per_step), ref_k, rtol=1e-5)
  assert float(_bkl(h, a, 2.5, mask)[0]) < float(_bkl(h, a, 1.0, mask)[0])  # flatter when hotter
  np.testing.assert_allclose(float(_bkl(a, h, 1.0, mask)[0]), float(_bkl(h, a, 1.0, mask)[0]),
                             rtol=1e-6)
  same, same_k = _bkl(h, h, 1.0, mask)
  assert float(same) == 0.0 and not np.asarray(same_k).any()
  empty, empty_k = _bkl(h, a, 1.0, np.zeros((B, K), bool))
  assert float(empty) == 0.0 and not np.asarray(empty_k).any()


def test_anchors_get_no_gradient_latents_do():
  h, a = jnp.asarray(RNG.randn(B, K, D)), jnp.asarray(RNG.randn(B, K, D))
  mask = jnp.ones((B, K), bool)
  g_h, g_a = jax.grad(lambda h, a: alignment.bidirectional_kl(h, a, head_fn, 1.0, mask)[0],
                      argnums=(0, 1))(h, a)
  assert np.abs(np.asarray(g_h)).max() > 1e-3
  np.testing.assert_array_equal(np.asarray(g_a), 0.0)


def test_terminal_bkl_uses_each_rows_last_anchor():
  h_final, a = RNG.randn(B, D), RNG.randn(B, K, D)
  num_anchors = jnp.asarray([2, 4, 0])
  loss, per_row = alignment.terminal_bkl(jnp.asarray(h_final), jnp.asarray(a), num_anchors,
                                         head_fn, 1.5)
  ref = _np_bkl(h_final @ HEAD_DV, np.stack([a[0, 1], a[1, 3], a[2, 0]]) @ HEAD_DV, 1.5)
  np.testing.assert_allclose(np.asarray(per_row), ref, rtol=1e-5)
  np.testing.assert_allclose(float(loss), ref[:2].mean(), rtol=1e-5)  # row 2 has no anchor
  masked, _ = alignment.terminal_bkl(jnp.asarray(h_final), jnp.asarray(a), num_anchors, head_fn,
                                     1.5, mask_b=jnp.asarray([False, True, True]))
  np.testing.assert_allclose(float(masked), ref[1], rtol=1e-5)
