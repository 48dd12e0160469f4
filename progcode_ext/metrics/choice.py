"""Which metric to compute: one `Metric` value from one chooser, `choose_metric`, for both kinds
(SAMPLE_QUALITY: FID, else FD-<dataset>; PERCEPTUAL: LPIPS-<net>, else PD-<dataset>), and the
log of each choice (`ChoiceLog`).

    metric = choose_metric(SAMPLE_QUALITY, 'svhn', 'pt_inception-...pth')    # name 'FID'
    features = metric.compute(images)                                        # (N, 2048)
    metric = choose_metric(PERCEPTUAL, 'mnist5k', allow_standin=True)        # name 'PD-mnist5k'
    d = metric.compute(x, y)                                                 # (N,)

With `metric='auto'` the real metric is chosen when its package and weights are available (the
file given, or the package's standard download / torch hub cache); if they are not, the stand-in
of `standin.py` only with `allow_standin=True`, otherwise MissingWeightsError. A weights file given
explicitly that is unusable is always an error. `metric='real'` never falls back; `metric='standin'`
always takes the stand-in."""
import logging
from dataclasses import dataclass
from typing import Callable

from vdvae.errors import ConfigError

from ._common import MissingWeightsError, sha256_prefix

SAMPLE_QUALITY = 'sample_quality'
PERCEPTUAL = 'perceptual'
MODES = ('auto', 'real', 'standin')

logger = logging.getLogger('progcode.metrics')


@dataclass(frozen=True)
class Metric:
    """A chosen metric. kind: SAMPLE_QUALITY or PERCEPTUAL; name: 'FID', 'LPIPS-alex',
    'LPIPS-vgg', 'FD-<dataset>' or 'PD-<dataset>' (a stand-in is never named FID or LPIPS);
    standin: whether it is the stand-in; reason: one line, why this metric (why the real one was
    unavailable, its weights); compute: SAMPLE_QUALITY images -> (N, D) float64 features,
    PERCEPTUAL (x, y) -> (N,) float64 distances; fingerprint: the network's weights, for cache
    keys (reference statistics)."""
    kind: str
    name: str
    standin: bool
    reason: str
    compute: Callable
    fingerprint: str

    @property
    def real_family(self):
        """The real metric of this kind: 'FID' or 'LPIPS'."""
        return _KINDS[self.kind].real


def _real_fid(dataset, weights, options, device):
    from .inception import (FID_WEIGHTS_FILE, FID_WEIGHTS_SHA256_PREFIX, inception_features,
                            load_inception)
    model = load_inception(weights, device)
    source = weights or f'{FID_WEIGHTS_FILE} (standard download / torch hub cache)'
    return Metric(SAMPLE_QUALITY, 'FID', False,
                  f'pytorch-fid Inception pool3 features, weights {source}',
                  lambda images: inception_features(images, model),
                  'inception-' + (sha256_prefix(weights) if weights else FID_WEIGHTS_SHA256_PREFIX))


def _real_lpips(dataset, weights, options, device):
    from .lpips_metric import LPIPS_BACKBONES, load_lpips, lpips_distance
    net, linear = options.get('lpips_net', 'alex'), options.get('lpips_linear_weights')
    model = load_lpips(net, weights, linear, device)
    standard = LPIPS_BACKBONES[net][0]
    source = weights or f'{standard} (standard download / torch hub cache)'
    trunk = sha256_prefix(weights) if weights else standard.rsplit('-', 1)[1].split('.')[0]
    return Metric(PERCEPTUAL, f'LPIPS-{net}', False,
                  f'lpips v0.1, {net} trunk weights {source}',
                  lambda x, y: lpips_distance(x, y, model),
                  f'lpips-v0.1-{net}-{trunk}' + (f'-{sha256_prefix(linear)}' if linear else ''))


def _standin_fd(dataset, model, info):
    from .standin import fd_name, standin_features
    return (fd_name(dataset), 'the Frechet distance in the features',
            lambda images: standin_features(model, images))


def _standin_pd(dataset, model, info):
    from .standin import pd_name, standin_perceptual_distance
    return (pd_name(dataset), 'the unlearned perceptual distance in the activations',
            lambda x, y: standin_perceptual_distance(model, x, y))


@dataclass(frozen=True)
class _Kind:
    real: str                 # the real metric's family, as the messages name it
    standin: str              # the stand-in's prefix
    real_fn: Callable         # (dataset, weights, options, device) -> Metric
    standin_fn: Callable      # (dataset, model, info) -> (name, what, compute)
    options: tuple = ()       # the options of choose_metric it takes
    files: tuple = ()         # those that name a file: given, never a fallback to the stand-in


_KINDS = {SAMPLE_QUALITY: _Kind('FID', 'FD', _real_fid, _standin_fd),
          PERCEPTUAL: _Kind('LPIPS', 'PD', _real_lpips, _standin_pd,
                            ('lpips_net', 'lpips_linear_weights'), ('lpips_linear_weights',))}


def choose_metric(kind, dataset, weights=None, *, allow_standin=False, metric='auto',
                  cache_dir=None, data_root='./', device='cpu', logprint=None,
                  standin_kwargs=None, **options):
    """The `Metric` of `kind` (SAMPLE_QUALITY or PERCEPTUAL) for `dataset`. weights: a local file
    of the real metric's network (FID: the Inception weights; LPIPS: the trunk's); options
    (PERCEPTUAL only): lpips_net ('alex' or 'vgg'), lpips_linear_weights. The stand-in's
    classifier is loaded from (or trained into) `cache_dir`, on the `data_root` data; `logprint`
    gets its training messages. metric: 'auto', 'real' or 'standin' (see above). Nothing is
    logged about the choice itself (`ChoiceLog` does)."""
    if kind not in _KINDS:
        raise ConfigError(f'metric kind must be one of {sorted(_KINDS)}, got {kind!r}')
    if metric not in MODES:
        raise ConfigError(f"metric must be 'auto', 'real' or 'standin', got {metric!r}")
    spec = _KINDS[kind]
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ConfigError(f'the {kind} metric takes no option {", ".join(unknown)}')
    if metric == 'standin':
        reason = 'stand-in requested (metric="standin")'
    else:
        try:
            return spec.real_fn(dataset, weights, options, device)
        except MissingWeightsError as e:
            given = weights is not None or any(options.get(k) is not None for k in spec.files)
            if metric == 'real' or given:
                raise
            if not allow_standin:
                raise MissingWeightsError(
                    f'{e} -- or allow the stand-in with allow_standin=True (--allow_standin), '
                    f'which reports {spec.standin}-{dataset}, not {spec.real}',
                    path=e.path, url=e.url) from None
            reason = f'{spec.real} unavailable: {e}'
    from .standin import load_standin
    model, info = load_standin(dataset, cache_dir=cache_dir, data_root=data_root, device=device,
                               logprint=logprint or logger.warning, **(standin_kwargs or {}))
    name, what, compute = spec.standin_fn(dataset, model, info)
    return Metric(kind, name, True,
                  f'{reason}; using {what} of the project\'s {dataset} classifier (held-out '
                  f'accuracy {info["test_accuracy"]:.4f})', compute,
                  f'standin-v{info["version"]}-{info["fingerprint"]}')


class ChoiceLog:
    """Logs each metric used, with its reason; the same metric again for a kind, in short
    ('..., as before'). One instance, `CHOICES`, serves the process (its `last` is the state a
    test resets); the entry points log through it after computing, so that the line can carry the
    counts."""

    def __init__(self):
        self.last = {}                  # kind -> the name of the metric last logged for it

    def log(self, metric, logprint=None, detail=''):
        """Log `metric` (with `detail` appended to its reason): through `logprint` if given, else
        the `progcode.metrics` logger, at WARNING for a stand-in, INFO otherwise."""
        status = (f'STAND-IN, not comparable with {metric.real_family}' if metric.standin
                  else 'the standard metric')
        if self.last.get(metric.kind) == metric.name:
            line = f'{metric.kind}: using {metric.name} ({status}), as before'
        else:
            line = f'{metric.kind}: using {metric.name} ({status}): {metric.reason}{detail}'
        self.last[metric.kind] = metric.name
        if logprint is not None:
            logprint(line)
        else:
            (logger.warning if metric.standin else logger.info)(line)
        return line


CHOICES = ChoiceLog()
