"""The latent loop (Coconut-style): hidden states fed back as input embeddings, in one `lax.scan`.

Shape letters as in `lasar_jax.model.transformer`, plus K = `max_depth` latent steps and
S = suffix columns.

Slot and position layout of one row (P prefill columns, right padding allowed):

  slots     0 .. P-1           P .. P+K-1             P+K .. P+K+S-1
  content   prompt + <bot>     latent steps 0..K-1    suffix (<eot>, SID tokens, or decoding)
  valid     real tokens        step i < depth[b]      real suffix tokens

Step i always writes slot P+i, so every row uses the same slots and the loop has static shapes;
depth is data (a traced [B] int array), so one compilation serves every depth mixture. A row past
its depth writes an *invalid* slot (attention never sees it) and keeps its hidden state and next
position, so the RoPE positions of a row's real tokens stay contiguous (prompt 0..n-1, latents
n..n+d-1, suffix from n+d) whatever its depth and whatever the other rows do.
"""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from lasar_jax.model.config import ModelConfig
from lasar_jax.model.transformer import Decoder, KVCache, init_cache, positions_from_mask


def _identity_init(key, shape, dtype):
  """Initializer of a square kernel to the identity (`key` unused)."""
  del key
  return jnp.eye(*shape, dtype=dtype)


class LatentProjection(nn.Module):
  """Learned map from a fed-back hidden state to the next input embedding: h W + b.

  Initialized to the identity, so training starts from plain Coconut feedback.
  """

  cfg: ModelConfig

  @nn.compact
  def __call__(self, h_bd: jax.Array) -> jax.Array:
    d = self.cfg.hidden_size
    param_dtype, dtype = jnp.dtype(self.cfg.param_dtype), jnp.dtype(self.cfg.dtype)
    kernel_init = nn.with_logical_partitioning(_identity_init, ("embed", None))
    w_dd = self.param("kernel", kernel_init, (d, d), param_dtype)
    b_d = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, (None,)), (d,),
                     param_dtype)
    out_bd = jnp.einsum("BD,DE->BE", h_bd.astype(dtype), jnp.asarray(w_dd, dtype))
    return out_bd + jnp.asarray(b_d, dtype)  # [B, D]


def init_projection(cfg: ModelConfig, key: jax.Array):
  """Parameters of a `LatentProjection` (boxed with logical axes, like the backbone's)."""
  return LatentProjection(cfg).init(key, jnp.zeros((1, cfg.hidden_size)))["params"]


@flax.struct.dataclass
class LatentResult:
  """What `run_latent_steps` returns."""

  hidden_bkd: jax.Array  # [B, K, D] hidden state produced by step k; zeros where k >= depth[b]
  final_hidden_bd: jax.Array  # [B, D] hidden of the row's last real step (h0 when depth is 0)
  cache: KVCache  # input cache plus slots cache_index .. cache_index+K-1 (valid iff k < depth[b])
  next_cache_index: jax.Array  # int32 scalar: cache_index + K, the first slot after the latents
  next_pos_b: jax.Array  # [B] int32: pos0 + min(depth, K), the RoPE position of the next token


@flax.struct.dataclass
class LatentCarry:
  """Carry of the latent scan."""

  cache: KVCache  # prefill plus the latent slots written so far
  hidden_bd: jax.Array  # [B, D] last hidden of each row, fed back at the next step
  position_b: jax.Array  # [B] int32 RoPE position the row's next real step gets


@flax.struct.dataclass
class LatentForward:
  """What `latent_forward` returns (teacher-forced Stage-2 forward)."""

  suffix_logits_bsv: jax.Array  # [B, S, V] f32 logits at the suffix columns (s predicts s+1)
  latent_hidden_bkd: jax.Array  # [B, K, D] per-step latent hidden states (zeros past depth)
  final_hidden_bd: jax.Array  # [B, D] hidden of the last real latent step (= prompt's at depth 0)
  prompt_hidden_bd: jax.Array  # [B, D] hidden at the last prefill column (<bot>): Policy Head input


def _last_real(values_btd: jax.Array, mask_bt: jax.Array) -> jax.Array:
  """The column of each row at its last real position (padding anywhere allowed). [B, D]"""
  last_b = mask_bt.shape[1] - 1 - jnp.argmax(mask_bt[:, ::-1], axis=1)
  return jnp.take_along_axis(values_btd, last_b[:, None, None], axis=1)[:, 0]


def prefill(params, cfg: ModelConfig, tokens_bt: jax.Array, mask_bt: jax.Array, cache: KVCache):
  """Writes `[prompt, <bot>]` into slots 0..T-1 of `cache`.

  Args:
    params: decoder parameters.
    cfg: the decoder's ModelConfig.
    tokens_bt: [B, T] int prefill ids, the last real one of each row being `<bot>`.
    mask_bt: [B, T] bool, True on real tokens; every row needs one.
    cache: a cache with at least T + K (+ whatever follows) slots.

  Returns:
    (h0_bd [B, D] hidden at each row's last real column, pos0_b [B] int32 real tokens per row,
    updated cache). The next free slot is T.
  """
  _, hidden_btd, cache = Decoder(cfg).apply(
      {"params": params}, tokens_bt, positions=positions_from_mask(mask_bt), mask=mask_bt,
      cache=cache, cache_index=0, return_logits=False)
  return _last_real(hidden_btd, mask_bt), jnp.sum(mask_bt, axis=1, dtype=jnp.int32), cache


def run_latent_steps(params, cfg: ModelConfig, cache: KVCache, cache_index, h0_bd: jax.Array,
                     pos0_b: jax.Array, depth_b: jax.Array, max_depth: int, projection=None,
                     remat: bool = False) -> LatentResult:
  """Runs `max_depth` latent steps as one `lax.scan`, each row stopping at its own depth.

  Step i feeds each row's current hidden state (through `projection` when given) as the input
  embedding of slot `cache_index + i`. Rows with `i < depth_b` write a valid slot at their next
  position and take the new hidden state; the others write an invalid slot and keep both.

  Args:
    params: decoder parameters.
    cfg: the decoder's ModelConfig.
    cache: a cache holding the prefill; needs `cache_index + max_depth` slots at least.
    cache_index: int scalar (may be traced), the first latent slot (the prefill length).
    h0_bd: [B, D] hidden state at each row's last prefill column (`<bot>`).
    pos0_b: [B] int RoPE position of each row's first latent step (its real prefill tokens).
    depth_b: [B] int latent steps per row, in 0..max_depth (data: no recompilation).
    max_depth: static K, the scan length.
    projection: `LatentProjection` params, or None to feed hidden states back unchanged.
    remat: wrap the step in `jax.checkpoint` (training): the backward pass recomputes each
      step's activations from its carry instead of storing them (each step's carry, the
      cache included, is still kept).

  Returns:
    a `LatentResult`. Its `hidden_bkd` holds zeros at inactive steps (k >= depth_b).
  """
  model = Decoder(cfg)

  def feed(h_bd):
    if projection is None:
      return h_bd
    return LatentProjection(cfg).apply({"params": projection}, h_bd)

  def step(carry: LatentCarry, i):
    active_b = i < depth_b  # [B]
    _, hidden_b1d, cache = model.apply(
        {"params": params}, embeds=feed(carry.hidden_bd)[:, None],
        positions=carry.position_b[:, None], mask=active_b[:, None], cache=carry.cache,
        cache_index=cache_index + i, return_logits=False)
    hidden_bd = hidden_b1d[:, 0]
    carry = LatentCarry(cache=cache,
                        hidden_bd=jnp.where(active_b[:, None], hidden_bd, carry.hidden_bd),
                        position_b=carry.position_b + active_b.astype(jnp.int32))
    return carry, jnp.where(active_b[:, None], hidden_bd, jnp.zeros_like(hidden_bd))

  if remat:
    step = jax.checkpoint(step, prevent_cse=False)
  carry = LatentCarry(cache=cache, hidden_bd=h0_bd.astype(jnp.dtype(cfg.dtype)),
                      position_b=jnp.asarray(pos0_b, jnp.int32))
  carry, hidden_kbd = jax.lax.scan(step, carry, jnp.arange(max_depth, dtype=jnp.int32))
  return LatentResult(hidden_bkd=jnp.swapaxes(hidden_kbd, 0, 1), final_hidden_bd=carry.hidden_bd,
                      cache=carry.cache,
                      next_cache_index=jnp.asarray(cache_index, jnp.int32) + max_depth,
                      next_pos_b=carry.position_b)


def latent_forward(params, cfg: ModelConfig, prompt_bt: jax.Array, prompt_mask_bt: jax.Array,
                   depth_b: jax.Array, suffix_bt: jax.Array, suffix_mask_bt: jax.Array,
                   max_depth: int, projection=None, remat: bool = False) -> LatentForward:
  """Teacher-forced Stage-2 forward of `[prompt, <bot>, latent_1..latent_d, <eot>, SID]`.

  Prefills `prompt_bt` (ending in `<bot>`), runs the latent steps with per-row depth, then feeds
  the suffix block at the slots after the K latent slots and at positions continuing each row's
  real tokens. Differentiable end to end (gradients flow through the latent chain into the
  backbone and the projection); jit it with `cfg`, `max_depth` and `remat` static.

  Args:
    params: decoder parameters.
    cfg: the decoder's ModelConfig.
    prompt_bt: [B, P] int ids of prompt + `<bot>`, right padded.
    prompt_mask_bt: [B, P] bool, True on real tokens.
    depth_b: [B] int latent depth of each row, in 0..max_depth.
    suffix_bt: [B, S] int ids of `<eot>` and the SID tokens, right padded.
    suffix_mask_bt: [B, S] bool, True on real suffix tokens.
    max_depth: static K.
    projection: `LatentProjection` params, or None.
    remat: rematerialize each latent step in the backward pass.

  Returns:
    a `LatentForward`.
  """
  b, p = prompt_bt.shape
  cache = init_cache(cfg, b, p + max_depth + suffix_bt.shape[1])
  h0_bd, pos0_b, cache = prefill(params, cfg, prompt_bt, prompt_mask_bt, cache)
  latent = run_latent_steps(params, cfg, cache, p, h0_bd, pos0_b, depth_b, max_depth,
                            projection=projection, remat=remat)
  positions_bs = latent.next_pos_b[:, None] + positions_from_mask(suffix_mask_bt)
  logits_bsv, _, _ = Decoder(cfg).apply(
      {"params": params}, suffix_bt, positions=positions_bs, mask=suffix_mask_bt,
      cache=latent.cache, cache_index=latent.next_cache_index)
  return LatentForward(suffix_logits_bsv=logits_bsv, latent_hidden_bkd=latent.hidden_bkd,
                       final_hidden_bd=latent.final_hidden_bd, prompt_hidden_bd=h0_bd)
