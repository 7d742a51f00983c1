"""Policy Head: a small MLP over the prompt's last hidden state, categorical over depths 0..K_max.

Trained by cross entropy against the CoT length in Stage 2 and by REINFORCE in RL; at inference
it picks the latent depth. Its parameters are separate from the backbone's (`init_policy_head`).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from lasar_jax.losses import masked_mean


class PolicyHead(nn.Module):
  """h [B, D] -> logits [B, max_depth + 1] f32 over depths 0..max_depth."""

  max_depth: int  # K_max: the largest depth the head can choose
  hidden_features: int = 256  # width of the MLP's hidden layer
  stop_input_gradient: bool = True  # the head's losses do not train the backbone

  @nn.compact
  def __call__(self, h_bd: jax.Array) -> jax.Array:
    x_bd = h_bd.astype(jnp.float32)
    if self.stop_input_gradient:
      x_bd = jax.lax.stop_gradient(x_bd)
    init = nn.initializers.lecun_normal()
    x_bf = nn.Dense(self.hidden_features, name="hidden",
                    kernel_init=nn.with_logical_partitioning(init, ("embed", "mlp")))(x_bd)
    return nn.Dense(self.max_depth + 1, name="out",
                    kernel_init=nn.with_logical_partitioning(init, ("mlp", None)))(nn.gelu(x_bf))


def init_policy_head(head: PolicyHead, key: jax.Array, hidden_size: int):
  """Parameters of `head` for backbone width `hidden_size` (kernels boxed with logical axes)."""
  return head.init(key, jnp.zeros((1, hidden_size)))["params"]


def _log_probs(logits_bk: jax.Array) -> jax.Array:
  """Log-probabilities of every depth, in f32. [B, K+1]"""
  return jax.nn.log_softmax(logits_bk.astype(jnp.float32), axis=-1)


def _pick(logp_bk: jax.Array, depth_b: jax.Array) -> jax.Array:
  """Log-probability of each row's `depth_b`. [B]"""
  return jnp.take_along_axis(logp_bk, depth_b[:, None], axis=-1)[:, 0]


def policy_loss(logits_bk: jax.Array, target_depth_b: jax.Array,
                mask_b: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """Cross entropy of the target depth (Stage 2: the CoT length, clipped to 0..K_max by the caller).

  Returns:
    (loss: mean over rows in `mask_b` (all when None), {'accuracy': argmax accuracy}).
  """
  mask_b = jnp.ones(target_depth_b.shape, bool) if mask_b is None else mask_b
  nll_b = -_pick(_log_probs(logits_bk), target_depth_b)
  correct_b = jnp.argmax(logits_bk, axis=-1) == target_depth_b
  return masked_mean(nll_b, mask_b), {"accuracy": masked_mean(correct_b, mask_b)}


def choose_depth(logits_bk: jax.Array, mode: str = "argmax",
                 key: jax.Array | None = None) -> jax.Array:
  """Depth per row: the most likely one ('argmax'), or one drawn with `key` ('sample'). [B] int32"""
  if mode == "argmax":
    return jnp.argmax(logits_bk, axis=-1).astype(jnp.int32)
  if mode == "sample":
    if key is None:
      raise ValueError("choose_depth(mode='sample') needs a key")
    return jax.random.categorical(key, logits_bk.astype(jnp.float32), axis=-1).astype(jnp.int32)
  raise ValueError(f"unknown depth mode {mode!r}; expected 'argmax' or 'sample'")


def reinforce_loss(logits_bk: jax.Array, sampled_depth_b: jax.Array, advantage_b: jax.Array,
                   mask_b: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """REINFORCE: -mean(advantage * log pi(sampled depth)); the advantage is a constant.

  Args:
    logits_bk: [B, K+1] head logits of the prompts the depths were sampled for.
    sampled_depth_b: [B] int depths the rollouts used.
    advantage_b: [B] reward minus the caller's baseline (e.g. the group mean of
      `r - lambda_step * d / K_max`); stop-gradient is applied here.
    mask_b: [B] bool rows to count, or None for all.

  Returns:
    (loss, {'entropy': mean entropy of the head's categorical over the counted rows}).
  """
  mask_b = jnp.ones(sampled_depth_b.shape, bool) if mask_b is None else mask_b
  advantage_b = jax.lax.stop_gradient(advantage_b.astype(jnp.float32))
  logp_bk = _log_probs(logits_bk)
  entropy_b = -jnp.sum(jnp.exp(logp_bk) * logp_bk, axis=-1)
  loss = masked_mean(-advantage_b * _pick(logp_bk, sampled_depth_b), mask_b)
  return loss, {"entropy": masked_mean(entropy_b, mask_b)}
