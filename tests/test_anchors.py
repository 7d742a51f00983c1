"""CoT anchors: batched, bucketed extraction equals a plain single-sequence forward; cache keyed."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from lasar_jax import text_tokenizer
from lasar_jax.cot import anchors
from lasar_jax.model import transformer
from lasar_jax.model.config import PRESETS

TEXTS = ["The user bought, oldest first: Acme Chef Knife, Blue cotton t-shirt. Next item:",
         " Recent purchases are mostly Kitchen items.", " The user prefers the brand Acme.",
         " The last item was Acme Chef Knife.", " Next they likely want Kitchen > Knives."]
RATIONALES = [  # K = 1, 3, 2, 4, 2 steps; one step longer than MAX_STEP_TOKENS
    [" The last item was Acme Chef Knife."],
    [" Recent purchases are mostly Kitchen items.", " The user prefers the brand Acme.",
     " Next they likely want Kitchen > Knives."],
    [" The user prefers the brand Acme.", " The last item was Acme Chef Knife." * 6],
    [" Recent purchases are mostly Kitchen items.", " The user prefers the brand Acme.",
     " The last item was Acme Chef Knife.", " Next they likely want Kitchen > Knives."],
    [" Blue cotton t-shirt.", " Next they likely want Kitchen > Knives."],
]
MAX_STEPS, MAX_STEP_TOKENS, BOT_ID = 4, 12, 1
SEQUENCE_LENGTHS = [40, 70, 40, 70, 40]  # two lengths: two reference compiles, two buckets


@pytest.fixture(scope="module")
def model():
  """(cfg, params, tokenizer, prompts, step tokens): a tiny random decoder and 5 samples whose
  prompts (random ids) make the sequences SEQUENCE_LENGTHS long."""
  tokenizer = text_tokenizer.train_tokenizer(TEXTS * 3, vocab_size=300)
  cfg = PRESETS["tiny"].replace(vocab_size=len(tokenizer), num_layers=2, hidden_size=64,
                                intermediate_size=128, head_dim=16)
  params = nn.meta.unbox(transformer.init_params(cfg, jax.random.key(0)))
  steps = anchors.tokenize_steps(tokenizer, RATIONALES, MAX_STEP_TOKENS)
  rng = np.random.default_rng(0)
  prompts = [rng.integers(2, cfg.vocab_size, size=total - 1 - sum(len(s) for s in row),
                          dtype=np.int32) for total, row in zip(SEQUENCE_LENGTHS, steps)]
  return cfg, params, tokenizer, prompts, steps


def test_tokenize_steps_truncates_and_rejects_empty_steps(model):
  tokenizer = model[2]
  steps = anchors.tokenize_steps(tokenizer, RATIONALES, MAX_STEP_TOKENS)
  assert [len(s) for s in steps] == [len(r) for r in RATIONALES]
  assert all(1 <= len(step) <= MAX_STEP_TOKENS for row in steps for step in row)
  assert len(steps[2][1]) == MAX_STEP_TOKENS  # the long step was cut
  alone = tokenizer(RATIONALES[3][2], add_special_tokens=False)["input_ids"]
  np.testing.assert_array_equal(steps[3][2], alone)
  with pytest.raises(ValueError, match="step 1 of rationale #1"):
    anchors.tokenize_steps(tokenizer, [["ok"], ["ok", ""]], MAX_STEP_TOKENS)


def test_anchor_sequences_layout():
  prompts = [np.array([5, 6, 7], np.int32), np.array([8], np.int32)]
  steps = [[np.array([10, 11]), np.array([12])], [np.array([13, 14, 15])]]
  tokens, ends = anchors.anchor_sequences(prompts, BOT_ID, steps)
  np.testing.assert_array_equal(tokens[0], [5, 6, 7, BOT_ID, 10, 11, 12])
  np.testing.assert_array_equal(ends[0], [5, 6])
  np.testing.assert_array_equal(tokens[1], [8, BOT_ID, 13, 14, 15])
  np.testing.assert_array_equal(ends[1], [4])


def test_anchors_equal_single_sequence_forward(model):
  cfg, params, _, prompts, steps = model
  got, num_steps = anchors.extract_anchors(cfg, params, prompts, BOT_ID, steps, MAX_STEPS,
                                           batch_size=2, max_length=128, progress=False)
  assert got.shape == (len(prompts), MAX_STEPS, cfg.hidden_size) and got.dtype == np.float32
  np.testing.assert_array_equal(num_steps, [len(r) for r in RATIONALES])
  forward = jax.jit(lambda ids, mask: transformer.Decoder(cfg).apply(
      {"params": params}, ids, mask=mask, positions=transformer.positions_from_mask(mask),
      return_logits=False)[1])
  for n, (prompt, row) in enumerate(zip(prompts, steps)):  # each sequence alone, unpadded
    ids = np.concatenate([prompt, [BOT_ID], *row])[None]
    hidden = np.asarray(forward(ids, np.ones_like(ids, bool)))[0]  # [T, D]
    ends = len(prompt) + np.cumsum([len(s) for s in row])
    np.testing.assert_allclose(got[n, :len(row)], hidden[ends], atol=1e-5)
    assert np.abs(got[n, :len(row)]).sum(axis=1).min() > 0  # real anchors are non-zero
    np.testing.assert_array_equal(got[n, len(row):], 0.0)


def test_too_long_or_too_many_steps_is_an_error(model):
  cfg, params, _, prompts, steps = model
  with pytest.raises(ValueError, match="sample #3"):
    anchors.extract_anchors(cfg, params, prompts, BOT_ID, steps, max_steps=3, progress=False)
  with pytest.raises(ValueError, match=r"sample #1: 70 tokens \(at most 64\)"):
    anchors.extract_anchors(cfg, params, prompts, BOT_ID, steps, MAX_STEPS, max_length=64,
                            progress=False)


def test_cache_reuses_and_is_keyed(model, tmp_path):
  cfg, params, _, prompts, steps = model
  first = anchors.cached_anchors(tmp_path, "m1", cfg, params, prompts, BOT_ID, steps, MAX_STEPS,
                                 batch_size=2, max_length=128)
  assert len(list(tmp_path.glob("anchors_*.npz"))) == 1
  again = anchors.cached_anchors(tmp_path, "m1", cfg, None, prompts, BOT_ID, steps, MAX_STEPS)
  np.testing.assert_array_equal(first[0], again[0])  # params=None: read from the cache
  np.testing.assert_array_equal(first[1], again[1])
  anchors.cached_anchors(tmp_path, "m2", cfg, params, prompts, BOT_ID, steps, MAX_STEPS,
                         batch_size=2, max_length=128)
  assert len(list(tmp_path.glob("anchors_*.npz"))) == 2
  with pytest.raises(Exception):  # another model key is not served from the m1 cache
    anchors.cached_anchors(tmp_path, "m3", cfg, None, prompts, BOT_ID, steps, MAX_STEPS)
  moved = [list(row) for row in steps]
  moved[1] = [np.concatenate(moved[1][:2]), moved[1][2]]  # same tokens, other step boundary
  key = anchors.cache_key("m1", prompts, BOT_ID, steps, MAX_STEPS)
  assert anchors.cache_key("m1", prompts, BOT_ID, moved, MAX_STEPS) != key
