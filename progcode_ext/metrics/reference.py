"""Gaussian statistics (mu, sigma) of a metric's features over many images, chunk by chunk, and
the reference statistics cached per (metric, dataset, split, n) with the feature network's
fingerprint."""
import os

import numpy as np

from vdvae.errors import ConfigError

from ._common import atomic_savez, default_cache_dir
from .frechet import RunningGaussianStats

DEFAULT_FID_SAMPLES = 50_000           # the usual FID sample count (generated and reference)


def _chunks(images, n=None, chunk=1000):
    """uint8 NHWC chunks of the first n images (all if n is None or larger), or of n images drawn
    from a sampler fn(batch_size) -> uint8 NHWC (n default DEFAULT_FID_SAMPLES)."""
    if callable(images):
        n = DEFAULT_FID_SAMPLES if n is None else n
        have = 0
        while have < n:
            batch = np.asarray(images(min(chunk, n - have)))     # uint8: checked later
            if not len(batch):
                raise ConfigError('the sampler returned no images')
            batch = batch[:n - have]
            have += len(batch)
            yield batch
        return
    n = len(images) if n is None else min(n, len(images))
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        if isinstance(images, np.ndarray) or hasattr(images, 'numpy'):
            yield images[start:stop]
        else:
            yield images[list(range(start, stop))]


def feature_stats(feature_fn, images, n=None, chunk=1000):
    """((mu, sigma), count) of feature_fn over the images (see _chunks), accumulated chunk by
    chunk without keeping the features."""
    acc = RunningGaussianStats()
    for part in _chunks(images, n, chunk):
        acc.update(feature_fn(part))
    return acc.stats(), acc.n


def reference_stats(name, fingerprint, feature_fn, reference, dataset, split=None, n=None,
                    cache_dir=None):
    """(mu, sigma) of feature_fn over the first n reference images (all if n is None or more).
    With a split name they are cached in <cache_dir>/refstats/<name>-<dataset>-<split>-<n>.npz
    (recomputed when the feature network's fingerprint differs); without one they are computed
    each time."""
    n = len(reference) if n is None else min(n, len(reference))
    path = None
    if split is not None:
        path = os.path.join(cache_dir or default_cache_dir(), 'refstats',
                            f'{name}-{dataset}-{split}-{n}.npz')
        if os.path.isfile(path):
            with np.load(path, allow_pickle=False) as f:
                if str(f['fingerprint']) == fingerprint and int(f['n']) == n:
                    return f['mu'], f['sigma']
    (mu, sigma), count = feature_stats(feature_fn, reference, n)
    if path is not None:
        atomic_savez(path, mu=mu, sigma=sigma, n=np.array(count), fingerprint=np.array(fingerprint))
    return mu, sigma
