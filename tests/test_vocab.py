"""Vocabulary extension: token strings, mean-initialized rows, tokenizer ids matching rows."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
import transformers
from test_cache import random_params
from test_model_parity import forward

from lasar_jax.model import hf_io, vocab
from lasar_jax.model.config import ModelConfig

WORDS = ["hello", "world", "the", "item", "user", "likes", "and", "a"]


def tiny_tokenizer(directory):
  """A whitespace word-level tokenizer (`[UNK] [PAD] </s>` + WORDS), saved and loaded back."""
  specials = ["[UNK]", "[PAD]", "</s>"]
  model = tokenizers.models.WordLevel({w: i for i, w in enumerate(specials + WORDS)}, unk_token="[UNK]")
  backend = tokenizers.Tokenizer(model)
  backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  backend.decoder = tokenizers.decoders.WordPiece()  # joins words with spaces
  tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]",
                                                   pad_token="[PAD]", eos_token="</s>")
  tokenizer.save_pretrained(str(directory))
  return hf_io.load_tokenizer(directory)


def tiny_cfg(vocab_size: int, tied: bool) -> ModelConfig:
  """A 2-layer Llama-style config."""
  return ModelConfig(architecture="llama", vocab_size=vocab_size, hidden_size=32,
                     intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                     tie_embeddings=tied)


def vocab_tables(params, cfg) -> list[np.ndarray]:
  """Embedding [V, D] and, when untied, LM head as [V, D]: one row per token id."""
  params = nn.meta.unbox(params)
  tables = [np.asarray(params["embedding"])]
  if not cfg.tie_embeddings:
    tables.append(np.asarray(params["lm_head"]).T)
  return tables


def test_token_strings():
  assert vocab.sid_token(0, 17) == "<a_17>" and vocab.sid_token(1, 3) == "<b_3>"
  assert vocab.sid_token(2, 250) == "<c_250>" and vocab.sid_token(3, 0) == "<d_0>"
  assert vocab.sid_tokens(2, 3) == ["<a_0>", "<a_1>", "<a_2>", "<b_0>", "<b_1>", "<b_2>"]
  assert vocab.SPECIAL_TOKENS == ("<bot>", "<eot>", "<pause>")
  for level, code in [(26, 0), (-1, 0), (0, -1)]:
    with pytest.raises(ValueError):
      vocab.sid_token(level, code)


@pytest.mark.parametrize("tied", [True, False])
def test_extend_vocab_keeps_old_outputs(tied):
  cfg = tiny_cfg(40, tied)
  params = random_params(cfg)  # boxed NumPy leaves
  new_params, new_cfg = vocab.extend_vocab(params, cfg, 7)
  assert new_cfg == cfg.replace(vocab_size=47)
  assert isinstance(new_params["embedding"], nn.LogicallyPartitioned)
  assert new_params["embedding"].names == params["embedding"].names
  assert new_params["layers"] is params["layers"]  # nothing else touched
  for old, new in zip(vocab_tables(params, cfg), vocab_tables(new_params, new_cfg), strict=True):
    assert new.shape == (47, 32)
    np.testing.assert_array_equal(new[:40], old)
    np.testing.assert_allclose(new[40:], np.broadcast_to(old.mean(axis=0), (7, 32)), rtol=1e-6)

  tokens = jnp.asarray(np.random.RandomState(0).randint(0, 40, (2, 9)))  # old tokens only
  mask = jnp.ones(tokens.shape, bool)
  logits, hidden = forward(cfg, nn.meta.unbox(params), tokens, mask)
  new_logits, new_hidden = forward(new_cfg, nn.meta.unbox(new_params), tokens, mask)
  np.testing.assert_array_equal(np.asarray(new_hidden), np.asarray(hidden))  # bitwise
  # The LM-head matmul over 47 columns may tile differently from 40: equal up to rounding.
  np.testing.assert_allclose(np.asarray(new_logits[..., :40]), np.asarray(logits), atol=2e-6, rtol=0)
  # A head row at the mean of the rows gives the mean of the old logits (the head is linear).
  mean_logits = np.broadcast_to(np.asarray(logits).mean(-1, keepdims=True), (2, 9, 7))
  np.testing.assert_allclose(np.asarray(new_logits[..., 40:]), mean_logits, atol=1e-5, rtol=0)


def test_extend_vocab_plain_and_device_params_agree():
  cfg = tiny_cfg(40, tied=False)
  boxed = random_params(cfg)
  from_boxed, _ = vocab.extend_vocab(boxed, cfg, 5)
  from_plain, _ = vocab.extend_vocab(nn.meta.unbox(boxed), cfg, 5)
  on_device = jax.tree.map(jnp.asarray, nn.meta.unbox(boxed))
  from_device, _ = vocab.extend_vocab(on_device, cfg, 5)
  assert isinstance(from_plain["embedding"], np.ndarray)
  assert isinstance(from_device["lm_head"], jax.Array)
  for a, b, c in zip(vocab_tables(from_boxed, cfg), vocab_tables(from_plain, cfg),
                     vocab_tables(from_device, cfg), strict=True):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(c, b, atol=1e-7, rtol=1e-5)  # jax and NumPy sum in other orders


def test_extend_tokenizer_maps_new_strings_to_new_ids(tmp_path):
  tokenizer = tiny_tokenizer(tmp_path)
  new_tokens = list(vocab.SPECIAL_TOKENS) + vocab.sid_tokens(2, 3)
  before = len(tokenizer)
  ids = vocab.extend_tokenizer(tokenizer, new_tokens)
  assert ids == {t: before + i for i, t in enumerate(new_tokens)}
  assert len(tokenizer) == before + len(new_tokens)
  encoded = tokenizer.encode("user likes <a_1><b_2> and <bot>", add_special_tokens=False)
  word = tokenizer.convert_tokens_to_ids
  assert encoded == [word("user"), word("likes"), ids["<a_1>"], ids["<b_2>"], word("and"),
                     ids["<bot>"]]
  assert tokenizer.convert_ids_to_tokens(encoded) == ["user", "likes", "<a_1>", "<b_2>", "and", "<bot>"]
  assert "<a_1>" in tokenizer.decode(encoded)  # kept by decode (no skip_special_tokens)
  assert vocab.extend_tokenizer(tokenizer, ["<a_1>", "<pause>"]) == {"<a_1>": ids["<a_1>"],
                                                                    "<pause>": ids["<pause>"]}
  assert len(tokenizer) == before + len(new_tokens)  # adding again adds nothing


@pytest.mark.parametrize("spare_rows", [0, 3, 20])
def test_extend_model_and_tokenizer_ids_index_mean_rows(spare_rows, tmp_path):
  tokenizer = tiny_tokenizer(tmp_path)
  before = len(tokenizer)
  cfg = tiny_cfg(before + spare_rows, tied=False)  # Qwen-like: more rows than tokenizer entries
  params = random_params(cfg)
  new_tokens = list(vocab.SPECIAL_TOKENS) + vocab.sid_tokens(2, 4)  # 11 tokens
  new_params, new_cfg, ids = vocab.extend_model_and_tokenizer(params, cfg, tokenizer, new_tokens)
  assert sorted(ids.values()) == list(range(before, before + 11))
  assert new_cfg.vocab_size == max(cfg.vocab_size, before + 11) >= len(tokenizer)
  for old, new in zip(vocab_tables(params, cfg), vocab_tables(new_params, new_cfg), strict=True):
    np.testing.assert_array_equal(new[:before], old[:before])  # existing tokens untouched
    mean = old.mean(axis=0)
    np.testing.assert_allclose(new[list(ids.values())], np.broadcast_to(mean, (11, 32)), rtol=1e-6)
    np.testing.assert_array_equal(new[before + 11:], old[before + 11:])  # unused spare rows


def test_tokenizer_larger_than_embedding_is_rejected(tmp_path):
  tokenizer = tiny_tokenizer(tmp_path)
  cfg = tiny_cfg(len(tokenizer) - 1, tied=True)
  with pytest.raises(ValueError, match="rows"):
    vocab.extend_model_and_tokenizer(random_params(cfg), cfg, tokenizer, [vocab.BOT])


def test_new_rows_with_noise_have_the_old_rows_spread(tmp_path):
  tokenizer = tiny_tokenizer(tmp_path)
  before = len(tokenizer)
  cfg = tiny_cfg(before, tied=True)
  params = nn.meta.unbox(random_params(cfg))
  new_tokens = vocab.sid_tokens(4, 256)  # enough rows to estimate a mean and a spread
  new_params, _, ids = vocab.extend_model_and_tokenizer(params, cfg, tokenizer, new_tokens,
                                                        noise_scale=0.5, key=jax.random.key(3))
  old = np.asarray(params["embedding"], np.float64)
  new = np.asarray(new_params["embedding"], np.float64)
  np.testing.assert_array_equal(new[:before], old[:before])  # existing tokens untouched
  fresh = new[list(ids.values())]
  assert len({row.tobytes() for row in fresh}) == len(fresh)  # no two new rows are equal
  np.testing.assert_allclose(fresh.mean(axis=0), old.mean(axis=0), atol=4 * 0.5 * old.std() / 32)
  np.testing.assert_allclose(fresh.std(axis=0) / old.std(axis=0), 0.5, rtol=0.15)
  again, _, _ = vocab.extend_model_and_tokenizer(params, cfg, tiny_tokenizer(tmp_path / "b"),
                                                 new_tokens, noise_scale=0.5, key=jax.random.key(3))
  np.testing.assert_array_equal(np.asarray(again["embedding"]), new_params["embedding"])
