"""Quality figures of a SID assignment (NumPy): collisions, uniqueness, per-level code usage."""

import numpy as np

from lasar_jax.sid import collisions


def collision_rate(codes_nl: np.ndarray) -> float:
  """Fraction of items whose code tuple is shared with at least one other item."""
  group_n, counts_g = collisions.group_ids(codes_nl)
  return float(np.mean(counts_g[group_n] > 1))


def unique_ratio(codes_nl: np.ndarray) -> float:
  """Distinct code tuples / items (1.0 when every SID is unique)."""
  return float(np.unique(codes_nl, axis=0).shape[0] / codes_nl.shape[0])


def level_usage(codes_n: np.ndarray, size: int) -> dict:
  """Share of the `size` codes used at one level, and perplexity exp(entropy) of their counts."""
  p_c = np.bincount(codes_n, minlength=size) / codes_n.shape[0]
  nz_c = p_c[p_c > 0]
  return {"used_fraction": float(nz_c.size / size),
          "perplexity": float(np.exp(-np.sum(nz_c * np.log(nz_c))))}


def sid_stats(raw_codes_nl: np.ndarray, codes_nm: np.ndarray, codebook_sizes: list[int]) -> dict:
  """Figures of a SID assignment.

  raw_codes_nl: [N, L] quantizer codes before collision handling (for `collision_rate`).
  codes_nm: [N, L'] final SIDs; codebook_sizes: the L' level sizes.
  """
  return {
      "num_items": int(codes_nm.shape[0]),
      "levels": int(codes_nm.shape[1]),
      "codebook_sizes": [int(s) for s in codebook_sizes],
      "collision_rate": collision_rate(raw_codes_nl),
      "unique_ratio": unique_ratio(codes_nm),
      "usage_per_level": [level_usage(codes_nm[:, l], s) for l, s in enumerate(codebook_sizes)],
  }
