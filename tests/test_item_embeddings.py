"""Item embeddings: batched bucketed encoding equals one-at-a-time pooling; the cache is keyed."""

import flax.linen as nn
import jax
import numpy as np

from lasar_jax import item_embeddings, text_tokenizer
from lasar_jax.model import transformer
from lasar_jax.model.config import PRESETS

TEXTS = ["Acme Stainless Steel Chef Knife 8 inch", "Blue cotton t-shirt", "Acme paring knife",
         "A very long description " * 12, "x"]


def _setup():
  tokenizer = text_tokenizer.train_tokenizer(TEXTS * 3, vocab_size=300)
  cfg = PRESETS["tiny"].replace(vocab_size=len(tokenizer), num_layers=2, hidden_size=64,
                                intermediate_size=128, head_dim=16)
  params = nn.meta.unbox(transformer.init_params(cfg, jax.random.key(0)))
  return cfg, params, tokenizer


def test_batched_embeddings_equal_single_text_reference():
  cfg, params, tokenizer = _setup()
  got = item_embeddings.embed_texts(cfg, params, tokenizer, TEXTS, batch_size=2, progress=False)
  forward = jax.jit(lambda ids, mask: transformer.Decoder(cfg).apply(
      {"params": params}, ids, mask=mask, positions=transformer.positions_from_mask(mask))[1])
  for i, text in enumerate(TEXTS):  # each text alone, unpadded
    ids = np.asarray([tokenizer(text, add_special_tokens=False)["input_ids"][:128]])
    ref = np.asarray(forward(ids, np.ones_like(ids, bool)), np.float64)[0].mean(0)
    np.testing.assert_allclose(got[i], ref / np.linalg.norm(ref), atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_cache_reuses_and_distinguishes(tmp_path):
  cfg, params, tokenizer = _setup()
  first = item_embeddings.cached_embed_texts(tmp_path, "m1", cfg, params, tokenizer, TEXTS)
  assert len(list(tmp_path.glob("*.npy"))) == 1
  again = item_embeddings.cached_embed_texts(tmp_path, "m1", cfg, None, None, TEXTS)  # no model use
  np.testing.assert_array_equal(first, again)
  item_embeddings.cached_embed_texts(tmp_path, "m2", cfg, params, tokenizer, TEXTS)
  assert len(list(tmp_path.glob("*.npy"))) == 2


def test_bucket_lengths():
  lengths = (1, 16, 17, 25, 33, 49, 65, 97, 100, 129, 500)
  expected = [16, 16, 24, 32, 48, 64, 96, 128, 128, 128, 128]
  assert [item_embeddings.bucket_length(n, 128) for n in lengths] == expected
  for n in range(1, 2000):  # the bucket holds n, and at most a third of it is padding
    bucket = item_embeddings.bucket_length(n, 1 << 30)
    assert n <= bucket and (bucket <= 16 or 3 * (bucket - n) < bucket)
