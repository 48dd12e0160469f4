"""The command line every experiment shares: its flags and their checks, the inputs checked before
the first run trains, and the one way a command ends on a user's mistake (an `error:` line and
exit status 2, no traceback)."""
import argparse
import os
import shlex

from vdvae.data import load_splits, resolve_geometry
from vdvae.errors import ConfigError, exit_status
from vdvae.hps import comma_list, number, setup_hparams

from ..metrics import DEFAULT_FID_SAMPLES
from .runs import run_all


def parse(argv, description, add_arguments=None, metrics=()):
    """An experiment's flags, checked: the common ones, its own (`add_arguments`) and those of the
    metrics it reports (`metrics`: 'sample', 'perceptual'; see `add_metric_arguments`)."""
    parser = argparse.ArgumentParser(description=description)
    a = parser.add_argument
    a('--hps', default='mnist16', help='dataset preset: mnist16, mnist5k, svhn, celeba64 or lsun64; '
      'with --checkpoint also upstream\'s cifar10, imagenet32, imagenet64, ffhq256, ffhq1024 '
      '(default: %(default)s)')
    a('--out', default='experiments', help='output folder; re-running resumes it (default: %(default)s)')
    a('--steps', type=int, default=800000, help='training steps of each run (default: %(default)s)')
    a('--seeds', type=comma_list(int), default='0', help='comma-separated training seeds; claims '
      'are checked on every seed and reported as mean +- std (default: %(default)s)')
    a('--jobs', type=number(1), default=1, help='runs trained at once (subprocesses, cores / jobs '
      'threads each); 1: one after the other (default: %(default)s)')
    a('--ensemble', type=number(1), default=1, help='train up to this many same-shaped runs '
      '(seeds, targets) as one batched computation, one job (vdvae/ensemble.py); whether it pays '
      'depends on the device: on 2 CPU cores it does not (BENCHMARKS.md) (default: %(default)s)')
    a('--lr_decay', action='store_true',
      help='every run\'s lr decays along a cosine to 0 at its last step (--lr_decay_iters): '
      'short runs settle within their budget (the toy protocol does this)')
    a('--train_flags', default='', help='extra train.py flags for every run, e.g. "--data_root D"')
    a('--loop', choices=('progcode', 'upstream'), default='progcode',
      help='train every run with progcode\'s train.py, or with upstream\'s own loop in a '
      'checkout of openai/vdvae (RGB data; a run it left unfinished starts again) '
      '(default: %(default)s)')
    a('--vdvae_root', default=None,
      help='--loop upstream: the checkout (default: $VDVAE_ROOT, else the vdvae_upstream submodule)')
    a('--device', default=None, help='torch device for evaluation (default: cuda if available)')
    a('--n_eval', type=number(0), default=0, help='evaluate on the first N validation images (0: all)')
    add_metric_arguments(parser, *metrics)
    if add_arguments:
        add_arguments(parser)
    cfg = parser.parse_args(argv)
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f'--seeds {cfg.seeds}: give at least one seed, each once')
    if cfg.steps < 5:
        raise ConfigError(f'--steps {cfg.steps}: at least 5 (the convergence checks compare the '
                          'last fifth of each run)')
    return cfg


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


def check_inputs(cfg):
    """What every experiment reads, checked before its first run trains and before it writes
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


def run_main(fn, argv=None):
    """0 when `fn(argv)` finishes; on a user's mistake one `error:` line on stderr and 2."""
    return exit_status(fn, argv)


def train_then_report(plan, report):
    """The `run(cfg)` of an experiment that chooses nothing between training and reporting: its
    inputs checked, every run of `plan(cfg)` trained (or found finished), then `report(cfg)`."""
    def run(cfg):
        check_inputs(cfg)
        run_all(cfg, plan(cfg))
        return report(cfg)
    return run


def command(run, doc, add_arguments=None, metrics=()):
    """An experiment's `main(argv=None)`: its flags parsed by `parse`, then `run(cfg)`."""
    def main(argv=None):
        return run_main(lambda a: run(parse(a, doc.split('\n')[0], add_arguments, metrics)), argv)
    return main
