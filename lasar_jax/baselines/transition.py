"""Item-to-item transition baseline: what followed the user's last items in the training data.

Counts T[a, b] = how often item b directly follows item a in the users' training interactions
(`PreparedData.training_sequences`: held-out targets are never counted). A user whose history
ends with items h_1 .. h_n (most recent last) scores item j as

  score(j) = sum_{m=1..M} decay^(m-1) * T[h_{n-m+1}, j]

(M = `last_items`), and ties, including items no transition reaches, are broken by training
popularity, then by item index: a first-order Markov chain backed off to most-popular. Cheap and
strong on data whose signal is mostly item-to-item (Amazon 2014 Office, METHOD section 9).
"""

import numpy as np
import scipy.sparse

from lasar_jax.eval import popularity


def transition_counts(training_sequences, num_items: int) -> scipy.sparse.csr_matrix:
  """T[a, b]: times item b directly follows item a in `training_sequences`. [I, I] sparse int64"""
  pairs = [np.stack([seq[:-1], seq[1:]]) for seq in training_sequences if len(seq) > 1]
  sources, targets = (np.concatenate(pairs, axis=1) if pairs else np.zeros((2, 0), np.int64))
  return scipy.sparse.csr_matrix((np.ones(len(sources), np.int64), (sources, targets)),
                                 shape=(num_items, num_items))


def history_weights(histories: np.ndarray, lengths: np.ndarray, num_items: int, last_items: int,
                    decay: float) -> scipy.sparse.csr_matrix:
  """W[n, a] = sum of decay^(m-1) over the positions m (1 = most recent) where item a stands among
  the last `last_items` items of history n. [N, I] sparse float64

  Args:
    histories: [N, H] int item indices, oldest first, right-padded with -1.
    lengths: [N] real items of each history.
  """
  rows, cols, values = [], [], []
  for m in range(1, last_items + 1):
    has = lengths >= m
    index = np.nonzero(has)[0]
    rows.append(index)
    cols.append(histories[index, lengths[index] - m])
    values.append(np.full(len(index), decay ** (m - 1)))
  return scipy.sparse.csr_matrix((np.concatenate(values), (np.concatenate(rows),
                                                           np.concatenate(cols))),
                                 shape=(len(histories), num_items))


def rank(counts: scipy.sparse.csr_matrix, item_popularity: np.ndarray, histories: np.ndarray,
         lengths: np.ndarray, k: int, last_items: int = 3, decay: float = 0.5,
         batch_size: int = 1024) -> np.ndarray:
  """The k best items of every history, best first. [N, k] int64

  Args:
    counts: `transition_counts` of the training data. [I, I]
    item_popularity: training interactions per item (the back-off). [I]
    histories: [N, H] int item indices, oldest first, right-padded with -1.
    lengths: [N] real items of each history.
    k: list length (at most the catalog size).
    last_items: M, how many of the most recent items vote.
    decay: weight of each older vote relative to the next newer one.
  """
  num_items = counts.shape[0]
  if not 1 <= k <= num_items:
    raise ValueError(f"list length k={k} must be in 1..{num_items} (the catalog size)")
  weights = history_weights(histories, lengths, num_items, last_items, decay)
  # Back-off: an item's place in the most-popular list (0 = most popular, ties by lower index).
  backoff_rank = np.empty(num_items, np.int64)
  backoff_rank[popularity.popularity_ranking(item_popularity, num_items, num_items)] = (
      np.arange(num_items))
  out = np.empty((len(histories), k), np.int64)
  for start in range(0, len(histories), batch_size):
    scores_ni = (weights[start:start + batch_size] @ counts).toarray()
    keys = np.broadcast_to(backoff_rank, scores_ni.shape)
    out[start:start + batch_size] = np.lexsort((keys, -scores_ni), axis=-1)[:, :k]
  return out
