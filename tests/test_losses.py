"""Losses against float64 NumPy references, and the gathered-head response loss against the full one."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lasar_jax import losses
from lasar_jax.model import transformer
from lasar_jax.model.config import PRESETS
from lasar_jax.sft import losses as sft_losses


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


def test_response_loss_on_gathered_targets_equals_full_head():
  """The LM head on each row's loss positions only gives the full-head loss and gradients."""
  cfg = PRESETS["tiny"].replace(num_layers=1, vocab_size=50)
  params = nn.meta.unbox(transformer.init_params(cfg, jax.random.key(0)))
  rng = np.random.RandomState(1)
  lengths, starts = np.array([12, 7, 10, 3]), np.array([8, 2, 9, 1])  # rows right padded to 12
  mask = np.arange(12)[None, :] < lengths[:, None]
  loss_mask = mask & (np.arange(12)[None, :] >= starts[:, None])
  batch = {"tokens": jnp.asarray(rng.randint(0, 50, (4, 12)) * mask),
           "mask": jnp.asarray(mask), "loss_mask": jnp.asarray(loss_mask)}
  examples = [{"loss_mask": row[:n]} for row, n in zip(loss_mask, lengths)]
  max_targets = sft_losses.max_response_targets(examples)
  assert max_targets == 5  # row 1: loss tokens 2..6, fewer than the 11 predicted positions
  value_and_grad = lambda fn: jax.value_and_grad(fn, has_aux=True)(params, batch, None)  # noqa: E731
  (full, _), full_grads = value_and_grad(sft_losses.response_loss_fn(cfg))
  (gathered, _), gathered_grads = value_and_grad(sft_losses.response_loss_fn(cfg, max_targets))
  np.testing.assert_allclose(float(gathered), float(full), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(gathered_grads), jax.tree.leaves(full_grads)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)
