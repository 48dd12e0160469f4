"""What the experiment drivers share: their flags, loading and evaluating finished runs once, the
per-seed summaries and the report files. Training runs are planned and run by `runs.py`;
convergence checks are `convergence.py`; figures are `figures.py`.

Each experiment module has `stages(cfg)` (the training it needs, as `Stage`s), `report(cfg)` (its
numbers, checks, plots and report.md from the finished runs) and `run(cfg)` (both). The demo
plans the stages of all experiments at once, so that independent ones train side by side.
"""
import argparse
import json
import os
import platform
import shlex
import sys

import numpy as np
import torch

from vdvae.checkpoint import load_file, restore_params
from vdvae.data import load_splits, resolve_geometry, set_up_data
from vdvae.errors import ConfigError, UserError
from vdvae.evaluation import evaluate, load_batch
from vdvae.hps import read_hparams, setup_hparams
from vdvae.models import build_model
from vdvae.vae import VAE

from ..metrics import default_cache_dir

from .figures import as_uint8, grid, plot  # noqa: F401 (the drivers import them from here)
from .runs import ExperimentError, last_fifth_step, run_dir, say  # noqa: F401


def add_common_arguments(parser):
    a = parser.add_argument
    a('--hps', default='mnist16', help='dataset preset: mnist16, mnist5k, svhn, celeba64 or lsun64; '
      'with --checkpoint also upstream\'s cifar10, imagenet32, imagenet64, ffhq256, ffhq1024 '
      '(default: %(default)s)')
    a('--out', default='experiments', help='output folder; re-running resumes it (default: %(default)s)')
    a('--steps', type=int, default=800000, help='training steps of each stage (default: %(default)s)')
    a('--seeds', default='0', help='comma-separated training seeds; claims are checked on every '
      'seed and reported as mean +- std (default: %(default)s)')
    a('--jobs', type=int, default=1, help='stages trained at once (subprocesses, cores / jobs '
      'threads each); 1: one after the other (default: %(default)s)')
    a('--lr_decay', action='store_true',
      help='every stage\'s lr decays along a cosine to 0 at its last step (--lr_decay_iters): '
      'short runs settle within their budget (the toy protocol does this)')
    a('--train_flags', default='', help='extra train.py flags for every stage, e.g. "--data_root D"')
    a('--loop', choices=('progcode', 'upstream'), default='progcode',
      help='train every stage with progcode\'s train.py, or with upstream\'s own loop in a '
      'checkout of openai/vdvae (RGB data; a stage it left unfinished starts again) '
      '(default: %(default)s)')
    a('--vdvae_root', default=None,
      help='--loop upstream: the checkout (default: $VDVAE_ROOT, else the vdvae_upstream submodule)')
    a('--device', default=None, help='torch device for evaluation (default: cuda if available)')
    a('--n_eval', type=int, default=0, help='evaluate on the first N validation images (0: all)')
    a('--metrics_cache', default=None,
      help='folder for the stand-in classifier and reference statistics, shared by every '
      'experiment (default: $PROGCODE_CACHE, else ~/.cache/progcode/metrics)')
    return parser


def parse_seeds(text):
    try:
        seeds = [int(s) for s in str(text).split(',') if s.strip()]
    except ValueError:
        raise ConfigError(f'--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2') from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f'--seeds {text!r}: give at least one seed, each once')
    return seeds


def seeded(name, seed):
    """The run name of `name` trained with `seed`."""
    return f'{name}-seed{seed}'


def metrics_cache(cfg):
    """The stand-in classifier and reference statistics: one cache for every experiment (by
    default $PROGCODE_CACHE or ~/.cache/progcode/metrics), so that two experiments that score the
    same samples agree."""
    return getattr(cfg, 'metrics_cache', None) or default_cache_dir()


def default_device(cfg):
    return cfg.device or ('cuda' if torch.cuda.is_available() else 'cpu')


def restore_vdvae(cfg, path):
    """(H of --hps with --train_flags, the VDVAE of that H with the weights of `path`: ours or
    upstream's official files). A file of another architecture fails here, with restore_params'
    message naming the preset it fits, before any stage runs."""
    H = resolve_geometry(setup_hparams(['--hps', cfg.hps, *shlex.split(cfg.train_flags)]))
    return H, restore_params(VAE(H), path)


def load_run(folder, device, ema=True, prefix='latest'):
    """(H, model with the run's weights at `prefix` (EMA by default) in eval mode, eval split,
    preprocess_fn)."""
    H = read_hparams(os.path.join(folder, 'hparams.json'))
    H.test_eval = False
    H, _, data_eval, preprocess_fn = set_up_data(H)
    model = build_model(H)
    restore_params(model, os.path.join(folder, f'{prefix}-model-ema.th' if ema else
                                       f'{prefix}-model.th'))
    return H, model.to(device).eval(), data_eval, preprocess_fn


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
        if stats.get('step') == step and ('mse' in stats or 'nll' in stats):
            return stats                # (older caches lack the distortion's own name)
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


def mean_std(values, digits=5):
    """'m +- s (n seeds)' of a list of numbers, or the number alone for one seed."""
    values = [float(v) for v in values]
    if len(values) == 1:
        return f'{values[0]:.{digits}f}'
    return f'{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}'


def summary(values):
    values = [float(v) for v in values]
    return dict(mean=float(np.mean(values)), std=float(np.std(values, ddof=1)) if len(values) > 1
                else 0.0, values=values)


def machine():
    """One line: CPU (or GPU), cores, torch version."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    gpu = f', GPU {torch.cuda.get_device_name(0)}' if torch.cuda.is_available() else ''
    python = sys.version.split()[0]
    return f'{cpu}, {os.cpu_count()} cores{gpu}; torch {torch.__version__}, Python {python}'


def write_results(out, name, results, report_lines):
    """results.json and report.md of one experiment under OUT/NAME/."""
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'results.json'), 'w') as f:
        json.dump(results, f, indent=1, default=_plain)
    with open(os.path.join(folder, 'report.md'), 'w') as f:
        f.write('\n'.join(report_lines) + '\n')
    say(f'{name}: report in {os.path.join(folder, "report.md")}')
    return folder


def _plain(value):
    if hasattr(value, 'as_dict'):
        return value.as_dict()
    return float(value)


def check_table(checks):
    """Markdown rows of convergence checks."""
    rows = ['| model | check | passed | numbers |', '|---|---|---|---|']
    rows += [f"| {c.model} | {c.check} | {'yes' if c.passed else '**no**'} | {c.detail} |"
             for c in checks]
    return rows


def parse(argv, description, add_arguments=None):
    parser = add_common_arguments(argparse.ArgumentParser(description=description))
    if add_arguments:
        add_arguments(parser)
    cfg = parser.parse_args(argv)
    cfg.seeds = parse_seeds(cfg.seeds)
    if cfg.steps < 5:
        raise ConfigError(f'--steps {cfg.steps}: at least 5 (the convergence checks compare the '
                          'last fifth of each run)')
    if cfg.jobs < 1:
        raise ConfigError(f'--jobs {cfg.jobs}: at least 1')
    if cfg.n_eval < 0:
        raise ConfigError(f'--n_eval {cfg.n_eval}: at least 0 (0: the whole validation split)')
    return cfg


def number(low, kind=int, strict=False):
    """An argparse type: a `kind` >= low (> low if strict), or argparse's one-line error."""
    def parse_number(text):
        try:
            value = kind(text)
        except ValueError:
            what = 'an integer' if kind is int else 'a number'
            raise argparse.ArgumentTypeError(f'{text!r} is not {what}') from None
        if not (value > low if strict else value >= low):
            raise argparse.ArgumentTypeError(f'{text!r}: must be {">" if strict else ">="} {low}')
        return value
    return parse_number


def check_inputs(cfg):
    """What every experiment reads, checked before its first stage trains and before it writes
    anything: the training flags as train.py will parse them, and the dataset's files. Returns
    those hyperparameters (of --hps)."""
    if os.path.exists(cfg.out) and not os.path.isdir(cfg.out):
        raise ConfigError(f'--out {cfg.out!r} is a file, not a folder; choose another --out')
    H = resolve_geometry(setup_hparams(['--hps', cfg.hps, *shlex.split(cfg.train_flags)]))
    load_splits(H.dataset, H.data_root)
    if getattr(cfg, 'loop', 'progcode') == 'upstream':
        from ..upstream.checkout import recognise
        cfg.vdvae_root = recognise(cfg.vdvae_root or os.environ.get('VDVAE_ROOT'))
        if H.image_channels != 3:
            raise ConfigError(f'--loop upstream: {H.dataset} has {H.image_channels}-channel '
                              'images, but upstream\'s loop handles RGB only; use --loop progcode')
    return H


def run_main(fn, argv):
    """Run an experiment's `fn(argv)` with one clear error message on failure."""
    try:
        fn(argv)
        return 0
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2

