"""Prefix trie of SIDs: masks and transitions against a brute-force set of prefixes."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lasar_jax.sid import trie as trie_lib

SIZES = (5, 4, 3)  # codebook size per level
WIDTH = 6  # child-table width, wider than any level (as with an extra level)


def random_sids(seed: int, n: int = 40) -> np.ndarray:
  """n distinct SIDs drawn from the product of the level sizes. [n, 3]"""
  every = np.array(list(itertools.product(*map(range, SIZES))))
  return every[np.random.default_rng(seed).choice(len(every), n, replace=False)]


@pytest.fixture(scope="module")
def built():
  """Codes, their trie, the set of valid prefixes (empty one included) and jitted functions."""
  codes = random_sids(0)
  prefixes = {tuple(row[:d]) for row in codes for d in range(codes.shape[1] + 1)}
  fns = {"advance": jax.jit(trie_lib.advance), "allowed": jax.jit(trie_lib.allowed_mask),
         "item_of": jax.jit(trie_lib.item_of)}
  return codes, trie_lib.build_trie(codes, num_codes=WIDTH), prefixes, fns


def walk(fns, trie, prefixes_bd: np.ndarray) -> jax.Array:
  """Node reached from the root by each row's codes. [B]"""
  node_b = jnp.full(prefixes_bd.shape[0], trie_lib.ROOT, jnp.int32)
  for d in range(prefixes_bd.shape[1]):
    node_b = fns["advance"](trie, node_b, jnp.asarray(prefixes_bd[:, d], jnp.int32))
  return node_b


def test_shapes_and_node_count(built):
  codes, trie, prefixes, _ = built
  assert trie.children.shape == (len(prefixes), WIDTH) and trie.depth == 3
  assert trie.children.dtype == jnp.int32 and trie.item_of_leaf.dtype == jnp.int32
  assert int(jnp.sum(trie.item_of_leaf >= 0)) == codes.shape[0]


def test_masks_match_brute_force_for_every_prefix(built):
  _, trie, prefixes, fns = built
  for depth in range(4):
    valid = sorted(p for p in prefixes if len(p) == depth)
    node_b = walk(fns, trie, np.array(valid, np.int64).reshape(len(valid), depth))
    assert np.all(np.asarray(node_b) > 0) or depth == 0
    mask_bc = np.asarray(fns["allowed"](trie, node_b))
    expected_bc = np.array([[p + (c,) in prefixes for c in range(WIDTH)] for p in valid])
    np.testing.assert_array_equal(mask_bc, expected_bc)
    # advance by each code agrees with the mask: valid child iff allowed.
    for c in range(WIDTH + 1):
      child_b = fns["advance"](trie, node_b, jnp.full_like(node_b, c))
      np.testing.assert_array_equal(np.asarray(child_b) >= 0, expected_bc[:, c] if c < WIDTH
                                    else np.zeros(len(valid), bool))


def test_invalid_prefixes_allow_nothing(built):
  _, trie, prefixes, fns = built
  every = [p for d in (1, 2, 3) for p in itertools.product(*map(range, SIZES[:d]))]
  invalid = [p for p in every if p not in prefixes]
  assert invalid
  for depth in (1, 2, 3):
    rows = np.array([p for p in invalid if len(p) == depth]).reshape(-1, depth)
    node_b = walk(fns, trie, rows)
    np.testing.assert_array_equal(np.asarray(node_b), -1)
    assert not np.asarray(fns["allowed"](trie, node_b)).any()
    np.testing.assert_array_equal(np.asarray(fns["item_of"](trie, node_b)), -1)


def test_walking_each_sid_reaches_its_item(built):
  codes, trie, _, fns = built
  leaf_b = walk(fns, trie, codes)
  np.testing.assert_array_equal(np.asarray(fns["item_of"](trie, leaf_b)), np.arange(len(codes)))
  assert not np.asarray(fns["allowed"](trie, leaf_b)).any()  # leaves have no children
  inner_b = walk(fns, trie, codes[:, :2])
  np.testing.assert_array_equal(np.asarray(fns["item_of"](trie, inner_b)), -1)


def test_trie_is_a_jit_argument(built):
  codes, trie, _, _ = built
  other = trie_lib.build_trie(random_sids(1), num_codes=WIDTH)

  @jax.jit
  def leaf_items(trie, codes_bl):
    node_b = jnp.zeros(codes_bl.shape[0], jnp.int32)
    for l in range(trie.depth):
      node_b = trie_lib.advance(trie, node_b, codes_bl[:, l])
    return trie_lib.item_of(trie, node_b)

  np.testing.assert_array_equal(np.asarray(leaf_items(trie, jnp.asarray(codes))),
                                np.arange(len(codes)))
  np.testing.assert_array_equal(np.asarray(leaf_items(other, jnp.asarray(random_sids(1)))),
                                np.arange(len(codes)))


def test_duplicate_sids_are_rejected():
  codes = np.array([[0, 1], [0, 1]])
  with pytest.raises(ValueError, match="not unique"):
    trie_lib.build_trie(codes)
