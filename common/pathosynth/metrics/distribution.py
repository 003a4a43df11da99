"""Distribution metrics between two image sets: FID and KID, in the embedding of a pluggable feature extractor.

Both compare the *populations* of real and synthetic images (not pairs), in the feature space of an extractor
from :mod:`pathosynth.metrics.features`. A score means nothing without the extractor that produced it, so
:func:`distribution_scores` always reports ``extractor=<name>``; never compare scores across extractors.

- FID (Heusel et al. 2017): Fréchet distance between Gaussians fitted to the two feature sets,
  ``||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``. Biased for small sets (it grows as N shrinks, and
  with N < dim the covariances are singular), so compare FIDs only at equal set sizes.
- KID (Bińkowski et al. 2018): squared MMD with the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3``,
  estimated *unbiasedly* and averaged over random subsets. Unbiased means its expectation does not depend on
  the sample size, so small sets (a few hundred slices, typical here) can be compared; the value can be
  slightly negative when the distributions match. The std over subsets shows how much it moves with sampling.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from .features import FeatureExtractor

__all__ = ["distribution_scores", "extract_features", "frechet_distance", "kernel_inception_distance"]


def _as_features(features, name: str) -> np.ndarray:
    """(N, d) float64 array. Why float64: FID subtracts traces of the order of sum(variances) (often 10^2-10^4)
    to get a small number, and the matrix square root of a near-singular product loses digits; float32 would
    leave errors of the size of the differences being measured."""
    if isinstance(features, Tensor):
        features = features.detach().cpu().double().numpy()
    arr = np.asarray(features, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (N, d) features, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return arr


def _sqrtm(a: np.ndarray, tol: float | None) -> np.ndarray | None:
    """scipy's sqrtm, or None when the result is not finite (or, given ``tol``, inaccurate: ||R R - A|| > tol ||A||)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "Matrix is singular and may not have a square root": checked below
        try:
            r = np.asarray(scipy.linalg.sqrtm(a))
        except (np.linalg.LinAlgError, ValueError):
            return None
    if not np.isfinite(r).all():
        return None
    if tol is not None:
        norm = np.linalg.norm(a)
        if norm > 0 and np.linalg.norm(r @ r - a) > tol * norm:
            return None
    return r


def _real_trace(covmean: np.ndarray) -> float:
    """Trace of the root without the tiny imaginary parts rounding gives it (S_a S_b has a real, non-negative
    spectrum in exact arithmetic); warns if the imaginary part is not tiny."""
    if np.iscomplexobj(covmean):
        diag = np.diagonal(covmean)
        imag, scale = np.abs(diag.imag).max(), max(1.0, np.abs(diag.real).max())
        if imag > 1e-3 * scale:
            warnings.warn(
                f"FID: dropping a non-negligible imaginary part ({imag:.3g}) of the matrix root",
                RuntimeWarning,
                stacklevel=3,
            )
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(features_a, features_b, eps: float = 1e-6) -> float:
    """FID formula between two feature sets (N_a, d) and (N_b, d) (tensors or arrays), computed in float64.

    ``||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))`` with unbiased (N-1) covariances.
    The matrix root uses :func:`scipy.linalg.sqrtm`. If it is not finite or not accurate (singular covariances,
    e.g. fewer samples than feature dims), ``eps * I`` is added to both covariances (the usual pytorch-fid
    fallback) -- here in every term, so the result is the exact Fréchet distance of the regularised Gaussians
    (0 for a set with itself) rather than a mix that is off by ``2 d eps``. Tiny imaginary parts of the root,
    which come from rounding, are dropped. Needs >= 2 samples per set. Symmetric in its arguments up to rounding.
    """
    a, b = _as_features(features_a, "features_a"), _as_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dims differ: {a.shape[1]} vs {b.shape[1]}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"FID needs at least 2 samples per set, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    s_a = np.atleast_2d(np.cov(a, rowvar=False))
    s_b = np.atleast_2d(np.cov(b, rowvar=False))
    diff = mu_a - mu_b
    covmean = _sqrtm(s_a @ s_b, tol=1e-5)
    if covmean is None:
        offset = np.eye(s_a.shape[0]) * eps
        s_a, s_b = s_a + offset, s_b + offset
        covmean = _sqrtm(s_a @ s_b, tol=None)
        if covmean is None:
            raise ValueError("FID: the matrix square root failed even with eps-regularised covariances")
    return float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * _real_trace(covmean))


def _poly_kernel(x: np.ndarray, y: np.ndarray, degree: int, gamma: float, coef0: float) -> np.ndarray:
    return (x @ y.T * gamma + coef0) ** degree


def kernel_inception_distance(
    features_a,
    features_b,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: mean and std over ``subsets`` random subsets of the unbiased MMD² with a polynomial kernel.

    ``k(x, y) = (gamma * x.y + coef0) ** degree`` with ``gamma = 1/d`` by default (the KID kernel). Each subset
    draws ``m = min(subset_size, N_a, N_b)`` samples without replacement from each set (a ``numpy``
    ``RandomState(seed)`` stream, so the result is deterministic given ``seed``) and computes

        MMD²_u = sum_{i!=j} k(a_i, a_j) / (m(m-1)) + sum_{i!=j} k(b_i, b_j) / (m(m-1)) - 2 sum_{i,j} k(a_i, b_j) / m²

    Why unbiased: leaving out the i == j terms removes the positive bias of order 1/m that the plain (V-)
    statistic has, so KID's expectation is the population MMD² at any m -- small sets can be compared, and
    identical distributions give values scattered around 0 (slightly negative values are normal).
    Note: when both sets have <= ``subset_size`` samples, every subset is the whole of both sets, MMD²_u is
    the same each time and the std is 0 -- it is then *not* an uncertainty estimate.
    """
    a, b = _as_features(features_a, "features_a"), _as_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dims differ: {a.shape[1]} vs {b.shape[1]}")
    m = min(int(subset_size), len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(a)} and {len(b)}")
    if int(subsets) < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    gamma = 1.0 / a.shape[1] if gamma is None else float(gamma)
    rng = np.random.RandomState(int(seed))
    values = np.empty(int(subsets))
    for s in range(int(subsets)):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        k_xx = _poly_kernel(x, x, degree, gamma, coef0)
        k_yy = _poly_kernel(y, y, degree, gamma, coef0)
        k_xy = _poly_kernel(x, y, degree, gamma, coef0)
        values[s] = (
            (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
            + (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
            - 2.0 * k_xy.sum() / (m * m)
        )
    return float(values.mean()), float(values.std())


def _as_image_tensor(images, name: str) -> Tensor:
    if isinstance(images, Tensor):
        x = images.detach().cpu()
    elif isinstance(images, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(images))
    elif isinstance(images, Iterable):
        x = torch.stack([torch.as_tensor(np.asarray(im)) for im in images])
    else:
        raise TypeError(f"{name}: expected a tensor, array or sequence of images, got {type(images).__name__}")
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4:
        raise ValueError(f"{name} must be (N, H, W) or (N, C, H, W), got shape {tuple(x.shape)}")
    return x


@torch.no_grad()
def extract_features(images, extractor: FeatureExtractor, batch_size: int = 64) -> np.ndarray:
    """Features (N, extractor.dim) as float64, extracted in batches of ``batch_size`` without autograd.

    Images are converted to float32 one batch at a time, so a large uint8 set does not get copied whole.
    """
    x = _as_image_tensor(images, "images")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunks = []
    for start in range(0, len(x), int(batch_size)):
        f = extractor(x[start : start + int(batch_size)].float())
        chunks.append(torch.as_tensor(f).detach().cpu().double().reshape(f.shape[0], -1))
    if not chunks:
        raise ValueError("no images given")
    feats = torch.cat(chunks).numpy()
    if feats.shape[1] != int(extractor.dim):
        raise ValueError(
            f"extractor {extractor.name!r} returned {feats.shape[1]} features, declares dim={extractor.dim}"
        )
    return feats


def distribution_scores(
    images_a,
    images_b,
    extractor: FeatureExtractor,
    batch_size: int = 64,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict:
    """FID and KID between two image sets, with the extractor named.

    ``images_a``/``images_b``: tensors, arrays or sequences of images shaped (N, H, W) or (N, 1, H, W)
    (or (N, C, H, W) when the extractor takes C channels), any intensity range -- the extractor normalises.
    Returns ``{"fid", "kid_mean", "kid_std", "extractor", "feature_dim", "n_a", "n_b", "kid_subset_size"}``;
    report ``extractor`` with every number, and compare FIDs only between runs with equal set sizes.
    """
    fa = extract_features(images_a, extractor, batch_size)
    fb = extract_features(images_b, extractor, batch_size)
    kid_mean, kid_std = kernel_inception_distance(fa, fb, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    return {
        "fid": frechet_distance(fa, fb),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "extractor": str(extractor.name),
        "feature_dim": int(fa.shape[1]),
        "n_a": int(len(fa)),
        "n_b": int(len(fb)),
        "kid_subset_size": int(min(kid_subset_size, len(fa), len(fb))),
    }
