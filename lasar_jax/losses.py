"""Loss functions: pure, over explicit masks, computed in f32, returning (loss, metrics)."""

import jax
import jax.numpy as jnp


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of `values` where `mask` is true; 0 when nothing is selected (denominator clamped)."""
  mask = mask.astype(jnp.float32)
  return jnp.sum(values.astype(jnp.float32) * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def token_cross_entropy(logits_btv: jax.Array, targets_bt: jax.Array,
                        mask_bt: jax.Array) -> tuple[jax.Array, dict]:
  """Mean next-token cross entropy over the positions selected by `mask_bt`.

  Args:
    logits_btv: [B, T, V] logits predicting `targets_bt`.
    targets_bt: [B, T] int target ids.
    mask_bt: [B, T] bool, which positions count (e.g. response tokens only).
  Returns:
    (loss, {'tokens': number of counted positions, 'accuracy': argmax accuracy on them}).
  """
  logp_btv = jax.nn.log_softmax(logits_btv.astype(jnp.float32), axis=-1)
  nll_bt = -jnp.take_along_axis(logp_btv, targets_bt[..., None], axis=-1)[..., 0]
  correct_bt = jnp.argmax(logits_btv, axis=-1) == targets_bt
  return masked_mean(nll_bt, mask_bt), {"tokens": jnp.sum(mask_bt),
                                        "accuracy": masked_mean(correct_bt, mask_bt)}
