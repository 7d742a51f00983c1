"""Step-wise alignment of latent steps to CoT hidden-state anchors (bidirectional KL, METHOD.md 4).

BKL(h, a) = KL(p||q) + KL(q||p), with p and q the LM-head softmax at temperature tau of the latent
hidden state h and of the anchor a. It equals sum_v (p_v - q_v)(log p_v - log q_v), computed so,
in f32 from log-softmaxes: every term is non-negative. The anchor side is a fixed target: anchors
and their logits pass through `jax.lax.stop_gradient`, so only the latent side is trained.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from lasar_jax.losses import masked_mean

HeadFn = Callable[[jax.Array], jax.Array]  # hidden [B, T, D] -> logits [B, T, V]


def bkl_from_logits(logits_p: jax.Array, logits_q: jax.Array, tau: float = 1.0) -> jax.Array:
  """KL(p||q) + KL(q||p) over the last axis, p = softmax(logits_p / tau), q likewise. [...] f32"""
  logp = jax.nn.log_softmax(logits_p.astype(jnp.float32) / tau, axis=-1)
  logq = jax.nn.log_softmax(logits_q.astype(jnp.float32) / tau, axis=-1)
  return jnp.sum((jnp.exp(logp) - jnp.exp(logq)) * (logp - logq), axis=-1)


def bidirectional_kl(h_bkd: jax.Array, a_bkd: jax.Array, head_fn: HeadFn, tau: float,
                     mask_bk: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean BKL between latent step k and anchor k over the valid (row, step) pairs.

  Args:
    h_bkd: [B, K, D] latent hidden states (e.g. `LatentForward.latent_hidden_bkd`).
    a_bkd: [B, K, D] anchors a_k; stop-gradient is applied here (to them and to their logits).
    head_fn: the LM head, hidden [B, T, D] -> logits [B, T, V].
    tau: softmax temperature of both distributions.
    mask_bk: [B, K] bool, True where the pair counts (k < depth and anchor k exists).

  Returns:
    (loss: mean over valid pairs, 0 when none; per_step [K]: mean over the valid rows of each
    step, 0 for a step with none).
  """
  anchor_logits = jax.lax.stop_gradient(head_fn(jax.lax.stop_gradient(a_bkd)))
  bkl_bk = bkl_from_logits(head_fn(h_bkd), anchor_logits, tau)
  mask_bk = mask_bk.astype(jnp.float32)
  per_step_k = jnp.sum(bkl_bk * mask_bk, axis=0) / jnp.maximum(jnp.sum(mask_bk, axis=0), 1.0)
  return masked_mean(bkl_bk, mask_bk), per_step_k


def last_anchor(a_bkd: jax.Array, num_anchors_b: jax.Array) -> jax.Array:
  """Each row's last anchor a_K, K = num_anchors_b (row 0's first anchor when it has none). [B, D]"""
  last_b = jnp.maximum(num_anchors_b - 1, 0)
  return jnp.take_along_axis(a_bkd, last_b[:, None, None], axis=1)[:, 0]


def terminal_bkl(h_final_bd: jax.Array, a_bkd: jax.Array, num_anchors_b: jax.Array,
                 head_fn: HeadFn, tau: float,
                 mask_b: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Terminal-only alignment for RL: BKL(final latent hidden, last anchor a_K) per row.

  Args:
    h_final_bd: [B, D] hidden state of each rollout's last latent step.
    a_bkd: [B, K, D] anchors (stop-gradient applied here).
    num_anchors_b: [B] int anchors per row; rows with none are excluded.
    head_fn: the LM head, hidden [B, T, D] -> logits [B, T, V].
    tau: softmax temperature.
    mask_b: [B] bool, further rows to count (e.g. depth > 0), or None for all.

  Returns:
    (loss: mean over counted rows, 0 when none; per_row [B]: BKL of every row, counted or not).
  """
  a_last_b1d = last_anchor(a_bkd, num_anchors_b)[:, None]
  anchor_logits = jax.lax.stop_gradient(head_fn(jax.lax.stop_gradient(a_last_b1d)))
  per_row_b = bkl_from_logits(head_fn(h_final_bd[:, None]), anchor_logits, tau)[:, 0]
  valid_b = num_anchors_b > 0
  if mask_b is not None:
    valid_b = valid_b & mask_b
  return masked_mean(per_row_b, valid_b), per_row_b
