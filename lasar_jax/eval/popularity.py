"""Most-popular baseline: rank items by their number of training interactions.

The standard baseline gives every user the same list, the most interacted-with items first, and
excludes nothing: like the generative models under the leave-one-out protocol (METHOD.md section
6), it may recommend items already in the user's history. `exclude` filters per user instead.
"""

import numpy as np


def count_items(sequences, num_items: int) -> np.ndarray:
  """Interactions per item index over `sequences` (each user's training items, once). [I] int64"""
  counts = np.zeros(num_items, np.int64)
  for items in sequences:
    items = np.asarray(items, np.int64)
    np.add.at(counts, items[items >= 0], 1)  # -1 padding is skipped
  return counts


def popularity_ranking(train_item_counts: np.ndarray, num_items: int, k: int) -> np.ndarray:
  """The k most interacted-with item indices, most first, ties broken by lower index.

  Args:
    train_item_counts: [<= num_items] interaction count per item index; missing trailing items
      count 0.
    num_items: size of the catalog.
    k: list length; positions beyond `num_items` are -1.
  Returns:
    [k] int64 item indices.
  """
  counts = np.asarray(train_item_counts)
  if counts.ndim != 1 or len(counts) > num_items:
    raise ValueError(f"expected at most {num_items} counts in one row; got shape {counts.shape}")
  counts = np.pad(counts, (0, num_items - len(counts)))
  order = np.argsort(-counts, kind="stable")[:k].astype(np.int64)
  return np.pad(order, (0, k - len(order)), constant_values=-1)


def most_popular_predictions(train_item_counts: np.ndarray, num_items: int, num_users: int,
                             k: int, exclude: np.ndarray | None = None) -> np.ndarray:
  """Ranked lists of the most-popular baseline, one row per user. [N, k] int64, -1 padded.

  Args:
    train_item_counts: see `popularity_ranking`.
    num_items: size of the catalog.
    num_users: N, the number of rows.
    k: list length.
    exclude: None (the standard baseline: the same list for every user), or [N, H] int item
      indices to leave out of each user's list (e.g. its history), -1 padded.
  """
  if exclude is None:
    return np.tile(popularity_ranking(train_item_counts, num_items, k), (num_users, 1))
  exclude = np.asarray(exclude)
  if exclude.ndim != 2 or exclude.shape[0] != num_users:
    raise ValueError(f"expected exclude [{num_users}, H]; got shape {exclude.shape}")
  # At most H items are removed per user, so the top k + H candidates always suffice.
  candidates_c = popularity_ranking(train_item_counts, num_items, k + exclude.shape[1])
  dropped_nc = (candidates_c[None, :, None] == exclude[:, None, :]).any(-1) | (candidates_c < 0)
  keep_order_nc = np.argsort(dropped_nc, axis=1, kind="stable")[:, :k]  # kept ones first, in order
  ranked_nk = candidates_c[keep_order_nc]
  return np.where(np.take_along_axis(dropped_nc, keep_order_nc, axis=1), -1, ranked_nk)
