r"""Fréchet distance between Gaussians fitted to two sets of feature vectors.

  d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})

This is the formula behind FID, but applied to whatever features the caller provides
(it is only "FID" with Inception-v3 pool features, which this project does not ship), so
the name says what it is.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg


def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean (D,) and unbiased covariance (D, D) of features (N, D), N >= 2."""
  feats = np.asarray(feats, np.float64)
  if feats.ndim != 2 or feats.shape[0] < 2:
    raise ValueError(f'features must be (N >= 2, D), got {feats.shape}')
  return feats.mean(axis=0), np.atleast_2d(np.cov(feats, rowvar=False))


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, eps: float = 1e-6) -> float:
  """Squared Fréchet distance between Gaussian fits of two feature sets.

  Args:
    feats_a: (N, D) features of set A.
    feats_b: (M, D) features of set B (same D).
    eps: if the covariance product is singular, eps * I is added to both covariances.

  Returns:
    d^2 >= 0 (a float; numerical noise may give tiny negatives, clipped to 0).
  """
  mu_a, s_a = gaussian_stats(feats_a)
  mu_b, s_b = gaussian_stats(feats_b)
  if mu_a.shape != mu_b.shape:
    raise ValueError(f'feature dimensions differ: {np.shape(feats_a)} vs {np.shape(feats_b)}')
  covmean = scipy.linalg.sqrtm(s_a @ s_b)
  if not np.isfinite(covmean).all():  # singular product: regularise, as in the FID code
    offset = np.eye(len(mu_a)) * eps
    covmean = scipy.linalg.sqrtm((s_a + offset) @ (s_b + offset))
  covmean = np.real(covmean)
  d2 = np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean)
  return float(max(d2, 0.0))
