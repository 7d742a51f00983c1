"""Constrained beam search against a NumPy beam search and brute-force scores over the trie."""

import functools
import itertools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lasar_jax.decoding import beam_search as beam_lib
from lasar_jax.model import transformer as T
from lasar_jax.model.config import PRESETS
from lasar_jax.sid import trie as trie_lib

CFG = PRESETS["tiny"].replace(num_layers=2, vocab_size=64)
LEVELS, CODES, ITEMS = 3, 6, 30
# Token id of code c at level l: 40 + 6 l + c (prompts use ids below 40). [L', C]
TABLE = (40 + CODES * np.arange(LEVELS)[:, None] + np.arange(CODES)[None]).astype(np.int32)
# ITEMS distinct random SIDs, item i = row i. [I, L']
SIDS = np.array(list(itertools.product(range(CODES), repeat=LEVELS)))[
    np.random.default_rng(0).choice(CODES ** LEVELS, ITEMS, replace=False)]
TRIE = trie_lib.build_trie(SIDS, num_codes=CODES)
PREFIXES = {tuple(s[:d]) for s in SIDS for d in range(LEVELS + 1)}
ITEM_OF = {tuple(s): i for i, s in enumerate(SIDS)}
LENGTHS = np.array([5, 4, 7])  # real prompt tokens per row
T_MAX = 7
REF_ROWS = 32  # batch of every reference forward (>= ITEMS): one compile


def random_params(seed: int = 0) -> dict:
  """Params ~ N(0, 0.2) (norm scales ~ 1 + N(0, 0.2)): peaked, well-separated SID scores."""
  shapes = jax.eval_shape(lambda key: T.init_params(CFG, key), jax.random.key(0))
  rng = np.random.RandomState(seed)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: (0.2 * rng.standard_normal(x.shape) + ("scale" in jax.tree_util.keystr(path))
                       ).astype(x.dtype), nn.meta.unbox(shapes))


PARAMS = random_params()


def prompts(seed: int = 1):
  """Non-SID prompt tokens [3, 7] with padding on the right, the left and none, and their mask."""
  tokens = np.random.default_rng(seed).integers(0, 40, (3, T_MAX))
  mask = np.zeros((3, T_MAX), bool)
  mask[0, :LENGTHS[0]] = True  # right padding
  mask[1, T_MAX - LENGTHS[1]:] = True  # left padding
  mask[2] = True
  return tokens, mask


def real_tokens(tokens, mask, row: int) -> np.ndarray:
  """The real prompt tokens of one row."""
  return tokens[row][mask[row]]


@functools.partial(jax.jit, static_argnums=0)
def prefill(slots: int, params, tokens_bt, mask_bt):
  """Prompt into slots 0..T-1 of a fresh cache: (first SID logits [B, V], cache, pos [B])."""
  logits_btv, _, cache = T.Decoder(CFG).apply(
      {"params": params}, tokens_bt, positions=T.positions_from_mask(mask_bt), mask=mask_bt,
      cache=T.init_cache(CFG, tokens_bt.shape[0], slots), cache_index=0)
  last_b = tokens_bt.shape[1] - 1 - jnp.argmax(mask_bt[:, ::-1], axis=1)
  return logits_btv[jnp.arange(tokens_bt.shape[0]), last_b], cache, jnp.sum(mask_bt, axis=1)


def run(tokens, mask, width: int, params=PARAMS, table=TABLE, renormalize=False, extra_slots=0):
  """Prefill then `beam_search`; the SID tokens go right after the prompt (+ extra_slots)."""
  t = tokens.shape[1]
  logits, cache, pos = prefill(t + extra_slots + LEVELS - 1, params, jnp.asarray(tokens),
                               jnp.asarray(mask))
  return beam_lib.beam_search(params, CFG, logits, cache, t + extra_slots, pos, TRIE, table,
                              beam_width=width, renormalize=renormalize)


@jax.jit
def _full_logits(params, tokens_bt, mask_bt):
  """Plain no-cache forward. [B, T, V]"""
  return T.Decoder(CFG).apply({"params": params}, tokens_bt,
                              positions=T.positions_from_mask(mask_bt), mask=mask_bt)[0]


def reference_log_probs(prompt_t: np.ndarray, prefixes: list[tuple]) -> np.ndarray:
  """float64 full-vocabulary log-softmax of the next token after prompt + each SID prefix, each
  by a full forward without cache. [len(prefixes), V]"""
  tokens = np.zeros((REF_ROWS, len(prompt_t) + LEVELS - 1), np.int64)
  mask = np.zeros(tokens.shape, bool)
  for r, prefix in enumerate(prefixes):
    seq = np.concatenate([prompt_t, TABLE[np.arange(len(prefix)), list(prefix)]])
    tokens[r, :len(seq)], mask[r, :len(seq)] = seq, True
  logits = np.asarray(_full_logits(PARAMS, tokens, mask), np.float64)
  last = mask.sum(1) - 1
  logits = logits[np.arange(REF_ROWS), last][:len(prefixes)]
  shifted = logits - logits.max(1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def numpy_beam_search(prompt_t: np.ndarray, width: int):
  """Plain beam search; candidates ranked by score, ties by parent beam * C + code.

  Returns (items best first, their float64 scores)."""
  beams = [((), 0.0)]
  for level in range(LEVELS):
    logp = reference_log_probs(prompt_t, [prefix for prefix, _ in beams])
    candidates = [(score + logp[w, TABLE[level, c]], w * CODES + c, prefix + (c,))
                  for w, (prefix, score) in enumerate(beams) for c in range(CODES)
                  if prefix + (c,) in PREFIXES]
    beams = [(prefix, score) for score, _, prefix in
             sorted(candidates, key=lambda x: (-x[0], x[1]))[:width]]
  return [ITEM_OF[p] for p, _ in beams], np.array([s for _, s in beams])


def exact_scores(prompt_t: np.ndarray) -> np.ndarray:
  """Brute force: the full-vocabulary log-prob of every item's SID. [I] float64"""
  scores = np.zeros(ITEMS)
  for level in range(LEVELS):
    prefixes = sorted({tuple(s[:level]) for s in SIDS})
    logp = reference_log_probs(prompt_t, prefixes)
    rows = np.array([prefixes.index(tuple(s[:level])) for s in SIDS])
    scores += logp[rows, TABLE[level, SIDS[:, level]]]
  return scores


def test_matches_numpy_beam_search():
  tokens, mask = prompts()
  width = 5
  out = run(tokens, mask, width)
  assert out.items.shape == (3, width) and out.codes.shape == (3, width, LEVELS)
  for row in range(3):
    items, scores = numpy_beam_search(real_tokens(tokens, mask, row), width)
    np.testing.assert_array_equal(np.asarray(out.items[row]), items)
    np.testing.assert_allclose(np.asarray(out.scores[row]), scores, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(out.codes[row]), SIDS[items])
  # Beam search is not "the top-W of the exact ranking" here: pruning matters, so the comparison
  # above checks the beam mechanics, not only the final ranking.
  tops = [np.argsort(-exact_scores(real_tokens(tokens, mask, r)))[:width] for r in range(3)]
  assert any(set(t) != set(np.asarray(out.items[r])) for r, t in enumerate(tops))


def test_full_width_returns_every_sid_once_in_exact_score_order():
  tokens, mask = prompts()
  width = ITEMS + 2
  out = run(tokens, mask, width)
  for row in range(3):
    exact = exact_scores(real_tokens(tokens, mask, row))
    order = np.argsort(-exact, kind="stable")
    assert np.diff(exact[order]).max() < -1e-4  # no near-ties: the order is well defined
    np.testing.assert_array_equal(np.asarray(out.items[row, :ITEMS]), order)
    np.testing.assert_allclose(np.asarray(out.scores[row, :ITEMS]), exact[order], atol=1e-4)
    np.testing.assert_array_equal(np.asarray(out.items[row, ITEMS:]), -1)
    np.testing.assert_array_equal(np.asarray(out.codes[row, ITEMS:]), -1)
    assert np.all(np.isneginf(np.asarray(out.scores[row, ITEMS:])))
  # Full-vocabulary scores leak mass to non-SID tokens; renormalized ones are a distribution.
  assert np.exp(np.asarray(out.scores[:, :ITEMS], np.float64)).sum(1).max() < 0.99
  renormalized = run(tokens, mask, width, renormalize=True)
  np.testing.assert_allclose(np.exp(np.asarray(renormalized.scores, np.float64)).sum(1), 1.0,
                             atol=1e-4)


@pytest.mark.parametrize("width", [5, ITEMS + 2])
def test_beams_are_distinct_real_items(width):
  tokens, mask = prompts()
  out = run(tokens, mask, width)
  items, codes = np.asarray(out.items), np.asarray(out.codes)
  for row in range(3):
    live = items[row] >= 0
    assert live.sum() == min(width, ITEMS)
    assert len(set(items[row, live])) == live.sum()
    assert len({tuple(c) for c in codes[row, live]}) == live.sum()
    assert all(tuple(c) in ITEM_OF for c in codes[row, live])
    np.testing.assert_array_equal(codes[row, live], SIDS[items[row, live]])
    assert np.all(np.diff(np.asarray(out.scores[row, live])) <= 0)  # best first


def test_rows_in_a_padded_batch_equal_rows_alone():
  tokens, mask = prompts()
  width = 5
  batch = run(tokens, mask, width)
  alone_t = real_tokens(tokens, mask, 1)[None]  # the left-padded row, alone without padding
  alone = run(alone_t, np.ones_like(alone_t, bool), width)
  np.testing.assert_array_equal(np.asarray(alone.items[0]), np.asarray(batch.items[1]))
  np.testing.assert_allclose(np.asarray(alone.scores[0]), np.asarray(batch.scores[1]), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(alone.codes[0]), np.asarray(batch.codes[1]))
  assert not np.array_equal(np.asarray(batch.items[0]), np.asarray(batch.items[1]))


def test_one_trace_for_new_prompts_slots_params_and_tables(monkeypatch):
  """The beam loop is traced once; other inputs of the same shapes reuse it."""
  monkeypatch.setattr(beam_lib, "_initial_state",
                      chex.assert_max_traces(beam_lib._initial_state, n=1))
  width = 4  # a width no other test compiles, so the first call traces
  tokens, mask = prompts()
  first = run(tokens, mask, width, extra_slots=1)
  other = run(prompts(seed=2)[0], mask[::-1], width, params=jax.tree.map(lambda x: 1.1 * x, PARAMS),
              table=TABLE[:, ::-1].copy(), extra_slots=1)
  assert not np.array_equal(np.asarray(first.items), np.asarray(other.items))
  logits, cache, pos = prefill(T_MAX + 1 + LEVELS - 1, PARAMS, jnp.asarray(tokens),
                               jnp.asarray(mask))
  shifted = beam_lib.beam_search(PARAMS, CFG, logits, cache, T_MAX, pos, TRIE, TABLE,
                                 beam_width=width)
  # Slot T_MAX instead of T_MAX + 1: same positions, so the same beams (the slot is traced data).
  np.testing.assert_array_equal(np.asarray(shifted.items), np.asarray(first.items))
  with pytest.raises(AssertionError, match="traced"):  # the counter counts: new batch size
    jax.eval_shape(lambda *args: beam_lib.beam_search(PARAMS, CFG, *args, beam_width=width),
                   logits[:2], beam_lib.take_rows(cache, jnp.arange(2)), T_MAX, pos[:2], TRIE,
                   TABLE)


def test_argument_checks():
  tokens, mask = prompts()
  logits, cache, pos = prefill(T_MAX + LEVELS - 1, PARAMS, jnp.asarray(tokens), jnp.asarray(mask))
  with pytest.raises(ValueError, match="beam_width"):
    beam_lib.beam_search(PARAMS, CFG, logits, cache, T_MAX, pos, TRIE, TABLE, beam_width=0)
  with pytest.raises(ValueError, match="slots"):
    beam_lib.beam_search(PARAMS, CFG, logits, cache, T_MAX + 1, pos, TRIE, TABLE, beam_width=2)
  with pytest.raises(ValueError, match="code_token_ids"):
    beam_lib.beam_search(PARAMS, CFG, logits, cache, T_MAX, pos, TRIE, TABLE[:2], beam_width=2)
