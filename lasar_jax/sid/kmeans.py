"""k-means in JAX: k-means++ or random init from a key, jitted Lloyd iterations, optional balance.

Shape letters: N points, K clusters, D dimensions.

Balanced assignment is a *greedy capacity-constrained* assignment (not Sinkhorn): points are taken
in order of decreasing margin (distance to their second-nearest center minus distance to their
nearest), and each takes its nearest center that still has room. A center has room while it holds
fewer than `N // K` points, or exactly `N // K` while fewer than `N % K` centers hold `N // K + 1`.
Every cluster therefore ends with `N // K` or `N // K + 1` points: sizes differ by at most 1.
"""

import functools

import jax
import jax.numpy as jnp


def squared_distances(x_nd: jax.Array, c_kd: jax.Array) -> jax.Array:
  """Squared Euclidean distances between points and centers, clamped at 0. [N, K]"""
  x_sq = jnp.sum(x_nd * x_nd, axis=-1, keepdims=True)  # [N, 1]
  c_sq = jnp.sum(c_kd * c_kd, axis=-1)  # [K]
  return jnp.maximum(x_sq - 2.0 * x_nd @ c_kd.T + c_sq, 0.0)


def kmeanspp_init(key: jax.Array, x_nd: jax.Array, k: int) -> jax.Array:
  """k-means++ seeding: each next center drawn with probability proportional to d^2. [K, D]"""
  n = x_nd.shape[0]
  first = jax.random.randint(jax.random.fold_in(key, 0), (), 0, n)
  c_kd = jnp.zeros((k, x_nd.shape[1]), x_nd.dtype).at[0].set(x_nd[first])
  min_d2_n = squared_distances(x_nd, x_nd[first][None])[:, 0]  # [N]

  def add_center(i, carry):
    c_kd, min_d2_n = carry
    # A tiny floor keeps the draw defined when every point already coincides with a center.
    idx = jax.random.categorical(jax.random.fold_in(key, i), jnp.log(min_d2_n + 1e-30))
    c_kd = c_kd.at[i].set(x_nd[idx])
    min_d2_n = jnp.minimum(min_d2_n, squared_distances(x_nd, x_nd[idx][None])[:, 0])
    return c_kd, min_d2_n

  c_kd, _ = jax.lax.fori_loop(1, k, add_center, (c_kd, min_d2_n))
  return c_kd


def random_init(key: jax.Array, x_nd: jax.Array, k: int) -> jax.Array:
  """k distinct points drawn uniformly (with replacement only when fewer than k exist). [K, D]"""
  n = x_nd.shape[0]
  return x_nd[jax.random.choice(key, n, (k,), replace=n < k)]


def nearest_assign(d_nk: jax.Array) -> jax.Array:
  """Index of the nearest center of each point. [N] int32"""
  return jnp.argmin(d_nk, axis=-1).astype(jnp.int32)


def balanced_assign(d_nk: jax.Array) -> jax.Array:
  """Greedy capacity-constrained assignment (module docstring): sizes N // K or N // K + 1. [N]"""
  n, k = d_nk.shape
  floor, extra = n // k, n % k
  nearest_two = -jax.lax.top_k(-d_nk, min(2, k))[0]  # [N, 2] (or [N, 1])
  margin_n = nearest_two[:, -1] - nearest_two[:, 0]  # [N]
  order_n = jnp.argsort(-margin_n, stable=True)

  def take(t, carry):
    counts_k, num_at_ceil, assign_n = carry
    i = order_n[t]
    open_k = (counts_k < floor) | ((counts_k == floor) & (num_at_ceil < extra))
    j = jnp.argmin(jnp.where(open_k, d_nk[i], jnp.inf))
    num_at_ceil = num_at_ceil + (counts_k[j] == floor).astype(jnp.int32)
    return counts_k.at[j].add(1), num_at_ceil, assign_n.at[i].set(j)

  init = (jnp.zeros(k, jnp.int32), jnp.int32(0), jnp.zeros(n, jnp.int32))
  return jax.lax.fori_loop(0, n, take, init)[2]


def assign(x_nd: jax.Array, c_kd: jax.Array, balanced: bool = False) -> jax.Array:
  """Cluster of each point: nearest center, or the balanced greedy assignment. [N] int32"""
  d_nk = squared_distances(x_nd, c_kd)
  return balanced_assign(d_nk) if balanced else nearest_assign(d_nk)


def update_centers(x_nd: jax.Array, assign_n: jax.Array, c_kd: jax.Array) -> jax.Array:
  """Mean of each cluster's points; an empty cluster keeps its previous center. [K, D]"""
  k = c_kd.shape[0]
  sums_kd = jax.ops.segment_sum(x_nd, assign_n, num_segments=k)
  counts_k = jax.ops.segment_sum(jnp.ones_like(assign_n, x_nd.dtype), assign_n, num_segments=k)
  return jnp.where(counts_k[:, None] > 0, sums_kd / jnp.maximum(counts_k, 1.0)[:, None], c_kd)


def lloyd(x_nd: jax.Array, c_kd: jax.Array, num_iters: int,
          balanced: bool = False) -> tuple[jax.Array, jax.Array]:
  """`num_iters` rounds of (assign, update) from centers `c_kd`, then a final assignment.

  Returns (centers [K, D], assignment [N] int32 of every point to the returned centers).
  """
  def step(_, c_kd):
    return update_centers(x_nd, assign(x_nd, c_kd, balanced), c_kd)

  c_kd = jax.lax.fori_loop(0, num_iters, step, c_kd)
  return c_kd, assign(x_nd, c_kd, balanced)


@functools.partial(jax.jit, static_argnames=("k", "num_iters", "balanced", "init"))
def kmeans(key: jax.Array, x_nd: jax.Array, k: int, num_iters: int = 25, balanced: bool = False,
           init: str = "kmeans++") -> tuple[jax.Array, jax.Array]:
  """k-means from a key: init ('kmeans++' | 'random'), then Lloyd. Returns ([K, D], [N] int32)."""
  if init == "kmeans++":
    c_kd = kmeanspp_init(key, x_nd, k)
  elif init == "random":
    c_kd = random_init(key, x_nd, k)
  else:
    raise ValueError(f"unknown k-means init {init!r}: expected 'kmeans++' or 'random'")
  return lloyd(x_nd, c_kd, num_iters, balanced)
