"""The decoder-only transformer (Llama / Qwen2 / Qwen3), a Flax Linen module over a params pytree.

Shape letters used in names and comments:
  B batch, T new tokens in this call, S key slots (cache length, or T without a cache),
  D model width, N query heads, K key/value heads, G = N // K, H head width, F MLP width,
  V vocabulary, L layers.

Sequences are laid out in *slots*. Without a cache, slot t is the t-th input column. With a cache,
this call's tokens go to slots `cache_index .. cache_index + T - 1` of every row. A query at slot q
sees key slot s when `s <= q` and slot s holds a real token (`key_valid`). Padding, anywhere in a
row, is therefore invisible, and RoPE positions (given by the caller, usually `cumsum(mask) - 1`)
stay contiguous over the real tokens of each row.
"""

import functools
import math

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from lasar_jax.model.config import ModelConfig

_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)  # finite: fully masked rows stay NaN-free


@flax.struct.dataclass
class KVCache:
  """Keys and values of every layer for slots already written, plus which slots hold real tokens."""

  k: jax.Array  # [L, B, S, K, H] keys after RoPE
  v: jax.Array  # [L, B, S, K, H] values
  valid: jax.Array  # [B, S] bool: slot holds a real (non-padding) token


def init_cache(cfg: ModelConfig, batch: int, length: int, dtype=None) -> KVCache:
  """An empty cache with `length` slots per row (nothing valid yet)."""
  dtype = dtype or jnp.dtype(cfg.dtype)
  shape = (cfg.num_layers, batch, length, cfg.num_kv_heads, cfg.head_dim)
  return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
                 valid=jnp.zeros((batch, length), bool))


def positions_from_mask(mask: jax.Array) -> jax.Array:
  """RoPE positions counting only real tokens: `cumsum(mask) - 1`, 0 on leading padding. [B, T]"""
  return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


def rope_inverse_frequencies(cfg: ModelConfig) -> jax.Array:
  """Inverse frequencies of RoPE, with the checkpoint's scaling applied. [H/2] f32"""
  h = cfg.head_dim
  inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(0, h, 2, dtype=jnp.float32) / h))
  if cfg.rope_scaling_type == "linear":
    inv_freq = inv_freq / cfg.rope_scaling_factor
  elif cfg.rope_scaling_type == "llama3":
    factor, low, high = cfg.rope_scaling_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
    old_len = cfg.rope_original_max_positions
    wavelen = 2 * math.pi / inv_freq
    scaled = jnp.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    inv_freq = jnp.where(is_medium, smoothed, scaled)
  return inv_freq


def rope_tables(cfg: ModelConfig, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
  """cos and sin of RoPE angles for integer positions [B, T]. Each [B, T, H/2] f32."""
  angles_bth = positions.astype(jnp.float32)[..., None] * rope_inverse_frequencies(cfg)
  return jnp.cos(angles_bth), jnp.sin(angles_bth)


def apply_rope(x_btnh: jax.Array, cos_bth: jax.Array, sin_bth: jax.Array) -> jax.Array:
  """Rotates the two halves of each head (the Hugging Face `rotate_half` layout)."""
  x1, x2 = jnp.split(x_btnh.astype(jnp.float32), 2, axis=-1)
  cos, sin = cos_bth[:, :, None, :], sin_bth[:, :, None, :]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_btnh.dtype)


def _param(module: nn.Module, name: str, init, shape, axes, cfg: ModelConfig) -> jax.Array:
  """A parameter with logical sharding axes, returned cast to the compute dtype."""
  value = module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.dtype(cfg.param_dtype))
  return jnp.asarray(value, jnp.dtype(cfg.dtype))


_kernel_init = nn.initializers.normal(stddev=0.02)


class RMSNorm(nn.Module):
  """Root-mean-square norm computed in f32, cast back before the scale (as Hugging Face does)."""

  cfg: ModelConfig
  axis_name: str = "norm"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = _param(self, "scale", nn.initializers.ones, (x.shape[-1],), (self.axis_name,), self.cfg)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.cfg.rms_norm_eps)
    return scale * normed.astype(x.dtype)


class Attention(nn.Module):
  """Grouped-query attention with RoPE, optional QKV bias and QK-norm, and an explicit KV cache."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_btd, cos_bth, sin_bth, attn_mask_bts, layer_cache, cache_index):
    cfg = self.cfg
    d, n, k, h = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    w_q = _param(self, "q_proj", _kernel_init, (d, n, h), ("embed", "q_heads", "head_dim"), cfg)
    w_k = _param(self, "k_proj", _kernel_init, (d, k, h), ("embed", "kv_heads", "head_dim"), cfg)
    w_v = _param(self, "v_proj", _kernel_init, (d, k, h), ("embed", "kv_heads", "head_dim"), cfg)
    w_o = _param(self, "o_proj", _kernel_init, (n, h, d), ("q_heads", "head_dim", "embed"), cfg)
    q_btnh = jnp.einsum("BTD,DNH->BTNH", x_btd, w_q)
    k_btkh = jnp.einsum("BTD,DKH->BTKH", x_btd, w_k)
    v_btkh = jnp.einsum("BTD,DKH->BTKH", x_btd, w_v)
    if cfg.qkv_bias:
      zeros = nn.initializers.zeros
      q_btnh += _param(self, "q_bias", zeros, (n, h), ("q_heads", "head_dim"), cfg)
      k_btkh += _param(self, "k_bias", zeros, (k, h), ("kv_heads", "head_dim"), cfg)
      v_btkh += _param(self, "v_bias", zeros, (k, h), ("kv_heads", "head_dim"), cfg)
    if cfg.qk_norm:
      q_btnh = RMSNorm(cfg, axis_name="head_dim", name="q_norm")(q_btnh)
      k_btkh = RMSNorm(cfg, axis_name="head_dim", name="k_norm")(k_btkh)
    q_btnh = apply_rope(q_btnh, cos_bth, sin_bth)
    k_btkh = apply_rope(k_btkh, cos_bth, sin_bth)

    if layer_cache is not None:  # write this call's slots, then attend over the whole cache
      cache_k, cache_v = layer_cache  # [B, S, K, H] each
      start = (0, cache_index, 0, 0)
      k_bskh = jax.lax.dynamic_update_slice(cache_k, k_btkh.astype(cache_k.dtype), start)
      v_bskh = jax.lax.dynamic_update_slice(cache_v, v_btkh.astype(cache_v.dtype), start)
      new_layer_cache = (k_bskh, v_bskh)
    else:
      k_bskh, v_bskh, new_layer_cache = k_btkh, v_btkh, None

    b, t = q_btnh.shape[:2]
    q_btkgh = q_btnh.reshape(b, t, k, n // k, h)
    scores_bkgts = jnp.einsum("BTKGH,BSKH->BKGTS", q_btkgh, k_bskh.astype(q_btkgh.dtype),
                              preferred_element_type=jnp.float32) / math.sqrt(h)
    scores_bkgts = jnp.where(attn_mask_bts[:, None, None], scores_bkgts, _MASK_VALUE)
    probs_bkgts = jax.nn.softmax(scores_bkgts, axis=-1).astype(v_bskh.dtype)
    out_btkgh = jnp.einsum("BKGTS,BSKH->BTKGH", probs_bkgts, v_bskh)
    out_btd = jnp.einsum("BTNH,NHD->BTD", out_btkgh.reshape(b, t, n, h).astype(x_btd.dtype), w_o)
    return out_btd, new_layer_cache


class MLP(nn.Module):
  """SwiGLU feed-forward block: down(silu(gate(x)) * up(x))."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_btd):
    cfg = self.cfg
    d, f = cfg.hidden_size, cfg.intermediate_size
    w_gate = _param(self, "gate_proj", _kernel_init, (d, f), ("embed", "mlp"), cfg)
    w_up = _param(self, "up_proj", _kernel_init, (d, f), ("embed", "mlp"), cfg)
    w_down = _param(self, "down_proj", _kernel_init, (f, d), ("mlp", "embed"), cfg)
    gate_btf = jnp.einsum("BTD,DF->BTF", x_btd, w_gate)
    up_btf = jnp.einsum("BTD,DF->BTF", x_btd, w_up)
    return jnp.einsum("BTF,FD->BTD", jax.nn.silu(gate_btf) * up_btf, w_down)


class DecoderLayer(nn.Module):
  """Pre-norm residual block: attention then MLP. Scanned over layers (carry = residual stream)."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_btd, layer_cache, cos_bth, sin_bth, attn_mask_bts, cache_index):
    attn_out, new_layer_cache = Attention(self.cfg, name="attn")(
        RMSNorm(self.cfg, name="attn_norm")(x_btd), cos_bth, sin_bth, attn_mask_bts,
        layer_cache, cache_index)
    x_btd = x_btd + attn_out
    x_btd = x_btd + MLP(self.cfg, name="mlp")(RMSNorm(self.cfg, name="mlp_norm")(x_btd))
    return x_btd, new_layer_cache


class Decoder(nn.Module):
  """The full decoder. `__call__` returns (logits or None, last hidden states, new cache or None).

  Last hidden states are the final-norm outputs, the vectors the LM head reads: latent reasoning
  feeds them back as input embeddings.
  """

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.embedding = self.param(
        "embedding", nn.with_logical_partitioning(_kernel_init, ("vocab", "embed")),
        (cfg.vocab_size, cfg.hidden_size), jnp.dtype(cfg.param_dtype))
    if not cfg.tie_embeddings:
      self.lm_head = self.param(
          "lm_head", nn.with_logical_partitioning(_kernel_init, ("embed", "vocab")),
          (cfg.hidden_size, cfg.vocab_size), jnp.dtype(cfg.param_dtype))
    layer_cls = DecoderLayer
    if cfg.remat:
      layer_cls = nn.remat(layer_cls, prevent_cse=False)
    self.layers = nn.scan(
        layer_cls, variable_axes={"params": 0}, split_rngs={"params": True},
        in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
        length=cfg.num_layers, metadata_params={nn.PARTITION_NAME: "layers"})(cfg, name="layers")
    self.final_norm = RMSNorm(cfg)

  def embed(self, tokens_bt: jax.Array) -> jax.Array:
    """Input embeddings of token ids, in the compute dtype. [B, T, D]"""
    table = jnp.asarray(self.embedding, jnp.dtype(self.cfg.dtype))
    return jnp.take(table, tokens_bt, axis=0)

  def logits(self, hidden_btd: jax.Array) -> jax.Array:
    """LM-head logits of final hidden states, in f32. [B, T, V]"""
    head_dv = self.embedding.T if self.cfg.tie_embeddings else self.lm_head
    head_dv = jnp.asarray(head_dv, jnp.dtype(self.cfg.dtype))
    return jnp.einsum("BTD,DV->BTV", hidden_btd, head_dv, preferred_element_type=jnp.float32)

  def __call__(self, tokens=None, *, embeds=None, positions, mask, cache: KVCache | None = None,
               cache_index=0, return_logits: bool = True):
    """Runs the decoder on T new columns.

    Args:
      tokens: [B, T] int token ids, or None when `embeds` is given.
      embeds: [B, T, D] input embeddings (e.g. fed-back hidden states), or None.
      positions: [B, T] int RoPE positions.
      mask: [B, T] bool, True where the column is a real token (False = padding / inactive).
      cache: a `KVCache` with S slots, or None for a plain forward over these T columns.
      cache_index: int scalar, the slot this call's first column is written to (cache only).
      return_logits: also compute LM-head logits (skip when only hidden states are needed).

    Returns:
      (logits [B, T, V] f32 or None, hidden [B, T, D], updated cache or None).
    """
    if (tokens is None) == (embeds is None):
      raise ValueError("pass exactly one of `tokens` and `embeds`")
    x_btd = self.embed(tokens) if embeds is None else embeds.astype(jnp.dtype(self.cfg.dtype))
    t = x_btd.shape[1]
    cos_bth, sin_bth = rope_tables(self.cfg, positions)
    if cache is None:
      key_valid_bs = mask.astype(bool)
      query_slots_t = jnp.arange(t)
      layer_caches = None
    else:
      key_valid_bs = jax.lax.dynamic_update_slice(cache.valid, mask.astype(bool), (0, cache_index))
      query_slots_t = cache_index + jnp.arange(t)
      layer_caches = (cache.k, cache.v)
    key_slots_s = jnp.arange(key_valid_bs.shape[1])
    causal_ts = key_slots_s[None, :] <= query_slots_t[:, None]
    attn_mask_bts = key_valid_bs[:, None, :] & causal_ts[None]

    x_btd, new_layer_caches = self.layers(x_btd, layer_caches, cos_bth, sin_bth, attn_mask_bts,
                                          cache_index)
    hidden_btd = self.final_norm(x_btd)
    new_cache = None
    if cache is not None:
      new_cache = KVCache(k=new_layer_caches[0], v=new_layer_caches[1], valid=key_valid_bs)
    logits_btv = self.logits(hidden_btd) if return_logits else None
    return logits_btv, hidden_btd, new_cache


@functools.partial(jax.jit, static_argnums=0)
def init_params(cfg: ModelConfig, key: jax.Array):
  """Randomly initialized parameters, boxed with logical axes (see `lasar_jax.sharding`).

  Jitted: one compile per config, far faster than running the initializers eagerly.
  """
  tokens = jnp.zeros((1, 1), jnp.int32)
  variables = Decoder(cfg).init(key, tokens, positions=tokens, mask=tokens == 0)
  return variables["params"]


def logical_specs(cfg: ModelConfig):
  """Logical axis names of every parameter (a pytree of PartitionSpecs), without allocating."""
  return nn.get_partition_spec(jax.eval_shape(lambda: init_params(cfg, jax.random.key(0))))
