"""Greedy decoding with a KV cache: one prefill of the prompt, then one compiled step per new token.

The whole of `greedy_generate` (prefill and a `jax.lax.while_loop` over the decode step) is one XLA
computation, compiled once per (params structure, config, batch, prompt length, max_new_tokens):
prompt contents, padding and `eos_id` are traced values, so other prompts of the same padded shape
reuse it. The cache is created and updated inside that computation (the loop carry is updated in
place), so no buffer crosses the jit boundary that could be donated.

Slots: the prompt's T columns fill cache slots 0..T-1 (padding anywhere in a row stays invisible).
New token 0 comes from the prefill; new token n >= 1 from feeding token n-1 at slot T+n-1, so the
cache holds T + max_new_tokens - 1 slots. RoPE positions count real tokens only, as in training.
"""

import functools

import flax
import jax
import jax.numpy as jnp

from lasar_jax.model.config import ModelConfig
from lasar_jax.model.transformer import Decoder, KVCache, init_cache, positions_from_mask

NO_EOS = -1  # eos id meaning "never stop early" (no token has it)


@flax.struct.dataclass
class DecodeState:
  """Carry of the decode loop."""

  cache: KVCache  # keys/values of the prompt and of the tokens fed so far
  token: jax.Array  # [B] int32: the token chosen last, fed at the next step
  position: jax.Array  # [B] int32: RoPE position of `token` (real tokens before it in its row)
  done: jax.Array  # [B] bool: the row has emitted eos
  out: jax.Array  # [B, N] int32: tokens chosen so far; eos after a row is done
  step: jax.Array  # int32 scalar: columns of `out` written so far


def _last_real_hidden(hidden_btd: jax.Array, mask_bt: jax.Array) -> jax.Array:
  """Hidden state of the last real column of each row (right padding allowed). [B, 1, D]"""
  t = mask_bt.shape[1]
  last_b = t - 1 - jnp.argmax(mask_bt[:, ::-1], axis=1)  # first True from the right
  return jnp.take_along_axis(hidden_btd, last_b[:, None, None], axis=1)


def _prefill(params, cfg: ModelConfig, tokens_bt, mask_bt, cache: KVCache):
  """Writes the prompt into cache slots 0..T-1; returns (next-token logits [B, V], cache)."""
  model = Decoder(cfg)
  _, hidden_btd, cache = model.apply(
      {"params": params}, tokens_bt, positions=positions_from_mask(mask_bt), mask=mask_bt,
      cache=cache, cache_index=0, return_logits=False)
  logits_b1v = model.apply({"params": params}, _last_real_hidden(hidden_btd, mask_bt),
                           method=Decoder.logits)
  return logits_b1v[:, 0], cache


def _emit(state: DecodeState, logits_bv: jax.Array, eos_id: jax.Array) -> DecodeState:
  """Chooses the argmax token (eos for finished rows) and writes it to column `state.step`."""
  token_b = jnp.where(state.done, eos_id, jnp.argmax(logits_bv, axis=-1).astype(jnp.int32))
  return state.replace(
      token=token_b,
      done=state.done | (token_b == eos_id),
      out=jax.lax.dynamic_update_slice(state.out, token_b[:, None], (0, state.step)),
      step=state.step + 1)


def _decode_step(params, cfg: ModelConfig, prompt_len: int, eos_id: jax.Array,
                 state: DecodeState) -> DecodeState:
  """Feeds the last chosen token (slot prompt_len + step - 1) and chooses the next one."""
  tokens_b1 = state.token[:, None]
  logits_b1v, _, cache = Decoder(cfg).apply(
      {"params": params}, tokens_b1, positions=state.position[:, None],
      mask=jnp.ones_like(tokens_b1, bool), cache=state.cache, cache_index=prompt_len + state.step - 1)
  state = state.replace(cache=cache, position=state.position + 1)
  return _emit(state, logits_b1v[:, 0], eos_id)


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens"))
def _generate(params, tokens_bt, mask_bt, eos_id, *, cfg: ModelConfig, max_new_tokens: int):
  """Prefill, first token, then the decode loop (stops early once every row is done). [B, N]"""
  b, t = tokens_bt.shape
  logits_bv, cache = _prefill(params, cfg, tokens_bt, mask_bt,
                              init_cache(cfg, b, t + max_new_tokens - 1))
  state = DecodeState(
      cache=cache,
      token=jnp.zeros((b,), jnp.int32),
      position=jnp.sum(mask_bt, axis=1, dtype=jnp.int32),
      done=jnp.zeros((b,), bool),
      out=jnp.full((b, max_new_tokens), eos_id, jnp.int32),  # columns left after an early stop
      step=jnp.zeros((), jnp.int32))
  state = _emit(state, logits_bv, eos_id)
  state = jax.lax.while_loop(
      lambda s: (s.step < max_new_tokens) & ~jnp.all(s.done),
      lambda s: _decode_step(params, cfg, t, eos_id, s), state)
  return state.out


def greedy_generate(params, cfg: ModelConfig, prompt_tokens, prompt_mask, max_new_tokens: int,
                    eos_id: int | None = None) -> jax.Array:
  """Greedy continuation of a batch of padded prompts.

  Args:
    params: decoder parameters (plain, unboxed pytree).
    cfg: the decoder's ModelConfig.
    prompt_tokens: [B, T] int prompt ids; padding columns may hold any id.
    prompt_mask: [B, T] bool, True on real tokens. Padding may be on the left, the right or
      anywhere; every row needs at least one real token.
    max_new_tokens: N >= 1, tokens generated per row.
    eos_id: once a row emits it, the row keeps emitting it; None: never stop early.

  Returns:
    [B, N] int32 generated tokens.
  """
  tokens_bt, mask_bt = jnp.asarray(prompt_tokens, jnp.int32), jnp.asarray(prompt_mask, bool)
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  if tokens_bt.ndim != 2 or tokens_bt.shape[1] == 0 or tokens_bt.shape != mask_bt.shape:
    raise ValueError(f"prompt tokens {tokens_bt.shape} and mask {mask_bt.shape} must be the same "
                     "[B, T] shape with T >= 1")
  eos = jnp.asarray(NO_EOS if eos_id is None else eos_id, jnp.int32)
  return _generate(params, tokens_bt, mask_bt, eos, cfg=cfg, max_new_tokens=max_new_tokens)
