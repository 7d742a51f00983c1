"""KV-cache invariances: cached decoding equals the full forward pass, rows are independent."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lasar_jax.model import transformer as T
from lasar_jax.model.config import ModelConfig

# Exercises every optional piece at once: GQA, QKV bias, QK-norm, untied head, llama3 RoPE.
CFG = ModelConfig(architecture="qwen3", vocab_size=61, hidden_size=32, intermediate_size=64,
                  num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, qkv_bias=True,
                  qk_norm=True, rope_scaling_type="llama3", rope_scaling_factor=4.0,
                  rope_original_max_positions=8)
PROMPT, STEPS = 6, 5  # prefill columns, then decoded tokens
ATOL = 1e-5


def random_params(cfg: ModelConfig, seed: int = 0) -> dict:
  """Boxed params ~ N(0, 0.2) (norm scales ~ 1 + N(0, 0.2)), large enough for wrong masks to show.

  Drawn with NumPy into the shapes of `init_params` (compiling the jax initializers is slow on CPU).
  """
  shapes = jax.eval_shape(lambda key: T.init_params(cfg, key), jax.random.key(0))
  rng = np.random.RandomState(seed)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: (0.2 * rng.standard_normal(x.shape) + ("scale" in jax.tree_util.keystr(path))
                       ).astype(x.dtype), shapes)


PARAMS = random_params(CFG)


@jax.jit
def _full_forward(params, tokens_bt, mask_bt):
  logits, hidden, _ = T.Decoder(CFG).apply({"params": params}, tokens_bt,
                                           positions=T.positions_from_mask(mask_bt), mask=mask_bt)
  return logits, hidden


def full_forward(tokens_bt, mask_bt):
  """Logits and hidden of a plain forward pass. [B, T, V], [B, T, D]"""
  return _full_forward(PARAMS, tokens_bt, mask_bt)


@functools.partial(jax.jit, static_argnums=0)
def prefill(length, params, tokens_bt, mask_bt):
  """Writes the prompt to slots 0..T-1 of a fresh cache of `length` slots."""
  cache = T.init_cache(CFG, tokens_bt.shape[0], length)
  return T.Decoder(CFG).apply({"params": params}, tokens_bt, positions=T.positions_from_mask(mask_bt),
                              mask=mask_bt, cache=cache, cache_index=0)


def _decode_step(params, cache, token_b1, position_b1, index):
  """One new real token per row, written at slot `index` (a traced scalar: one compile)."""
  return T.Decoder(CFG).apply({"params": params}, token_b1, positions=position_b1,
                              mask=jnp.ones_like(token_b1, bool), cache=cache, cache_index=index)


decode_step = jax.jit(chex.assert_max_traces(_decode_step, n=1))  # fails on a second trace


def decode(prompt_bt, prompt_mask_bt, new_bt):
  """Prefill then decode `new_bt` one column at a time; (logits, hidden) of every column."""
  p = prompt_bt.shape[1]
  logits, hidden, cache = prefill(p + new_bt.shape[1], PARAMS, prompt_bt, prompt_mask_bt)
  positions_b = prompt_mask_bt.sum(axis=1)  # real tokens so far: the next RoPE position
  all_logits, all_hidden = [logits], [hidden]
  for i in range(new_bt.shape[1]):
    logits, hidden, cache = decode_step(PARAMS, cache, new_bt[:, i:i + 1],
                                        (positions_b + i)[:, None], jnp.int32(p + i))
    all_logits.append(logits)
    all_hidden.append(hidden)
  return jnp.concatenate(all_logits, axis=1), jnp.concatenate(all_hidden, axis=1)


def batch():
  """Tokens [3, P+N] and slot mask: row 0 full, row 1 left-padded prompt, row 2 right-padded one.

  Rows 1 and 2 have the same number of real tokens, so "the row alone" is one shape (one compile).
  """
  tokens = jax.random.randint(jax.random.key(1), (3, PROMPT + STEPS), 0, CFG.vocab_size)
  mask = np.ones((3, PROMPT + STEPS), bool)
  mask[1, :2] = False
  mask[2, PROMPT - 2:PROMPT] = False  # padding between the prompt and the decoded tokens
  return tokens, jnp.asarray(mask)


def test_cached_decode_equals_full_forward():
  tokens, mask = batch()
  full_logits, full_hidden = full_forward(tokens, mask)
  logits, hidden = decode(tokens[:, :PROMPT], mask[:, :PROMPT], tokens[:, PROMPT:])
  real = np.asarray(mask)
  assert np.abs(np.asarray(full_logits)[real]).max() > 1.0
  np.testing.assert_allclose(np.asarray(logits)[real], np.asarray(full_logits)[real], atol=ATOL)
  np.testing.assert_allclose(np.asarray(hidden)[real], np.asarray(full_hidden)[real], atol=ATOL)


def test_padded_row_equals_row_alone():
  tokens, mask = batch()
  logits, hidden = decode(tokens[:, :PROMPT], mask[:, :PROMPT], tokens[:, PROMPT:])
  for row in (1, 2):
    real = np.asarray(mask[row])
    alone = tokens[row][real][None]  # the row's real tokens, no padding at all
    alone_logits, alone_hidden = full_forward(alone, jnp.ones(alone.shape, bool))
    np.testing.assert_allclose(np.asarray(logits[row])[real], np.asarray(alone_logits[0]), atol=ATOL)
    np.testing.assert_allclose(np.asarray(hidden[row])[real], np.asarray(alone_hidden[0]), atol=ATOL)


def test_real_tokens_matter_padding_does_not():
  """Sanity for the tests above: changing a real token changes its row (only), a pad changes nothing."""
  tokens, mask = batch()
  changed = tokens.at[2, 0].set((tokens[2, 0] + 1) % CFG.vocab_size)
  base, _ = decode(tokens[:, :PROMPT], mask[:, :PROMPT], tokens[:, PROMPT:])
  other, _ = decode(changed[:, :PROMPT], mask[:, :PROMPT], changed[:, PROMPT:])
  assert np.abs(np.asarray(other[2, -1] - base[2, -1])).max() > 1e-3
  np.testing.assert_array_equal(np.asarray(other[:2]), np.asarray(base[:2]))
  padded = tokens.at[2, PROMPT - 1].set((tokens[2, PROMPT - 1] + 1) % CFG.vocab_size)  # a pad slot
  other, _ = decode(padded[:, :PROMPT], mask[:, :PROMPT], padded[:, PROMPT:])
  np.testing.assert_allclose(np.asarray(other[2])[np.asarray(mask[2])],
                             np.asarray(base[2])[np.asarray(mask[2])], atol=ATOL)


def test_decode_step_compiles_once():
  tokens, mask = batch()
  for _ in range(2):  # 2 * STEPS calls at different slots: decode_step allows one trace only
    decode(tokens[:, :PROMPT], mask[:, :PROMPT], tokens[:, PROMPT:])
  _, _, cache = prefill(PROMPT + STEPS, PARAMS, tokens[:, :PROMPT], mask[:, :PROMPT])
  with pytest.raises(AssertionError):  # the counter does count: a Python-int slot is a new trace
    decode_step(PARAMS, cache, tokens[:, PROMPT:PROMPT + 1], mask[:, :1].astype(jnp.int32), PROMPT)
