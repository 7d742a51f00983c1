"""Ranking metrics with one relevant item per user (METHOD.md section 6), in float64 NumPy.

A ranked list is a row of item indices, best first, right-padded (or holed) with -1, which never
matches. When the target appears more than once, its first position counts.
"""

import numpy as np

DEFAULT_KS = (1, 5, 10, 20)


def target_ranks(ranked_items: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """0-based position of each user's target in its ranked list; -1 when absent.

  Args:
    ranked_items: [N, R] int item indices, best first, -1 for padding.
    targets: [N] int target item index per user (>= 0); N >= 1.
  Returns:
    [N] int64 ranks.
  """
  ranked_items = np.asarray(ranked_items)
  targets = np.asarray(targets)
  if ranked_items.ndim != 2 or targets.shape != ranked_items.shape[:1]:
    raise ValueError(f"expected ranked_items [N, R] and targets [N]; got {ranked_items.shape} "
                     f"and {targets.shape}")
  if targets.size == 0:
    raise ValueError("no users to score")
  if np.any(targets < 0):
    raise ValueError("targets must be item indices >= 0 (-1 is the padding value)")
  hit_nr = ranked_items == targets[:, None]
  return np.where(hit_nr.any(axis=1), hit_nr.argmax(axis=1), -1).astype(np.int64)


def _check_k(k: int) -> None:
  if k < 1:
    raise ValueError(f"k must be >= 1; got {k}")


def _hits(ranks_n: np.ndarray, k: int) -> np.ndarray:
  """[N] bool: target within the top k."""
  return (ranks_n >= 0) & (ranks_n < k)


def _recall(ranks_n: np.ndarray, k: int) -> float:
  return float(np.mean(_hits(ranks_n, k), dtype=np.float64))


def _ndcg(ranks_n: np.ndarray, k: int) -> float:
  gain_n = 1.0 / np.log2(np.maximum(ranks_n, 0).astype(np.float64) + 2.0)
  return float(np.mean(np.where(_hits(ranks_n, k), gain_n, 0.0)))


def recall_at_k(ranked_items: np.ndarray, targets: np.ndarray, k: int) -> float:
  """Recall@k (= HR@k with one relevant item): share of users whose target is in the top k."""
  _check_k(k)
  return _recall(target_ranks(ranked_items, targets), k)


def ndcg_at_k(ranked_items: np.ndarray, targets: np.ndarray, k: int) -> float:
  """NDCG@k with one relevant item: mean over users of 1 / log2(rank + 2) if rank < k, else 0.

  The ideal DCG is 1 (the target first), so no normalization is needed; rank is 0-based.
  """
  _check_k(k)
  return _ndcg(target_ranks(ranked_items, targets), k)


def ranking_metrics(ranked_items: np.ndarray, targets: np.ndarray,
                    ks=DEFAULT_KS) -> dict[str, float]:
  """{'recall@k': ..., 'ndcg@k': ...} for every k in `ks`, averaged over the N users.

  Args:
    ranked_items: [N, R] int item indices, best first, -1 for padding.
    targets: [N] int target item index per user.
    ks: cutoffs, each >= 1 (a k above R counts the whole list).
  """
  ranks_n = target_ranks(ranked_items, targets)
  out = {}
  for k in ks:
    _check_k(k)
    out[f"recall@{k}"] = _recall(ranks_n, k)
    out[f"ndcg@{k}"] = _ndcg(ranks_n, k)
  return out
