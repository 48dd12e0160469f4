"""Evaluation metrics (issue 5): one entry point per kind of metric, always returning the name of
the metric it computed with the value.

    name, value = sample_quality(generated, reference, 'svhn', fid_weights='pt_inception-...pth',
                                 reference_split='train')                  # ('FID', 10.07)
    name, value = sample_quality(generated, reference, 'mnist5k', allow_standin=True)
                                                                           # ('FD-mnist5k', 3.2)
    name, d = perceptual_distance(x, y, 'svhn', lpips_weights='alexnet-owt-7be5be79.pth')
                                                                           # ('LPIPS-alex', (N,))
    name, d = perceptual_distance(x, y, 'mnist5k', allow_standin=True)     # ('PD-mnist5k', (N,))
    metric = choose_metric(SAMPLE_QUALITY, 'svhn')       # the choice alone: a `Metric`, or an error

Modules: `choice` (the `Metric` value, its one chooser `choose_metric`, the log of choices),
`scores` (the entry points), `reference` (Gaussian statistics of features, the cached reference
statistics), `frechet` (Frechet distance), `inception` (FID features), `lpips_metric` (LPIPS),
`standin` (the classifier, FD-/PD-), `rd_profile` (rate per latent group, the (R_k, D_k)
profile). The experiments' metric flags are in `progcode_ext.experiments.cli`. The ELBO in nats
and bits per dimension is `vdvae.evaluation.evaluate`.
"""
from ._common import MissingWeightsError, default_cache_dir
from .choice import PERCEPTUAL, SAMPLE_QUALITY, Metric, choose_metric
from .frechet import RunningGaussianStats, frechet_distance
from .rd_profile import rate_per_group, rate_profile, rd_profile
from .reference import DEFAULT_FID_SAMPLES, feature_stats, reference_stats
from .scores import perceptual_distance, sample_quality

__all__ = ['MissingWeightsError', 'Metric', 'choose_metric', 'SAMPLE_QUALITY', 'PERCEPTUAL',
           'sample_quality', 'perceptual_distance', 'reference_stats', 'feature_stats',
           'RunningGaussianStats', 'frechet_distance', 'rate_per_group', 'rate_profile',
           'rd_profile', 'DEFAULT_FID_SAMPLES', 'default_cache_dir']
