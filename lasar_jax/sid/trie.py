"""Prefix trie of the valid SIDs as dense arrays, for constrained decoding inside `jax.jit`.

Shape letters: N items, L levels (trie depth), M nodes, C codes (width of a node's child table,
the largest codebook size), B rows of a batch. Node 0 is the root (the empty prefix); node -1
stands for "no such prefix" and has no children and no item. The trie speaks codes: mapping SID
level l's code c to a vocabulary token is the decoder's business.
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np

ROOT = 0  # node id of the empty prefix, where every decode starts

@flax.struct.dataclass
class SidTrie:
  """Dense child table of the SID prefixes; a pytree that can be passed into jitted functions."""

  children: jax.Array  # [M, C] int32 child node of each (node, code); -1 = no child
  item_of_leaf: jax.Array  # [M] int32 item whose full SID ends at the node; -1 for internal nodes
  depth: int = flax.struct.field(pytree_node=False)  # L, codes per SID


def build_trie(codes_nl: np.ndarray, num_codes: int | None = None) -> SidTrie:
  """Trie of the SIDs `codes_nl` [N, L] (item i = row i; rows must be distinct).

  num_codes: child-table width C (default: largest code + 1), e.g. the largest codebook size.
  """
  codes_nl = np.asarray(codes_nl, np.int64)
  n, depth = codes_nl.shape
  if np.unique(codes_nl, axis=0).shape[0] != n:
    raise ValueError("SIDs are not unique: resolve collisions before building the trie")
  width = int(codes_nl.max()) + 1 if num_codes is None else num_codes
  if codes_nl.min() < 0 or codes_nl.max() >= width:
    raise ValueError(f"codes must lie in [0, {width})")
  node_n = np.zeros(n, np.int64)  # node reached by each item's prefix so far
  edges = []  # (parent nodes, codes, child nodes) per level
  num_nodes = 1
  for l in range(depth):  # loop over levels; each level is vectorized over items
    edge_keys, child_n = np.unique(node_n * width + codes_nl[:, l], return_inverse=True)
    edges.append((edge_keys // width, edge_keys % width, num_nodes + np.arange(edge_keys.size)))
    node_n = num_nodes + child_n.reshape(-1)
    num_nodes += edge_keys.size
  children_mc = np.full((num_nodes, width), -1, np.int32)
  for parent_e, code_e, child_e in edges:
    children_mc[parent_e, code_e] = child_e
  item_of_leaf_m = np.full(num_nodes, -1, np.int32)
  item_of_leaf_m[node_n] = np.arange(n)
  return SidTrie(jnp.asarray(children_mc), jnp.asarray(item_of_leaf_m), depth)


def allowed_mask(trie: SidTrie, node_b: jax.Array) -> jax.Array:
  """Codes extending each node's prefix to a valid one; all False for leaves and node -1. [B, C]"""
  valid_b = node_b >= 0
  return valid_b[:, None] & (trie.children[jnp.maximum(node_b, 0)] >= 0)


def advance(trie: SidTrie, node_b: jax.Array, code_b: jax.Array) -> jax.Array:
  """Node after appending `code_b` to each node's prefix; -1 when that is no valid prefix. [B]"""
  width = trie.children.shape[1]
  ok_b = (node_b >= 0) & (code_b >= 0) & (code_b < width)
  child_b = trie.children[jnp.maximum(node_b, 0), jnp.clip(code_b, 0, width - 1)]
  return jnp.where(ok_b, child_b, -1)


def item_of(trie: SidTrie, node_b: jax.Array) -> jax.Array:
  """Item whose full SID ends at each node; -1 for internal nodes and node -1. [B]"""
  return jnp.where(node_b >= 0, trie.item_of_leaf[jnp.maximum(node_b, 0)], -1)
