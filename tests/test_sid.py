"""SID tokenizers: k-means, RQ-VAE, RQ-KMeans, collision handling, stats, `fit_sids`."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lasar_jax import sid
from lasar_jax.configs import common
from lasar_jax.sid import collisions
from lasar_jax.sid import kmeans as kmeans_lib
from lasar_jax.sid import rqkmeans
from lasar_jax.sid import rqvae
from lasar_jax.sid import stats as stats_lib


def clustered_embeddings(seed: int, n: int = 256, dim: int = 16, clusters: int = 8,
                         duplicates: int = 12) -> np.ndarray:
  """Unequal Gaussian clusters, L2-normalized; the last `duplicates` rows copy the first ones."""
  rng = np.random.default_rng(seed)
  centers_cd = 2.0 * rng.normal(size=(clusters, dim))
  weights_c = np.arange(1, clusters + 1) / np.sum(np.arange(1, clusters + 1))
  x_nd = centers_cd[rng.choice(clusters, n, p=weights_c)] + 0.5 * rng.normal(size=(n, dim))
  x_nd[n - duplicates:] = x_nd[:duplicates]
  return (x_nd / np.linalg.norm(x_nd, axis=1, keepdims=True)).astype(np.float32)


def small_config(method: str, collision: str = "extra_level"):
  """A sid_config() small enough for CPU tests (shared shapes, so jitted code compiles once)."""
  cfg = common.sid_config()
  cfg.method, cfg.collision = method, collision
  cfg.levels, cfg.codebook_size = 2, 16
  cfg.kmeans_iters = 10
  cfg.hidden_dims, cfg.latent_dim = (32,), 8
  cfg.epochs, cfg.batch_size, cfg.learning_rate = 40, 64, 3e-3
  cfg.dead_code_every = 8
  return cfg


def numpy_lloyd(x_nd, c_kd, num_iters):
  """Brute-force Lloyd in float64: explicit pairwise distances, empty clusters keep centers."""
  x_nd, c_kd = np.float64(x_nd), np.float64(c_kd)
  for _ in range(num_iters + 1):
    assign_n = np.argmin(((x_nd[:, None] - c_kd[None]) ** 2).sum(-1), axis=1)
    if _ == num_iters:
      break
    for j in range(c_kd.shape[0]):
      if np.any(assign_n == j):
        c_kd[j] = x_nd[assign_n == j].mean(0)
  return c_kd, assign_n


def numpy_balanced_assign(d_nk):
  """Reference of the greedy capacity-constrained assignment, one point at a time."""
  n, k = d_nk.shape
  floor, extra = divmod(n, k)
  sorted_nk = np.sort(d_nk, axis=1)
  order = np.argsort(-(sorted_nk[:, 1] - sorted_nk[:, 0]), kind="stable")
  counts, at_ceil, assign_n = np.zeros(k, int), 0, np.zeros(n, int)
  for i in order:
    open_k = (counts < floor) | ((counts == floor) & (at_ceil < extra))
    j = int(np.argmin(np.where(open_k, d_nk[i], np.inf)))
    at_ceil += counts[j] == floor
    counts[j] += 1
    assign_n[i] = j
  return assign_n


def lloyd_data() -> jnp.ndarray:
  """Points shared by the k-means tests (one shape, so `kmeans` compiles once)."""
  return jnp.asarray(clustered_embeddings(1, n=300, dim=8, duplicates=0))


def test_kmeans_matches_numpy_lloyd():
  x_nd, key = lloyd_data(), jax.random.key(3)
  c0_kd = jax.jit(kmeans_lib.kmeanspp_init, static_argnums=2)(key, x_nd, 6)
  # k-means++ picks data points, all distinct here.
  matches = np.all(np.isclose(np.asarray(c0_kd)[:, None], np.asarray(x_nd)[None]), axis=-1)
  assert matches.any(axis=1).all() and len(np.unique(np.asarray(c0_kd), axis=0)) == 6
  c_kd, assign_n = kmeans_lib.kmeans(key, x_nd, 6, 10)
  ref_c_kd, ref_assign_n = numpy_lloyd(x_nd, c0_kd, 10)
  np.testing.assert_array_equal(np.asarray(assign_n), ref_assign_n)
  np.testing.assert_allclose(np.asarray(c_kd), ref_c_kd, atol=1e-5)


def test_balanced_assign_matches_reference_and_sizes():
  d_nk = np.random.default_rng(0).random((203, 8)).astype(np.float32)
  assign_n = np.asarray(jax.jit(kmeans_lib.balanced_assign)(jnp.asarray(d_nk)))
  np.testing.assert_array_equal(assign_n, numpy_balanced_assign(d_nk))
  sizes = np.bincount(assign_n, minlength=8)
  assert sizes.sum() == 203 and sizes.max() - sizes.min() <= 1


def test_balanced_kmeans_equal_sizes_on_skewed_data():
  x_nd = lloyd_data()
  _, plain_n = kmeans_lib.kmeans(jax.random.key(3), x_nd, 6, 10)
  _, balanced_n = kmeans_lib.kmeans(jax.random.key(3), x_nd, 6, 10, balanced=True)
  plain, balanced = np.bincount(plain_n, minlength=6), np.bincount(balanced_n, minlength=6)
  assert plain.max() - plain.min() > 1  # the data is skewed, so balance is not free
  assert balanced.max() - balanced.min() <= 1 and balanced.sum() == 300


def test_balanced_rqkmeans_levels_are_balanced():
  cfg = small_config("rqkmeans")
  cfg.balanced = True
  fit = rqkmeans.fit_rqkmeans(clustered_embeddings(2, n=200), cfg, seed=0)
  for l in range(cfg.levels):
    sizes = np.bincount(fit.codes[:, l], minlength=cfg.codebook_size)
    assert sizes.max() - sizes.min() <= 1


@pytest.fixture(scope="module")
def rqvae_fit():
  """One small RQ-VAE fit shared by the tests that only read it."""
  x_nd = clustered_embeddings(0)
  return x_nd, rqvae.fit_rqvae(x_nd, small_config("rqvae"), seed=0)


def test_rqvae_loss_decreases_and_beats_mean_predictor(rqvae_fit):
  x_nd, fit = rqvae_fit
  loss = fit.history["loss"]
  assert np.mean(loss[-5:]) < 0.7 * np.mean(loss[:2])
  mean_predictor = np.mean(np.sum((x_nd - x_nd.mean(0)) ** 2, axis=1))
  assert fit.history["final_recon"][0] < 0.5 * mean_predictor
  assert fit.codes.shape == (x_nd.shape[0], 2) and fit.last_cost.shape == (x_nd.shape[0], 16)


def test_rqvae_straight_through_and_codebook_gradient():
  x_nd = jnp.asarray(clustered_embeddings(0))
  cfg = small_config("rqvae")
  model = rqvae.RQVAE(16, tuple(cfg.hidden_dims), cfg.latent_dim, cfg.levels, cfg.codebook_size)
  hp = rqvae.TrainHParams.from_config(cfg)
  params = rqvae.init_state(jax.random.key(0), x_nd[:cfg.batch_size], model=model, hp=hp).params

  @jax.jit
  def gradients(params):
    recon_grads = jax.grad(lambda p: rqvae.rqvae_loss(model, p, x_nd, cfg.beta)[1]["recon"])(params)
    (_, aux), grads = jax.value_and_grad(
        lambda p: rqvae.rqvae_loss(model, p, x_nd, cfg.beta), has_aux=True)(params)
    return recon_grads, grads, aux

  recon_grads, grads, aux = gradients(params)
  encoder_grads = jax.tree.leaves(recon_grads["params"]["encoder"])
  encoder_sq = sum(float(jnp.sum(g ** 2)) for g in encoder_grads)
  assert encoder_sq > 1e-8  # the reconstruction reaches the encoder through the quantizer
  assert not np.any(np.asarray(recon_grads["params"]["codebooks"]))
  codes_nl, r_lnd = np.asarray(aux["codes"]), np.asarray(aux["residuals"])
  e_lkd = np.asarray(params["params"]["codebooks"])
  expected_lkd = np.zeros_like(e_lkd)
  n = x_nd.shape[0]
  for l in range(cfg.levels):
    np.add.at(expected_lkd[l], codes_nl[:, l], 2.0 / n * (e_lkd[l][codes_nl[:, l]] - r_lnd[l]))
  assert np.abs(expected_lkd).max() > 1e-4
  np.testing.assert_allclose(np.asarray(grads["params"]["codebooks"]), expected_lkd,
                             rtol=1e-4, atol=1e-6)


def test_dead_codes_are_reseeded_from_residuals():
  codebooks_lkd = jnp.zeros((2, 4, 3))
  usage_lk = jnp.array([[1, 0, 2, 0], [0, 5, 5, 5]])
  residuals_lbd = jnp.arange(2 * 6 * 3, dtype=jnp.float32).reshape(2, 6, 3) + 1.0
  out = np.asarray(jax.jit(rqvae.reseed_dead_codes)(jax.random.key(0), codebooks_lkd, usage_lk,
                                                    residuals_lbd))
  dead = np.asarray(usage_lk) == 0
  assert not np.any(out[~dead])
  for l, k in zip(*np.nonzero(dead)):
    assert any(np.array_equal(out[l, k], r) for r in np.asarray(residuals_lbd[l]))


@pytest.mark.parametrize("method", ["rqkmeans", "rqvae"])
@pytest.mark.parametrize("collision", ["extra_level", "balanced_last"])
def test_fit_sids_unique_with_forced_duplicates(method, collision):
  x_nd = clustered_embeddings(0)
  codes, stats = sid.fit_sids(x_nd, small_config(method, collision), seed=0)
  assert stats["collision_rate"] >= 24 / 256  # 12 exact duplicate pairs at least
  assert stats["unique_ratio"] == 1.0
  assert len({tuple(row) for row in codes}) == codes.shape[0]
  assert codes.dtype == np.int32 and stats["levels"] == codes.shape[1]
  assert codes.shape[1] == (3 if stats["extra_level"] else 2)
  assert np.all(codes.max(0) < np.array(stats["codebook_sizes"]))


@pytest.mark.parametrize("method", ["rqkmeans", "rqvae"])
def test_fit_sids_seeded(method):
  x_nd = clustered_embeddings(0)
  cfg = small_config(method)
  codes0, _ = sid.fit_sids(x_nd, cfg, seed=0)
  again, _ = sid.fit_sids(x_nd, cfg, seed=0)
  other, _ = sid.fit_sids(x_nd, cfg, seed=1)
  np.testing.assert_array_equal(codes0, again)
  assert not np.array_equal(codes0, other)


def test_extra_level_numbers_groups():
  codes_nl = np.array([[1, 2], [0, 0], [1, 2], [3, 1], [1, 2], [0, 0]])
  out = collisions.add_extra_level(codes_nl)
  np.testing.assert_array_equal(out[:, 2], [0, 0, 1, 0, 2, 1])
  np.testing.assert_array_equal(out[:, :2], codes_nl)


def test_balanced_last_moves_to_nearest_free_code():
  # Prefix 0 holds items 0-2 on code 1 and item 3 on code 0; prefix 1 holds item 4.
  codes_nl = np.array([[0, 1], [0, 1], [0, 1], [0, 0], [1, 1]])
  cost_nk = np.array([[0.5, 0.1, 0.3, 0.4],    # item 0: costs to last codes 0..3
                      [0.0, 0.2, 0.2, 0.9],    # item 1: nearest free code is 2 (0 is taken)
                      [0.0, 0.05, 0.4, 0.6],   # item 2 keeps code 1 (nearest to it)
                      [0.0, 0.9, 0.9, 0.9],
                      [0.0, 0.1, 0.2, 0.3]])
  moved_nl, stuck_n = collisions.reassign_last_level(codes_nl, cost_nk)
  # item 2 keeps code 1; items 0 and 1 both want code 2: item 1 is nearer, item 0 takes code 3.
  np.testing.assert_array_equal(moved_nl[:, 1], [3, 2, 1, 0, 1])
  assert not stuck_n.any()


def test_balanced_last_falls_back_to_extra_level_when_prefix_is_full():
  codes_nl = np.array([[0, 0], [0, 0], [0, 1], [0, 1], [1, 0]])  # prefix 0 has 4 items, K = 2
  cost_nk = np.random.default_rng(0).random((5, 2))
  out, info = collisions.resolve_collisions(codes_nl, cost_nk, "balanced_last")
  assert info["extra_level"] and info["fallback_items"] == 2 and out.shape == (5, 3)
  assert len({tuple(row) for row in out}) == 5
  out, info = collisions.resolve_collisions(codes_nl[1:], cost_nk[1:], "balanced_last")
  assert info == {"reassigned_items": 0, "fallback_items": 1, "extra_level": True}


def test_stats_match_direct_count():
  rng = np.random.default_rng(0)
  raw_nl = rng.integers(0, 4, (60, 2))
  final_nm = collisions.add_extra_level(raw_nl)
  sizes = [4, 5, int(final_nm[:, 2].max()) + 1]
  stats = stats_lib.sid_stats(raw_nl, final_nm, sizes)
  counts = collections.Counter(map(tuple, raw_nl))
  assert stats["collision_rate"] == pytest.approx(
      sum(1 for row in raw_nl if counts[tuple(row)] > 1) / 60)
  assert stats["unique_ratio"] == pytest.approx(len(set(map(tuple, final_nm))) / 60) == 1.0
  assert stats["num_items"] == 60 and stats["levels"] == 3 and stats["codebook_sizes"] == sizes
  for l, size in enumerate(sizes):
    level_counts = collections.Counter(final_nm[:, l].tolist())
    p = np.array(list(level_counts.values())) / 60
    assert stats["usage_per_level"][l]["used_fraction"] == pytest.approx(len(level_counts) / size)
    perplexity = np.exp(-np.sum(p * np.log(p)))
    assert stats["usage_per_level"][l]["perplexity"] == pytest.approx(perplexity)
  assert stats["usage_per_level"][1]["used_fraction"] == pytest.approx(0.8)


def test_centering_removes_a_shared_offset_before_quantizing():
  from lasar_jax import sid

  rng = np.random.default_rng(0)
  clusters = rng.normal(size=(4, 16))[rng.integers(0, 4, 64)] + 0.05 * rng.normal(size=(64, 16))
  shifted = clusters + 100.0 * rng.normal(size=(1, 16))  # a large component every item shares
  shifted /= np.linalg.norm(shifted, axis=1, keepdims=True)
  centered = sid.center_embeddings(shifted)
  np.testing.assert_allclose(np.linalg.norm(centered, axis=1), 1.0, atol=1e-5)
  reference = clusters - clusters.mean(0)
  reference /= np.linalg.norm(reference, axis=1, keepdims=True)
  # the direction of every item relative to the others is recovered (up to the normalization)
  assert np.corrcoef(centered.ravel(), reference.ravel())[0, 1] > 0.9
  assert np.mean(shifted @ shifted.T) > 0.99 > np.mean(centered @ centered.T) + 0.5
