"""Evaluation metrics (issue 5): one entry point per kind of metric, always returning the name of
the metric it computed with the value.

    name, value = sample_quality(generated, reference, 'svhn', fid_weights='pt_inception-...pth',
                                 reference_split='train')                  # ('FID', 10.07)
    name, value = sample_quality(generated, reference, 'mnist5k', allow_standin=True)
                                                                           # ('FD-mnist5k', 3.2)
    name, d = perceptual_distance(x, y, 'svhn', lpips_weights='alexnet-owt-7be5be79.pth')
                                                                           # ('LPIPS-alex', (N,))
    name, d = perceptual_distance(x, y, 'mnist5k', allow_standin=True)     # ('PD-mnist5k', (N,))

Choice (`metric='auto'`): the real metric (FID, LPIPS) when its package and weights are available
(the local file given, or the package's standard download / torch hub cache). If they are not,
the stand-in of `standin.py` (`FD-<dataset>`, `PD-<dataset>`, features of a small classifier the
project trains on the dataset) is used only when `allow_standin=True`; otherwise
MissingWeightsError. An explicitly given weights file that is unusable is always an error (never a
fallback). `metric='real'` never falls back; `metric='standin'` always uses the stand-in (for
numbers comparable across machines). Every choice is logged with its reason (`logprint`, default:
the `progcode.metrics` logger at WARNING for a stand-in, INFO otherwise); a choice repeated is
logged in short.

Other modules: `frechet` (Frechet distance, Gaussian statistics), `inception` (FID features),
`lpips_metric` (LPIPS), `standin` (the classifier, FD-/PD-), `rd_profile` (rate per latent group,
the (R_k, D_k) profile). The ELBO in nats and bits per dimension is `vdvae.evaluation.evaluate`.
"""
import logging
import os
from collections import namedtuple

import numpy as np

from vdvae.errors import ConfigError
from vdvae.hps import number

from ._common import MissingWeightsError, atomic_savez, default_cache_dir, sha256_prefix
from .frechet import RunningGaussianStats, frechet_distance
from .rd_profile import rate_per_group, rate_profile, rd_profile

__all__ = ['MissingWeightsError', 'MetricChoice', 'sample_quality', 'perceptual_distance',
           'choose_sample_metric', 'choose_perceptual_metric', 'reference_stats', 'feature_stats',
           'RunningGaussianStats', 'frechet_distance', 'rate_per_group', 'rate_profile',
           'rd_profile', 'add_metric_arguments', 'DEFAULT_FID_SAMPLES', 'default_cache_dir']

DEFAULT_FID_SAMPLES = 50_000           # the usual FID sample count (generated and reference)

logger = logging.getLogger('progcode.metrics')

MetricChoice = namedtuple('MetricChoice', 'kind name real reason details')
MetricChoice.__doc__ = """Which metric an entry point used: kind ('sample_quality' or
'perceptual'), name ('FID', 'LPIPS-alex', 'FD-<dataset>', 'PD-<dataset>'), real (bool: the
standard metric), reason (one line: why this metric, e.g. why the real one was unavailable),
details (dict: weights file, counts, stand-in accuracy...)."""

_LOGGED = {}                       # kind -> the name of the metric last logged for it


def _log_choice(choice, logprint):
    real_name = 'FID' if choice.kind == 'sample_quality' else 'LPIPS'
    status = 'the standard metric' if choice.real else f'STAND-IN, not comparable with {real_name}'
    line = f'{choice.kind}: using {choice.name} ({status}): {choice.reason}'
    if _LOGGED.get(choice.kind) == choice.name:
        line = f'{choice.kind}: using {choice.name} ({status}), as before'
    _LOGGED[choice.kind] = choice.name
    if logprint is not None:
        logprint(line)
    elif choice.real:
        logger.info(line)
    else:
        logger.warning(line)


def _check_metric(metric):
    if metric not in ('auto', 'real', 'standin'):
        raise ConfigError(f"metric must be 'auto', 'real' or 'standin', got {metric!r}")


def _standin(dataset, cache_dir, data_root, device, logprint, standin_kwargs):
    from .standin import load_standin
    return load_standin(dataset, cache_dir=cache_dir, data_root=data_root, device=device,
                        logprint=logprint or logger.warning, **(standin_kwargs or {}))


def _refuse(e, dataset, kind):
    what = 'FD' if kind == 'sample_quality' else 'PD'
    return MissingWeightsError(f'{e} -- or allow the stand-in with allow_standin=True '
                               f'(--allow_standin), which reports {what}-{dataset}, not '
                               f'{"FID" if kind == "sample_quality" else "LPIPS"}',
                               path=e.path, url=e.url)


def choose_sample_metric(dataset, fid_weights=None, allow_standin=False, metric='auto',
                         cache_dir=None, data_root='./', device='cpu', logprint=None,
                         standin_kwargs=None):
    """(MetricChoice, feature_fn images -> (N, D) float64, fingerprint str) for sample quality."""
    _check_metric(metric)
    if metric != 'standin':
        from .inception import (
            FID_WEIGHTS_FILE,
            FID_WEIGHTS_SHA256_PREFIX,
            inception_features,
            load_inception,
        )
        try:
            model = load_inception(fid_weights, device)
        except MissingWeightsError as e:
            if metric == 'real' or fid_weights is not None:
                raise
            if not allow_standin:
                raise _refuse(e, dataset, 'sample_quality') from None
            reason = f'FID unavailable: {e}'
        else:
            source = fid_weights or f'{FID_WEIGHTS_FILE} (standard download / torch hub cache)'
            choice = MetricChoice('sample_quality', 'FID', True,
                                  f'pytorch-fid Inception pool3 features, weights {source}',
                                  dict(weights=source))
            fingerprint = 'inception-' + (sha256_prefix(fid_weights) if fid_weights
                                          else FID_WEIGHTS_SHA256_PREFIX)
            return choice, (lambda images: inception_features(images, model)), fingerprint
    else:
        reason = 'stand-in requested (metric="standin")'
    from .standin import fd_name, standin_features
    model, info = _standin(dataset, cache_dir, data_root, device, logprint, standin_kwargs)
    choice = MetricChoice('sample_quality', fd_name(dataset), False,
                          f'{reason}; using the Frechet distance in the features of the project\'s '
                          f'{dataset} classifier (held-out accuracy {info["test_accuracy"]:.4f})',
                          dict(standin=info))
    return choice, (lambda images: standin_features(model, images)), \
        f'standin-v{info["version"]}-{info["fingerprint"]}'


def choose_perceptual_metric(dataset, lpips_weights=None, lpips_net='alex',
                             lpips_linear_weights=None, allow_standin=False, metric='auto',
                             cache_dir=None, data_root='./', device='cpu', logprint=None,
                             standin_kwargs=None):
    """(MetricChoice, distance_fn (x, y) -> (N,) float64) for perceptual distances."""
    _check_metric(metric)
    if metric != 'standin':
        from .lpips_metric import LPIPS_BACKBONES, load_lpips, lpips_distance
        try:
            model = load_lpips(lpips_net, lpips_weights, lpips_linear_weights, device)
        except MissingWeightsError as e:
            if metric == 'real' or lpips_weights is not None or lpips_linear_weights is not None:
                raise
            if not allow_standin:
                raise _refuse(e, dataset, 'perceptual') from None
            reason = f'LPIPS unavailable: {e}'
        else:
            source = lpips_weights or (f'{LPIPS_BACKBONES[lpips_net][0]} (standard download / '
                                       f'torch hub cache)')
            choice = MetricChoice('perceptual', f'LPIPS-{lpips_net}', True,
                                  f'lpips v0.1, {lpips_net} trunk weights {source}',
                                  dict(weights=source, net=lpips_net))
            return choice, (lambda x, y: lpips_distance(x, y, model))
    else:
        reason = 'stand-in requested (metric="standin")'
    from .standin import pd_name, standin_perceptual_distance
    model, info = _standin(dataset, cache_dir, data_root, device, logprint, standin_kwargs)
    choice = MetricChoice('perceptual', pd_name(dataset), False,
                          f'{reason}; using the unlearned perceptual distance in the activations '
                          f'of the project\'s {dataset} classifier (held-out accuracy '
                          f'{info["test_accuracy"]:.4f})', dict(standin=info))
    return choice, (lambda x, y: standin_perceptual_distance(model, x, y))


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


def sample_quality(generated, reference, dataset, fid_weights=None, allow_standin=False,
                   metric='auto', cache_dir=None, reference_split=None, n_samples=None,
                   n_reference=DEFAULT_FID_SAMPLES, data_root='./', device='cpu', logprint=None,
                   standin_kwargs=None):
    """(name, value): FID ('FID') or its stand-in ('FD-<dataset>') between generated images and
    reference images (uint8 NHWC arrays/tensors or datasets).

    generated: images (the first n_samples, default all), or a sampler fn(batch_size) -> uint8
    NHWC called until n_samples (default 50,000) exist. reference: its first n_reference
    (default 50,000, at most all) images; with `reference_split` (e.g. 'train') their statistics
    are cached per (metric, dataset, split, n) under `cache_dir` (default $PROGCODE_CACHE or
    ~/.cache/progcode/metrics). Features are reduced to (mu, sigma) chunk by chunk."""
    choice, feature_fn, fingerprint = choose_sample_metric(
        dataset, fid_weights, allow_standin, metric, cache_dir, data_root, device, logprint,
        standin_kwargs)
    mu_r, sigma_r = reference_stats(choice.name, fingerprint, feature_fn, reference, dataset,
                                    reference_split, n_reference, cache_dir)
    (mu_g, sigma_g), n_generated = feature_stats(feature_fn, generated, n_samples)
    details = dict(choice.details, n_generated=n_generated,
                   n_reference=len(reference) if n_reference is None
                   else min(n_reference, len(reference)), reference_split=reference_split)
    choice = choice._replace(details=details, reason=choice.reason + (
        f'; {details["n_generated"]} generated vs {details["n_reference"]} reference images'))
    _log_choice(choice, logprint)
    return choice.name, frechet_distance(mu_g, sigma_g, mu_r, sigma_r)


def perceptual_distance(x, y, dataset, lpips_weights=None, lpips_net='alex',
                        lpips_linear_weights=None, allow_standin=False, metric='auto',
                        cache_dir=None, data_root='./', device='cpu', logprint=None,
                        standin_kwargs=None):
    """(name, (N,) float64 distances between x[i] and y[i]): LPIPS ('LPIPS-alex'/'LPIPS-vgg') or
    its stand-in ('PD-<dataset>'). x, y: uint8 NHWC images of one shape (arrays, tensors or
    datasets); e.g. originals and reconstructions (the paper's Figure 4)."""
    choice, distance_fn = choose_perceptual_metric(
        dataset, lpips_weights, lpips_net, lpips_linear_weights, allow_standin, metric, cache_dir,
        data_root, device, logprint, standin_kwargs)
    values = distance_fn(x, y)
    _log_choice(choice, logprint)
    return choice.name, values


def add_metric_arguments(parser, *kinds):
    """The metric flags of an experiment's command line: always the cache every experiment shares;
    with 'sample' the sample metric's (FID, else FD-<dataset>), with 'perceptual' the perceptual
    distance's (LPIPS, else PD-<dataset>), each with the permission to use the stand-in."""
    a = parser.add_argument
    a('--metrics_cache', default=None,
      help='folder for the stand-in classifier and reference statistics, shared by every '
      'experiment (default: $PROGCODE_CACHE, else ~/.cache/progcode/metrics)')
    if 'sample' in kinds:
        a('--n_samples', type=number(1), default=DEFAULT_FID_SAMPLES,
          help='samples for the sample metric (default: %(default)s)')
        a('--n_reference', type=number(1), default=DEFAULT_FID_SAMPLES,
          help='training images for the reference statistics (default: %(default)s, at most the '
          'whole training split)')
        a('--sample_batch', type=number(1), default=100)
        a('--fid_weights', default=None, help='local Inception weights for FID')
    if 'perceptual' in kinds:
        a('--lpips_weights', default=None, help='local LPIPS backbone weights')
        a('--lpips_net', default='alex', choices=('alex', 'vgg'))
    if kinds:
        a('--allow_standin', action='store_true',
          help='without the weights of FID (LPIPS), use the clearly labelled stand-in '
          'FD-<dataset> (PD-<dataset>)')
    return parser
