"""Latent loop: a row in a mixed-depth batch equals the row alone, one compile, gradients, remat."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lasar_jax.model import transformer as T
from lasar_jax.model.config import PRESETS
from lasar_jax.reasoning import latent

CFG = PRESETS["tiny"].replace(num_layers=2, vocab_size=64)
K = 5  # max_depth
DEPTHS = np.array([0, 1, 3, 5])
PROMPT_LENS = np.array([7, 3, 5, 6])  # real prefill tokens per row (right padded to 7)
SUFFIX_LENS = np.array([4, 4, 3, 4])  # real suffix tokens per row (right padded to 4)
ATOL = 1e-5
FAST_COMPILE = {"xla_backend_optimization_level": 0}  # 3x faster CPU compiles; same f32 math


def _perturbed(tree, seed: int, scale: float):
  """Adds N(0, scale) noise to every leaf, so that masking or position mistakes show."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(treedef, [x + scale * jax.random.normal(k, x.shape)
                                      for k, x in zip(keys, leaves)])


@functools.partial(jax.jit, compiler_options=FAST_COMPILE)
def _init():
  """(backbone params, projection params), both perturbed; jitted, as eager init is slow."""
  params = nn.meta.unbox(T.init_params(CFG, jax.random.key(0)))
  projection = nn.meta.unbox(latent.init_projection(CFG, jax.random.key(2)))
  return _perturbed(params, 1, 0.05), _perturbed(projection, 3, 0.05)


PARAMS, PROJECTION = _init()


def _batch():
  """Right-padded prefill [4, 7] and suffix [4, 4] blocks with their masks."""
  prompt = jax.random.randint(jax.random.key(4), (4, PROMPT_LENS.max()), 0, CFG.vocab_size)
  suffix = jax.random.randint(jax.random.key(5), (4, SUFFIX_LENS.max()), 0, CFG.vocab_size)
  prompt_mask = np.arange(prompt.shape[1])[None] < PROMPT_LENS[:, None]
  suffix_mask = np.arange(suffix.shape[1])[None] < SUFFIX_LENS[:, None]
  return prompt, jnp.asarray(prompt_mask), suffix, jnp.asarray(suffix_mask)


def _forward(params, projection, prompt, prompt_mask, depth, suffix, suffix_mask, remat=False):
  """`latent.latent_forward` with the test's config and K."""
  return latent.latent_forward(params, CFG, prompt, prompt_mask, depth, suffix, suffix_mask, K,
                               projection=projection, remat=remat)


forward = jax.jit(_forward, static_argnames="remat", compiler_options=FAST_COMPILE)


@functools.partial(jax.jit, compiler_options=FAST_COMPILE)
def _decode_one(embed_d, position, cache, index):
  """A plain cached decoder call on one column of one row: (logits [V], hidden [D], cache)."""
  logits, hidden, cache = T.Decoder(CFG).apply(
      {"params": PARAMS}, embeds=embed_d[None, None], positions=jnp.reshape(position, (1, 1)),
      mask=jnp.ones((1, 1), bool), cache=cache, cache_index=index)
  return logits[0, 0], hidden[0, 0], cache


def _embed(tokens_t):
  """Input embeddings of a token row. [T, D]"""
  return T.Decoder(CFG).apply({"params": PARAMS}, tokens_t, method=T.Decoder.embed)


def _row_alone(prompt_t, depth, suffix_t):
  """Reference: one unpadded row, a Python loop of single-column calls (tokens, `depth` latent
  steps, suffix tokens), no scan and no masks."""
  cache, slot = T.init_cache(CFG, 1, 24), 0
  for embed_d in _embed(prompt_t):
    _, h_d, cache = _decode_one(embed_d, slot, cache, slot)
    slot += 1
  steps = []
  for _ in range(depth):
    _, h_d, cache = _decode_one(h_d @ PROJECTION["kernel"] + PROJECTION["bias"], slot, cache, slot)
    steps.append(h_d)
    slot += 1
  logits = []
  for embed_d in _embed(suffix_t):
    logits_v, _, cache = _decode_one(embed_d, slot, cache, slot)
    logits.append(logits_v)
    slot += 1
  return np.asarray(steps).reshape(depth, CFG.hidden_size), np.asarray(h_d), np.asarray(logits)


def test_mixed_depth_rows_equal_rows_alone():
  prompt, prompt_mask, suffix, suffix_mask = _batch()
  out = forward(PARAMS, PROJECTION, prompt, prompt_mask, jnp.asarray(DEPTHS), suffix, suffix_mask)
  assert out.latent_hidden_bkd.shape == (4, K, CFG.hidden_size)
  assert out.suffix_logits_bsv.shape == (4, suffix.shape[1], CFG.vocab_size)
  for row, (depth, p, s) in enumerate(zip(DEPTHS, PROMPT_LENS, SUFFIX_LENS)):
    steps, final, logits = _row_alone(prompt[row, :p], depth, suffix[row, :s])
    np.testing.assert_allclose(np.asarray(out.latent_hidden_bkd[row, :depth]), steps, atol=ATOL)
    np.testing.assert_array_equal(np.asarray(out.latent_hidden_bkd[row, depth:]), 0.0)
    np.testing.assert_allclose(np.asarray(out.final_hidden_bd[row]), final, atol=ATOL)
    np.testing.assert_allclose(np.asarray(out.suffix_logits_bsv[row, :s]), logits, atol=ATOL)
  np.testing.assert_allclose(np.asarray(out.prompt_hidden_bd[0]), np.asarray(out.final_hidden_bd[0]))
  # Sanity for the comparison above: the depth does change a row's suffix logits.
  _, _, shallower = _row_alone(prompt[3, :PROMPT_LENS[3]], 4, suffix[3])
  assert np.abs(shallower - np.asarray(out.suffix_logits_bsv[3])).max() > 1e-2


def test_latent_steps_compile_once_for_all_depth_mixtures():
  prompt, prompt_mask, suffix, suffix_mask = _batch()
  b, p = prompt.shape

  def steps(params, projection, depth, cache_index):
    cache = T.init_cache(CFG, b, p + K + 2)
    h0, pos0, cache = latent.prefill(params, CFG, prompt, prompt_mask, cache)
    return latent.run_latent_steps(params, CFG, cache, cache_index, h0, pos0, depth, K, projection)

  counted_steps = jax.jit(chex.assert_max_traces(steps, n=1), compiler_options=FAST_COMPILE)
  finals = []
  for depths in ([0, 1, 3, 5], [5, 5, 5, 5], [0, 0, 0, 0], [2, 4, 1, 0]):
    depth = jnp.asarray(depths)
    result = counted_steps(PARAMS, PROJECTION, depth, jnp.int32(p))
    np.testing.assert_array_equal(np.asarray(result.next_pos_b), PROMPT_LENS + np.asarray(depths))
    np.testing.assert_array_equal(np.asarray(result.cache.valid[:, p:p + K]),
                                  np.arange(K)[None] < np.asarray(depths)[:, None])
    assert int(result.next_cache_index) == p + K
    finals.append(np.asarray(result.final_hidden_bd))
  assert np.abs(finals[0] - finals[1]).max() > 1e-2  # the depth is used, not baked in
  with pytest.raises(AssertionError):  # the counter does count: no projection is a new trace
    counted_steps(PARAMS, None, jnp.asarray([1, 2, 3, 4]), jnp.int32(p))


def _loss(params, projection, remat):
  """A scalar touching the suffix logits and the latent hidden states."""
  prompt, prompt_mask, suffix, suffix_mask = _batch()
  out = _forward(params, projection, prompt, prompt_mask, jnp.asarray(DEPTHS), suffix, suffix_mask,
                 remat=remat)
  logp = jax.nn.log_softmax(out.suffix_logits_bsv)
  return -jnp.mean(logp[..., 0]) + jnp.mean(out.latent_hidden_bkd ** 2), out


@functools.partial(jax.jit, static_argnames="remat", compiler_options=FAST_COMPILE)
def _grads(params, projection, remat):
  """(loss, forward output), grads w.r.t. (params, projection)."""
  return jax.value_and_grad(_loss, argnums=(0, 1), has_aux=True)(params, projection, remat)


def test_gradients_flow_through_the_chain_and_remat_matches():
  (loss, out), (g_params, g_proj) = _grads(PARAMS, PROJECTION, False)
  (loss_r, out_r), (g_params_r, g_proj_r) = _grads(PARAMS, PROJECTION, True)
  for name, g in [("params", g_params), ("projection", g_proj)]:
    for path, leaf in jax.tree_util.tree_flatten_with_path(g)[0]:
      assert np.isfinite(np.asarray(leaf)).all(), (name, path)
      assert np.abs(np.asarray(leaf)).max() > 0, (name, path)  # projection: only via latent steps
  np.testing.assert_allclose(float(loss_r), float(loss), rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6),
               (out_r, g_params_r, g_proj_r), (out, g_params, g_proj))

