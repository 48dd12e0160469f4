"""The two entry points: `sample_quality` (FID, else FD-<dataset>) and `perceptual_distance`
(LPIPS, else PD-<dataset>). Each chooses its metric with `choice.choose_metric`, computes, logs
the choice (`choice.CHOICES`) and returns (name, value)."""
from .choice import CHOICES, PERCEPTUAL, SAMPLE_QUALITY, choose_metric
from .frechet import frechet_distance
from .reference import DEFAULT_FID_SAMPLES, feature_stats, reference_stats


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
    chosen = choose_metric(SAMPLE_QUALITY, dataset, fid_weights, allow_standin=allow_standin,
                           metric=metric, cache_dir=cache_dir, data_root=data_root,
                           device=device, logprint=logprint, standin_kwargs=standin_kwargs)
    mu_r, sigma_r = reference_stats(chosen.name, chosen.fingerprint, chosen.compute, reference,
                                    dataset, reference_split, n_reference, cache_dir)
    (mu_g, sigma_g), n_generated = feature_stats(chosen.compute, generated, n_samples)
    n_ref = len(reference) if n_reference is None else min(n_reference, len(reference))
    CHOICES.log(chosen, logprint, f'; {n_generated} generated vs {n_ref} reference images')
    return chosen.name, frechet_distance(mu_g, sigma_g, mu_r, sigma_r)


def perceptual_distance(x, y, dataset, lpips_weights=None, lpips_net='alex',
                        lpips_linear_weights=None, allow_standin=False, metric='auto',
                        cache_dir=None, data_root='./', device='cpu', logprint=None,
                        standin_kwargs=None):
    """(name, (N,) float64 distances between x[i] and y[i]): LPIPS ('LPIPS-alex'/'LPIPS-vgg') or
    its stand-in ('PD-<dataset>'). x, y: uint8 NHWC images of one shape (arrays, tensors or
    datasets); e.g. originals and reconstructions (the paper's Figure 4)."""
    chosen = choose_metric(PERCEPTUAL, dataset, lpips_weights, lpips_net=lpips_net,
                           lpips_linear_weights=lpips_linear_weights, allow_standin=allow_standin,
                           metric=metric, cache_dir=cache_dir, data_root=data_root,
                           device=device, logprint=logprint, standin_kwargs=standin_kwargs)
    values = chosen.compute(x, y)
    CHOICES.log(chosen, logprint)
    return chosen.name, values
