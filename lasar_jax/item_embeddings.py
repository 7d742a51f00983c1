"""Item-text embeddings from the backbone: L2-normalized mean of the last hidden states.

Texts are tokenized once, sorted by length and run in fixed-size batches padded to a few bucket
lengths, so the jitted encoder compiles once per bucket. Results are cached on disk under a key
made of the model's identity and the exact texts.
"""

import hashlib
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from lasar_jax import atomic
from lasar_jax.model import transformer
from lasar_jax.model.config import ModelConfig


def bucket_length(length: int, max_length: int, smallest: int = 16) -> int:
  """Padded length of a batch: the first of `smallest` (a power of two), 1.5x, 2x, 3x, 4x, ...
  (16, 24, 32, 48, 64, 96, ...) that holds `length`, capped at `max_length`. Steps of 1.5x and
  4/3 alternate: at most a third of a batch is padding, and few shapes compile."""
  bucket = smallest
  while bucket < length:
    bucket = bucket * 3 // 2 if bucket & (bucket - 1) == 0 else bucket * 4 // 3
  return min(bucket, max_length)


def make_encoder(cfg: ModelConfig):
  """Jitted fn(params, tokens [B, T], mask [B, T]) -> [B, D] f32 normalized mean-pooled hidden."""
  model = transformer.Decoder(cfg)

  @jax.jit
  def encode(params, tokens_bt, mask_bt):
    _, hidden_btd, _ = model.apply({"params": params}, tokens_bt, mask=mask_bt,
                                   positions=transformer.positions_from_mask(mask_bt),
                                   return_logits=False)
    weights_bt1 = mask_bt[..., None].astype(jnp.float32)
    pooled_bd = jnp.sum(hidden_btd.astype(jnp.float32) * weights_bt1, axis=1)
    pooled_bd /= jnp.maximum(jnp.sum(weights_bt1, axis=1), 1.0)
    return pooled_bd / jnp.maximum(jnp.linalg.norm(pooled_bd, axis=-1, keepdims=True), 1e-12)

  return encode


def embed_texts(cfg: ModelConfig, params, tokenizer, texts: list[str], batch_size: int = 64,
                max_length: int = 128, progress: bool = True) -> np.ndarray:
  """Embeddings [len(texts), D] f32 of `texts`, in input order."""
  ids = tokenizer(list(texts), add_special_tokens=False, truncation=True,
                  max_length=max_length)["input_ids"]
  for i, row in enumerate(ids):
    if not row:
      raise ValueError(f"item text #{i} ({texts[i]!r}) tokenizes to nothing")
  order = np.argsort([len(row) for row in ids], kind="stable")
  encode = make_encoder(cfg)
  out = np.zeros((len(texts), cfg.hidden_size), np.float32)
  batches = range(0, len(order), batch_size)
  for start in tqdm.tqdm(batches, desc="embedding items", unit="batch", disable=not progress):
    rows = order[start:start + batch_size]
    width = bucket_length(max(len(ids[r]) for r in rows), max_length)
    tokens = np.zeros((batch_size, width), np.int32)
    mask = np.zeros((batch_size, width), bool)
    for j, r in enumerate(rows):
      tokens[j, :len(ids[r])] = ids[r]
      mask[j, :len(ids[r])] = True
    out[rows] = np.asarray(encode(params, tokens, mask))[:len(rows)]
  return out


def cache_key(model_key: str, texts: list[str], max_length: int) -> str:
  """Hex digest identifying (model, texts, truncation) for the on-disk cache."""
  digest = hashlib.sha256()
  digest.update(json.dumps([model_key, max_length, list(texts)]).encode())
  return digest.hexdigest()[:24]


def cached_embed_texts(cache_dir, model_key: str, cfg: ModelConfig, params, tokenizer,
                       texts: list[str], max_length: int = 128, batch_size: int = 64) -> np.ndarray:
  """`embed_texts`, read from `cache_dir/<key>.npy` when already computed for this model and text."""
  path = pathlib.Path(cache_dir) / f"{cache_key(model_key, texts, max_length)}.npy"
  if path.exists():
    cached = np.load(path)
    if cached.shape == (len(texts), cfg.hidden_size):
      return cached
  embeddings = embed_texts(cfg, params, tokenizer, texts, batch_size=batch_size,
                           max_length=max_length)
  atomic.save_npy(path, embeddings)
  return embeddings
