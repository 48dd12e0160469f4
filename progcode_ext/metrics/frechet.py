"""Frechet distance between two Gaussians, the distance behind FID (Heusel et al., 2017) and the
project's stand-in `FD-<dataset>`.

    d^2 = ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2))

`gaussian_stats(features)` gives (mu, sigma) of an (N, D) feature array in float64 (sigma with the
unbiased N - 1 normalisation, as FID implementations use); `frechet_distance` returns d^2 (FID is
the squared distance, by convention still called a distance).
"""
import warnings

import numpy as np
from scipy import linalg

from vdvae.errors import ConfigError


def gaussian_stats(features):
    """(mu (D,), sigma (D, D)) of features (N, D), float64; N >= 2."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ConfigError(f'features must be an (N, D) array, got shape {x.shape}')
    if x.shape[0] < 2:
        raise ConfigError(f'need at least 2 feature vectors for a covariance, got {x.shape[0]}')
    if not np.all(np.isfinite(x)):
        raise ConfigError('features contain NaN or inf')
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


class RunningGaussianStats:
    """gaussian_stats accumulated over chunks of features, without keeping them (50,000 x 2048
    float64 features would take 800 MB): float64 sums of x - shift and of their outer products,
    the shift being the first chunk's mean (which keeps the subtraction in the covariance
    well-conditioned). `stats()` equals gaussian_stats of all chunks concatenated."""

    def __init__(self):
        self.n, self.shift, self.total, self.outer = 0, None, None, None

    def update(self, features):
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2:
            raise ConfigError(f'features must be an (N, D) array, got shape {x.shape}')
        if not np.all(np.isfinite(x)):
            raise ConfigError('features contain NaN or inf')
        if not len(x):
            return self
        if self.shift is None:
            self.shift = x.mean(axis=0)
            self.total = np.zeros_like(self.shift)
            self.outer = np.zeros((x.shape[1], x.shape[1]))
        x = x - self.shift
        self.n += len(x)
        self.total += x.sum(axis=0)
        self.outer += x.T @ x
        return self

    def stats(self):
        """(mu, sigma) with the unbiased N - 1 normalisation; N >= 2."""
        if self.n < 2:
            raise ConfigError(f'need at least 2 feature vectors for a covariance, got {self.n}')
        mean = self.total / self.n
        sigma = (self.outer - self.n * np.outer(mean, mean)) / (self.n - 1)
        return self.shift + mean, (sigma + sigma.T) / 2


def _check_stats(mu1, sigma1, mu2, sigma2):
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ConfigError(f'statistics of different dimensions: mu {mu1.shape} / {mu2.shape}, '
                          f'sigma {sigma1.shape} / {sigma2.shape}')
    return mu1, sigma1, mu2, sigma2


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6, imag_tol=1e-3):
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), a float >= 0 (up to
    rounding).

    Numerics: the square root of S1 S2 (not symmetric) is taken with scipy.linalg.sqrtm. If it is
    not finite (a singular product, e.g. fewer samples than dimensions), it is recomputed with
    eps * I added to both covariances (a warning says so). Rounding can give the root a small
    imaginary part: it is dropped when the diagonal's imaginary parts are below `imag_tol` (relative
    to the largest real diagonal entry, at least 1), otherwise ValueError."""
    mu1, sigma1, mu2, sigma2 = _check_stats(mu1, sigma1, mu2, sigma2)
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.all(np.isfinite(covmean)):
        warnings.warn(f'Frechet distance: the product of the covariances is singular; adding '
                      f'{eps} * I to both (use more samples than feature dimensions)',
                      RuntimeWarning, stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        scale = max(1.0, float(np.max(np.abs(np.real(np.diag(covmean))))))
        worst = float(np.max(np.abs(np.imag(np.diag(covmean)))))
        if worst > imag_tol * scale:
            raise ConfigError(f'Frechet distance: the matrix square root has an imaginary part of '
                              f'{worst:.3g} on its diagonal; the covariances are not valid '
                              f'(not positive semi-definite?)')
        covmean = np.real(covmean)
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    return value


def frechet_distance_from_features(features1, features2, **kwargs):
    """frechet_distance of the Gaussian statistics of two (N, D) feature arrays."""
    return frechet_distance(*gaussian_stats(features1), *gaussian_stats(features2), **kwargs)
