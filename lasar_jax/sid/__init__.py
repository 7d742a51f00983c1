"""Semantic IDs: item embeddings to unique code sequences (RQ-VAE or RQ-KMeans), stats, prefix trie.

Entry point: `fit_sids(embeddings [I, E], config.sid, seed) -> (codes [I, L'] int32, stats)`.
"""

import numpy as np

from lasar_jax.sid import collisions
from lasar_jax.sid import rqkmeans
from lasar_jax.sid import rqvae
from lasar_jax.sid import stats as stats_lib

_QUANTIZERS = {"rqvae": rqvae.fit_rqvae, "rqkmeans": rqkmeans.fit_rqkmeans}


def center_embeddings(embeddings_ie: np.ndarray) -> np.ndarray:
  """Subtracts the mean item embedding and re-normalizes each row. [I, E] f32

  Mean-pooled LLM hidden states share a large common component (a few outlier dimensions), so
  raw item embeddings sit in a narrow cone (mean cosine 0.92 for SmolLM2-135M) and RQ-VAE
  collapses onto one code per level; removing the mean keeps what tells items apart.
  """
  centered = embeddings_ie - embeddings_ie.mean(axis=0, keepdims=True)
  return centered / np.maximum(np.linalg.norm(centered, axis=1, keepdims=True), 1e-12)


def fit_sids(embeddings_ie: np.ndarray, cfg, seed: int) -> tuple[np.ndarray, dict]:
  """Quantizes the items per `cfg` (a `sid_config()`), then makes every SID unique.

  Returns (codes [I, L'] int32 with L' = levels, or levels + 1 when an extra level was appended,
  stats: `stats.sid_stats` figures plus 'method', 'collision', the collision info and the
  quantizer's 'history').
  """
  if cfg.method not in _QUANTIZERS:
    raise ValueError(f"unknown SID method {cfg.method!r}: expected one of {sorted(_QUANTIZERS)}")
  embeddings_ie = np.asarray(embeddings_ie, np.float32)
  if cfg.center:
    embeddings_ie = center_embeddings(embeddings_ie)
  fit = _QUANTIZERS[cfg.method](embeddings_ie, cfg, seed)
  codes_im, info = collisions.resolve_collisions(fit.codes, fit.last_cost, cfg.collision)
  sizes = [cfg.codebook_size] * cfg.levels
  if info["extra_level"]:
    sizes.append(int(codes_im[:, -1].max()) + 1)
  figures = stats_lib.sid_stats(fit.codes, codes_im, sizes)
  return codes_im, {**figures, "method": cfg.method, "collision": cfg.collision, **info,
                    "history": fit.history}
