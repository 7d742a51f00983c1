"""Making SIDs unique when several items share one code tuple (NumPy; runs once per dataset).

Shape letters: N items, L levels, K codes of the last level, P distinct prefixes (first L-1 codes).

'extra_level' (TIGER): append a level numbering the items of each code tuple 0, 1, 2, ... in item
order; its size is the largest group.

'balanced_last' (LC-Rec style): in each group of items sharing a tuple, the item nearest to the
shared last code keeps it; the others move to last-level codes that no item of the same prefix
uses, in rounds: every unplaced item proposes its nearest free code, and each proposed code goes
to its nearest proposer (ties to the lower item index). Every round places at least one item, so
all items end unique whenever each prefix holds at most K items. Items of a prefix with no free
code left keep their code, and an extra level (as above) separates them; the info says so.
"""

import numpy as np


def group_ids(codes_nl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Id of each item's code tuple [N] and the number of items in each tuple's group [G]."""
  _, inverse_n, counts_g = np.unique(codes_nl, axis=0, return_inverse=True, return_counts=True)
  return inverse_n.reshape(-1), counts_g


def rank_in_group(codes_nl: np.ndarray, priority_n: np.ndarray | None = None) -> np.ndarray:
  """Position of each item among the items sharing its code tuple, 0 first, ordered by
  `priority_n` ascending (then item index); item index alone when no priority is given. [N]"""
  group_n, counts_g = group_ids(codes_nl)
  n = codes_nl.shape[0]
  keys = (group_n,) if priority_n is None else (priority_n, group_n)
  order_n = np.lexsort(keys)  # last key is primary; lexsort is stable
  starts_g = np.cumsum(counts_g) - counts_g
  rank_n = np.empty(n, np.int64)
  rank_n[order_n] = np.arange(n) - starts_g[group_n[order_n]]
  return rank_n


def add_extra_level(codes_nl: np.ndarray) -> np.ndarray:
  """TIGER disambiguation: codes with a last level numbering each tuple's items. [N, L+1] int32"""
  extra_n = rank_in_group(codes_nl)
  return np.concatenate([codes_nl, extra_n[:, None]], axis=1).astype(np.int32)


def reassign_last_level(codes_nl: np.ndarray,
                        last_cost_nk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Moves colliding items to free last-level codes of their prefix (module docstring).

  Returns (codes [N, L] int32, stuck [N] bool: items left colliding because their prefix was full).
  """
  codes_nl = np.array(codes_nl, np.int64)
  n, k = last_cost_nk.shape
  own_cost_n = last_cost_nk[np.arange(n), codes_nl[:, -1]]
  mover_n = rank_in_group(codes_nl, own_cost_n) > 0
  _, prefix_n = np.unique(codes_nl[:, :-1], axis=0, return_inverse=True)
  prefix_n = prefix_n.reshape(-1)
  used_pk = np.zeros((prefix_n.max() + 1, k), bool)
  used_pk[prefix_n[~mover_n], codes_nl[~mover_n, -1]] = True
  stuck_n = np.zeros(n, bool)
  movers = np.flatnonzero(mover_n)
  while movers.size:
    cost_mk = np.where(used_pk[prefix_n[movers]], np.inf, last_cost_nk[movers])
    choice_m = np.argmin(cost_mk, axis=1)
    best_m = cost_mk[np.arange(movers.size), choice_m]
    full_m = np.isinf(best_m)
    stuck_n[movers[full_m]] = True
    movers, choice_m, best_m = movers[~full_m], choice_m[~full_m], best_m[~full_m]
    slot_m = prefix_n[movers] * k + choice_m
    order_m = np.lexsort((movers, best_m, slot_m))
    first_m = np.ones(movers.size, bool)
    first_m[1:] = slot_m[order_m][1:] != slot_m[order_m][:-1]
    winners = order_m[first_m]
    codes_nl[movers[winners], -1] = choice_m[winners]
    used_pk[prefix_n[movers[winners]], choice_m[winners]] = True
    movers = np.delete(movers, winners)
  return codes_nl.astype(np.int32), stuck_n


def resolve_collisions(codes_nl: np.ndarray, last_cost_nk: np.ndarray,
                       method: str) -> tuple[np.ndarray, dict]:
  """Unique SIDs by `method` ('extra_level' | 'balanced_last'). Returns (codes [N, L'] int32, info).

  info: 'extra_level' (bool, whether a level was appended), 'reassigned_items' (items whose last
  code changed, balanced_last), 'fallback_items' (items of full prefixes, balanced_last).
  """
  if method == "extra_level":
    return add_extra_level(codes_nl), {"extra_level": True}
  if method != "balanced_last":
    raise ValueError(f"unknown collision method {method!r}: expected 'extra_level' or "
                     "'balanced_last'")
  moved_nl, stuck_n = reassign_last_level(codes_nl, last_cost_nk)
  info = {"reassigned_items": int(np.sum(moved_nl[:, -1] != codes_nl[:, -1])),
          "fallback_items": int(np.sum(stuck_n)), "extra_level": bool(np.any(stuck_n))}
  if info["extra_level"]:
    moved_nl = add_extra_level(moved_nl)
  return moved_nl, info
