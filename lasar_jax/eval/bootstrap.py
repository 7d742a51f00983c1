"""Paired bootstrap over users: how sure is a difference between two models' metrics?

Two models scored on the same users give one paired difference per user (averaged over seeds
when there are several). Resampling the users with replacement gives the distribution of the mean
difference; its 2.5% and 97.5% percentiles are the 95% interval (METHOD section 6).
"""

import numpy as np


def paired_differences(reference_su: np.ndarray, other_su: np.ndarray) -> np.ndarray:
  """Per-user difference reference - other, averaged over seeds. [U] float64

  Args:
    reference_su: [S, U] per-user metric of the reference model, one row per seed.
    other_su: [S, U] the same for the other model, users in the same order.
  """
  reference_su = np.asarray(reference_su, np.float64)
  other_su = np.asarray(other_su, np.float64)
  if reference_su.shape != other_su.shape or reference_su.ndim != 2:
    raise ValueError(f"expected two [seeds, users] arrays of one shape; got {reference_su.shape} "
                     f"and {other_su.shape}")
  return (reference_su - other_su).mean(axis=0)


def bootstrap_interval(differences_u: np.ndarray, resamples: int = 1000, seed: int = 0,
                       confidence: float = 0.95) -> tuple[float, float, float]:
  """(mean difference, lower, upper) of the percentile bootstrap interval over users.

  Args:
    differences_u: [U] per-user paired differences.
    resamples: bootstrap resamples of the U users (with replacement).
    seed: seed of the resampling.
    confidence: coverage of the interval (0.95: the 2.5% and 97.5% percentiles).
  """
  differences_u = np.asarray(differences_u, np.float64)
  if differences_u.ndim != 1 or not len(differences_u):
    raise ValueError(f"expected a non-empty [users] array; got shape {differences_u.shape}")
  if resamples < 1:
    raise ValueError(f"resamples={resamples} must be at least 1")
  rng = np.random.default_rng(seed)
  picks_ru = rng.integers(0, len(differences_u), size=(resamples, len(differences_u)))
  means_r = differences_u[picks_ru].mean(axis=1)
  tail = 100 * (1 - confidence) / 2
  low, high = np.percentile(means_r, [tail, 100 - tail])
  return float(differences_u.mean()), float(low), float(high)
