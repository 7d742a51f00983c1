"""Trie-constrained SID sampling: valid items, the exact masked distribution, keys, log-probs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lasar_jax.decoding import beam_search as beam_lib
from lasar_jax.decoding import sampling
from test_beam_search import (CFG, ITEMS, LEVELS, PARAMS, PREFIXES, SIDS, TABLE, TRIE, T_MAX,
                              numpy_beam_search, prefill, prompts, real_tokens,
                              reference_log_probs)

DRAWS = 4000  # samples per prompt (E[TV] ~ 0.02 for these distributions)
TEMPERATURE = 0.8
ROWS = np.repeat(np.arange(3), DRAWS)  # prompt row of each sample row: one batch, one compile


def sample(rows, key, temperature=TEMPERATURE):
  """Samples for the prompt rows `rows` [R] of `prompts()`: one prefill, rows gathered after."""
  tokens, mask = prompts()
  logits, cache, pos = prefill(T_MAX + LEVELS - 1, PARAMS, jnp.asarray(tokens), jnp.asarray(mask))
  rows = jnp.asarray(rows)
  return sampling.sample_sids(PARAMS, CFG, logits[rows], beam_lib.take_rows(cache, rows), T_MAX,
                              pos[rows], TRIE, TABLE, key, temperature)


def masked_log_probs(prompt_t, prefixes, level, temperature):
  """float64 (log q of every code under the temperature-scaled trie-masked distribution [P, C],
  -inf where not allowed; plain full-vocabulary log-probs of every code [P, C]) after each
  prefix of length `level`."""
  logp = reference_log_probs(prompt_t, prefixes)[:, TABLE[level]]  # [P, C]
  allowed = np.array([[p + (c,) in PREFIXES for c in range(TABLE.shape[1])] for p in prefixes])
  scaled = np.where(allowed, logp / temperature, -np.inf)
  top = scaled.max(1, keepdims=True)
  return scaled - top - np.log(np.exp(scaled - top).sum(1, keepdims=True)), logp


def exact_distribution(prompt_t, temperature) -> np.ndarray:
  """Brute force: probability of every item under the trie-masked product distribution. [I]"""
  logq = np.zeros(ITEMS)
  for level in range(LEVELS):
    prefixes = sorted({tuple(s[:level]) for s in SIDS})
    logq_pc, _ = masked_log_probs(prompt_t, prefixes, level, temperature)
    rows = np.array([prefixes.index(tuple(s[:level])) for s in SIDS])
    logq += logq_pc[rows, SIDS[:, level]]
  return np.exp(logq)


@pytest.fixture(scope="module")
def draws():
  """DRAWS samples of each of the 3 prompts, with key 0."""
  return sample(ROWS, jax.random.key(0))


def test_empirical_distribution_matches_exact(draws):
  items = np.asarray(draws.items)
  assert items.min() >= 0
  np.testing.assert_array_equal(np.asarray(draws.codes), SIDS[items])
  np.testing.assert_array_equal(np.asarray(draws.token_ids), TABLE[np.arange(LEVELS), SIDS[items]])
  tokens, mask = prompts()
  for row in range(3):
    empirical = np.bincount(items[ROWS == row], minlength=ITEMS) / DRAWS
    exact = exact_distribution(real_tokens(tokens, mask, row), TEMPERATURE)
    np.testing.assert_allclose(exact.sum(), 1.0, atol=1e-9)
    assert 0.5 * np.abs(empirical - exact).sum() < 0.05
    # The test has power: the temperature-1 distribution is farther than the tolerance.
    exact_t1 = exact_distribution(real_tokens(tokens, mask, row), 1.0)
    assert 0.5 * np.abs(empirical - exact_t1).sum() > 0.05


def test_same_key_same_samples_other_key_other_samples(draws):
  again = sample(ROWS, jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(again.codes), np.asarray(draws.codes))
  other = sample(ROWS, jax.random.key(1))
  assert np.mean(np.asarray(other.items) != np.asarray(draws.items)) > 0.2
  # A row's draws depend on (key, row index) only, not on the other rows of the batch.
  alone = sample(np.ones_like(ROWS), jax.random.key(0))
  ones = ROWS == 1
  np.testing.assert_array_equal(np.asarray(alone.codes)[ones], np.asarray(draws.codes)[ones])


def test_logprobs_match_brute_force(draws):
  tokens, mask = prompts()
  codes = np.asarray(draws.codes)
  for r in np.arange(0, len(ROWS), DRAWS // 4):  # 4 samples of each prompt
    prompt_t = real_tokens(tokens, mask, ROWS[r])
    for level in range(LEVELS):
      logq, logp = masked_log_probs(prompt_t, [tuple(codes[r, :level])], level, TEMPERATURE)
      np.testing.assert_allclose(float(draws.logprobs[r, level]), logq[0, codes[r, level]],
                                 atol=1e-4)
      np.testing.assert_allclose(float(draws.model_logprobs[r, level]), logp[0, codes[r, level]],
                                 atol=1e-4)
  assert np.abs(np.asarray(draws.logprobs - draws.model_logprobs)).max() > 1e-2  # two fields


def test_small_temperature_gives_the_beam_1_item():
  tokens, mask = prompts()
  greedy = np.array([numpy_beam_search(real_tokens(tokens, mask, row), 1)[0][0]
                     for row in range(3)])
  assert len(set(greedy)) > 1  # the prompts differ where it matters
  cold = sample(ROWS, jax.random.key(3), temperature=1e-4)
  np.testing.assert_array_equal(np.asarray(cold.items), greedy[ROWS])
  warm = sample(ROWS, jax.random.key(3), temperature=5.0)
  assert np.mean(np.asarray(warm.items) != greedy[ROWS]) > 0.5


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_non_positive_temperature_raises(temperature):
  with pytest.raises(ValueError, match="temperature"):
    sample(ROWS[:2], jax.random.key(0), temperature=temperature)


def test_path_log_probs_of_every_sid_match_brute_force(draws):
  """Walking each valid SID through the sampling distribution gives its exact probability, and
  walking the drawn codes gives the log-probs they were drawn with."""
  tokens, mask = prompts()
  logits, cache, pos = prefill(T_MAX + LEVELS - 1, PARAMS, jnp.asarray(tokens), jnp.asarray(mask))
  rows = np.repeat(np.arange(3), ITEMS)  # every item's SID after every prompt
  path = sampling.sid_path_log_probs(PARAMS, CFG, logits[rows], beam_lib.take_rows(cache, rows),
                                     T_MAX, pos[rows], TRIE, TABLE, np.tile(SIDS, (3, 1)),
                                     TEMPERATURE)
  probs = np.exp(np.asarray(path, np.float64).sum(1)).reshape(3, ITEMS)
  for row in range(3):
    np.testing.assert_allclose(probs[row], exact_distribution(real_tokens(tokens, mask, row),
                                                              TEMPERATURE), rtol=1e-4, atol=1e-7)
  walked = sample(ROWS[::DRAWS // 8], jax.random.key(0))  # key unused by the walk below
  again = sampling.sid_path_log_probs(
      PARAMS, CFG, logits[ROWS[::DRAWS // 8]], beam_lib.take_rows(cache, ROWS[::DRAWS // 8]),
      T_MAX, pos[ROWS[::DRAWS // 8]], TRIE, TABLE, walked.codes, TEMPERATURE)
  np.testing.assert_allclose(np.asarray(again), np.asarray(walked.logprobs), atol=1e-5)
