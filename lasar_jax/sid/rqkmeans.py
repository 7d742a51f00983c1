"""Residual quantization with k-means codebooks (RQ-KMeans), and nearest-code residual quantization.

Shape letters: N points (items), L levels, K codes per level, D dimensions.
Level l quantizes the residual r_l = x - sum_{m<l} e_m, where e_m is the code chosen at level m.
"""

import functools
import typing

import jax
import jax.numpy as jnp
import numpy as np

from lasar_jax.sid import kmeans as kmeans_lib


class QuantizerFit(typing.NamedTuple):
  """What a SID quantizer hands to collision handling and stats (all NumPy)."""

  codes: np.ndarray  # [N, L] int32 code of each item at each level
  last_cost: np.ndarray  # [N, K] float32 squared distance of the last residual to each last code
  history: dict  # training curves or fit summaries (lists of floats), for reports


@jax.jit
def residual_quantize(x_nd: jax.Array, codebooks_lkd: jax.Array):
  """Nearest-code residual quantization with fixed codebooks.

  Returns (codes [N, L] int32, residuals [L, N, D] entering each level, last-level squared
  distances [N, K]).
  """
  def level(r_nd, c_kd):
    code_n = kmeans_lib.nearest_assign(kmeans_lib.squared_distances(r_nd, c_kd))
    return r_nd - c_kd[code_n], (code_n, r_nd)

  _, (codes_ln, residuals_lnd) = jax.lax.scan(level, x_nd, codebooks_lkd)
  last_cost_nk = kmeans_lib.squared_distances(residuals_lnd[-1], codebooks_lkd[-1])
  return codes_ln.T, residuals_lnd, last_cost_nk


@functools.partial(jax.jit, static_argnames=("levels", "k", "num_iters", "balanced", "init"))
def residual_kmeans(key: jax.Array, x_nd: jax.Array, levels: int, k: int, num_iters: int,
                    balanced: bool = False, init: str = "kmeans++"):
  """k-means on each level's residual in turn (level l from `fold_in(key, l)`), under `lax.scan`.

  Returns (codebooks [L, K, D], codes [N, L] int32, last-level squared distances [N, K]).
  With `balanced`, every level's clusters have sizes N // K or N // K + 1 (see kmeans.py).
  """
  def level(r_nd, l):
    c_kd, code_n = kmeans_lib.kmeans(jax.random.fold_in(key, l), r_nd, k, num_iters, balanced, init)
    return r_nd - c_kd[code_n], (c_kd, code_n, r_nd)

  _, (codebooks_lkd, codes_ln, residuals_lnd) = jax.lax.scan(level, x_nd, jnp.arange(levels))
  last_cost_nk = kmeans_lib.squared_distances(residuals_lnd[-1], codebooks_lkd[-1])
  return codebooks_lkd, codes_ln.T, last_cost_nk


def fit_rqkmeans(embeddings_nd: np.ndarray, cfg, seed: int) -> QuantizerFit:
  """RQ-KMeans directly on the item embeddings, per `cfg` (a `sid_config()`)."""
  x_nd = jnp.asarray(embeddings_nd, jnp.float32)
  codebooks_lkd, codes_nl, last_cost_nk = residual_kmeans(
      jax.random.key(seed), x_nd, cfg.levels, cfg.codebook_size, cfg.kmeans_iters, cfg.balanced,
      cfg.kmeans_init)
  quantized_nd = jnp.sum(jax.vmap(lambda c_kd, code_n: c_kd[code_n])(codebooks_lkd, codes_nl.T), 0)
  mse = float(jnp.mean(jnp.sum((x_nd - quantized_nd) ** 2, axis=-1)))
  return QuantizerFit(np.asarray(codes_nl, np.int32), np.asarray(last_cost_nk, np.float32),
                      {"quantization_error": [mse]})
