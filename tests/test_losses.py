"""Losses against float64 NumPy references."""

import jax.numpy as jnp
import numpy as np

from lasar_jax import losses


def test_token_cross_entropy_matches_float64_reference():
  rng = np.random.RandomState(0)
  logits = rng.randn(3, 5, 11) * 3
  targets = rng.randint(0, 11, (3, 5))
  mask = rng.rand(3, 5) > 0.4
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
  expected = (nll * mask).sum() / mask.sum()
  loss, metrics = losses.token_cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(targets),
                                             jnp.asarray(mask))
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  assert int(metrics["tokens"]) == mask.sum()
  np.testing.assert_allclose(float(metrics["accuracy"]),
                             ((logits.argmax(-1) == targets) * mask).sum() / mask.sum(), rtol=1e-6)


def test_masked_mean_of_empty_mask_is_zero():
  assert float(losses.masked_mean(jnp.ones((2, 3)), jnp.zeros((2, 3), bool))) == 0.0
