"""Finished runs, loaded and evaluated once: every experiment reads its models through these, so
that each checkpoint's exact validation metrics are computed once and kept in its run folder."""
import json
import os
import shlex

import torch

from vdvae.checkpoint import load_file, restore_params
from vdvae.data import resolve_geometry, set_up_data
from vdvae.evaluation import evaluate, load_batch
from vdvae.hps import setup_hparams
from vdvae.models import load_trained
from vdvae.vae import VAE

from ..metrics import default_cache_dir
from ..metrics.rd_profile import rate_per_group
from .figures import as_uint8, grid
from .runs import last_fifth_step


def metrics_cache(cfg):
    """One cache of stand-in classifiers and reference statistics for every experiment, so that
    two experiments that score the same samples agree."""
    return getattr(cfg, 'metrics_cache', None) or default_cache_dir()


def default_device(cfg):
    return cfg.device or ('cuda' if torch.cuda.is_available() else 'cpu')


def restore_vdvae(cfg, path):
    """(H of --hps with --train_flags, the VDVAE of that H with the weights of `path`: ours or
    upstream's official files). A file of another architecture fails here, with restore_params'
    message naming the preset it fits, before any run trains."""
    H = resolve_geometry(setup_hparams(['--hps', cfg.hps, *shlex.split(cfg.train_flags)]))
    return H, restore_params(VAE(H), path)


def vdvae_rates(cfg, path, device):
    """(H, `rate_per_group` of the VDVAE at `path` over the validation split): one posterior sample
    per image, with seed 0, so that the same weights give the same rates."""
    H, model = restore_vdvae(cfg, path)
    H, _, data, prep = set_up_data(H)
    torch.manual_seed(0)
    return H, rate_per_group(model.to(device).eval(), subset(data, cfg.n_eval), prep, device,
                             n_batch=H.n_batch)


def load_run(folder, device, ema=True, prefix='latest'):
    """(H, model with the run's weights at `prefix` (EMA by default) in eval mode, eval split,
    preprocess_fn)."""
    H, model = load_trained(folder, os.path.join(folder, f'{prefix}-model-ema.th' if ema else
                                                 f'{prefix}-model.th'))
    H.test_eval = False
    H, _, data_eval, preprocess_fn = set_up_data(H)
    return H, model.to(device), data_eval, preprocess_fn


def subset(data, n):
    return data if not n or n >= len(data) else torch.utils.data.Subset(data, range(n))


def run_steps(folder):
    return load_file(os.path.join(folder, 'latest-state.th'))['step']


def evaluate_run(cfg, folder, device, prefix='latest', seed=0):
    """The exact validation metrics of a run's EMA weights at `prefix` ('latest', or 'iter-N'),
    with the posterior draws of `seed` (another seed: an independent second measurement, for the
    metric's own noise), computed once and kept in the run folder; None when that checkpoint
    does not exist."""
    if not os.path.exists(os.path.join(folder, f'{prefix}-model-ema.th')):
        return None
    draws = f'-draws{seed}' if seed else ''
    cache = os.path.join(folder, f'eval-valid-{prefix}-{cfg.n_eval or "all"}{draws}.json')
    step = run_steps(folder) if prefix == 'latest' else int(prefix.split('-')[1])
    if os.path.exists(cache):
        with open(cache) as f:
            stats = json.load(f)
        # of this step, and naming its distortion ('mse' or 'nll'): otherwise evaluated again
        if stats.get('step') == step and ('mse' in stats or 'nll' in stats):
            return stats
    H, model, data, prep = load_run(folder, device, prefix=prefix)
    torch.manual_seed(seed)
    stats = evaluate(H, model, subset(data, cfg.n_eval), prep, device)
    stats['step'] = step
    with open(cache, 'w') as f:
        json.dump(stats, f, indent=1)
    return stats


def evaluate_last_fifth(cfg, folder, device):
    """(stats at 4/5 of the run or None, stats at its end, whose 'step' is the run's length): what
    the convergence checks compare."""
    steps = run_steps(folder)
    return (evaluate_run(cfg, folder, device, f'iter-{last_fifth_step(steps)}'),
            evaluate_run(cfg, folder, device))


def eval_images(folder, device, n):
    """The first n validation images: (uint8 NHWC, x_in, x_target)."""
    H, _, data, prep = load_run(folder, device)
    images = load_batch(data, range(min(n, len(data))))
    x_in, x_target = prep(images, device)
    return images.numpy(), x_in, x_target


def reconstruction_grid(folders, device, path, n=8):
    """A PNG of the first n validation images, then a row of each run's reconstructions of them
    (posterior draws of seed 0), each row titled ('original', then the run's name)."""
    images, x_in, _ = eval_images(folders[0], device, n)
    rows = [images]
    for folder in folders:
        _, model, _, _ = load_run(folder, device)
        torch.manual_seed(0)
        rows.append(as_uint8(model.reconstruct(x_in)))
    titles = ['original'] + [os.path.basename(os.path.normpath(f)) for f in folders]
    return grid(rows, path, titles, "validation images and each run's reconstructions")
