"""What the experiment drivers share: training stages that are never re-run once finished, loading
a finished run, evaluating it once, image grids, plots and the report.

A stage is one `train.py` run in `OUT/runs/NAME`. It is finished when its `latest-state.th` has
reached the stage's step count; an unfinished one is resumed exactly. With the environment variable
LAUNCH set (e.g. `LAUNCH="torchrun --nproc_per_node 8"` or `LAUNCH="mpiexec -n 8"`), stages run as
`$LAUNCH train.py ...` on many GPUs; otherwise in this process.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np
import torch

from vdvae.checkpoint import load_file, restore_params
from vdvae.data import set_up_data
from vdvae.evaluation import evaluate, load_batch
from vdvae.hps import Hyperparams, add_vae_arguments, parse_flags, setup_hparams
from vdvae.images import tile_images, write_image
from vdvae.models import build_model
from vdvae.vae import VAE
from vdvae.vae_helpers import to_uint8

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ExperimentError(RuntimeError):
    pass


def add_common_arguments(parser):
    a = parser.add_argument
    a('--hps', default='mnist5k', help='dataset preset: mnist5k, svhn, celeba64 or lsun64; with '
      '--checkpoint also upstream\'s cifar10, imagenet32, imagenet64, ffhq256, ffhq1024 '
      '(default: %(default)s)')
    a('--out', default='experiments', help='output folder; re-running resumes it (default: %(default)s)')
    a('--steps', type=int, default=800000, help='training steps of each stage (default: %(default)s)')
    a('--train_flags', default='', help='extra train.py flags for every stage, e.g. "--data_root D"')
    a('--device', default=None, help='torch device for evaluation (default: cuda if available)')
    a('--n_eval', type=int, default=0, help='evaluate on the first N validation images (0: all)')
    a('--metrics_cache', default=None,
      help='folder for the stand-in classifier and reference statistics (default: OUT/metric-cache)')
    return parser


def metrics_cache(cfg):
    return getattr(cfg, 'metrics_cache', None) or os.path.join(cfg.out, 'metric-cache')


def say(*args):
    print(f'[{time.strftime("%H:%M:%S")}]', *args, flush=True)


def train_stage(cfg, name, preset, flags=(), steps=None):
    """Train (or resume, or skip) the stage `name`; returns its run folder. The stage's `flags`
    come after `--train_flags`, so they win over it (e.g. a probe's own --progressive_res)."""
    steps = steps or cfg.steps
    runs = os.path.join(cfg.out, 'runs')
    run_dir = os.path.join(runs, name)
    state_path = os.path.join(run_dir, 'latest-state.th')
    argv = ['--hps', preset, *shlex.split(cfg.train_flags), *flags, '--save_dir', runs, '--desc',
            name, '--num_iters', str(steps), '--quiet']
    done = 0
    if os.path.exists(state_path):
        changed = changed_settings(run_dir, argv)
        if changed:
            raise ExperimentError(f'{run_dir} was trained with other settings ({changed}); its '
                                  'results do not belong to this command: use another --out')
        done = load_file(state_path)['step']
    if done >= steps:
        say(f'{name}: finished earlier ({done} steps), not re-run')
        return run_dir
    argv += ['--resume'] if done else []
    say(f'{name}: training {preset} for {steps} steps' + (f' (resuming at {done})' if done else ''))
    start = time.time()
    if os.environ.get('LAUNCH'):
        rc = subprocess.call(shlex.split(os.environ['LAUNCH']) + [os.path.join(REPO, 'train.py')] + argv)
    else:
        from vdvae.train import main
        rc = main(argv)
    if rc != 0:
        raise ExperimentError(f'stage {name} failed (exit {rc}); see {run_dir}/log.txt')
    say(f'{name}: done in {time.time() - start:.0f} s')
    return run_dir


# Flags that say where and how long a stage runs, not what it computes.
RUN_CONTROL = {'save_dir', 'desc', 'num_iters', 'num_epochs', 'resume', 'overwrite', 'quiet',
               'device', 'compile', 'port'}


def changed_settings(run_dir, argv):
    """'key: then -> now' for each flag of `argv` whose value differs from the one the run in
    `run_dir` was started with ('' when none does)."""
    with open(os.path.join(run_dir, 'hparams.json')) as f:
        saved = json.load(f)
    H = parse_flags(add_vae_arguments(argparse.ArgumentParser()), argv)
    return ', '.join(f'{k}: {saved[k]!r} -> {v!r}' for k, v in sorted(H.items())
                     if k not in RUN_CONTROL and v is not None and k in saved and saved[k] != v)


def restore_vdvae(cfg, path):
    """(H of --hps with --train_flags, the VDVAE of that H with the weights of `path`: ours or
    upstream's official files). A file of another architecture fails here, with restore_params'
    message naming the preset it fits, before any stage runs."""
    H = setup_hparams(['--hps', cfg.hps, *shlex.split(cfg.train_flags)])
    return H, restore_params(VAE(H), path)


def load_run(run_dir, device, ema=True):
    """(H, model with the run's EMA weights in eval mode, eval split, preprocess_fn)."""
    with open(os.path.join(run_dir, 'hparams.json')) as f:
        H = Hyperparams(json.load(f))
    H.test_eval = False
    H, _, data_eval, preprocess_fn = set_up_data(H)
    model = build_model(H)
    restore_params(model, os.path.join(run_dir, 'latest-model-ema.th' if ema else 'latest-model.th'))
    return H, model.to(device).eval(), data_eval, preprocess_fn


def subset(data, n):
    return data if not n or n >= len(data) else torch.utils.data.Subset(data, range(n))


def evaluate_run(cfg, run_dir, device):
    """The run's exact validation metrics (EMA weights), computed once and kept in the run folder."""
    cache = os.path.join(run_dir, f'eval-valid-{cfg.n_eval or "all"}.json')
    state = load_file(os.path.join(run_dir, 'latest-state.th'))
    if os.path.exists(cache):
        with open(cache) as f:
            stats = json.load(f)
        if stats.get('step') == state['step']:
            return stats
    H, model, data, prep = load_run(run_dir, device)
    torch.manual_seed(0)
    stats = evaluate(H, model, subset(data, cfg.n_eval), prep, device)
    stats['step'] = state['step']
    with open(cache, 'w') as f:
        json.dump(stats, f, indent=1)
    return stats


def reconstructions(model, x_in, x_target):
    """Mean-head reconstructions (NHWC, [-1, 1]) of a stage-1, masked or probe model."""
    with torch.no_grad():
        if hasattr(model, 'reconstruct'):
            try:
                return model.reconstruct(x_in)
            except TypeError:
                return model.reconstruct(x_in, x_target)
        px_z, _ = model.decoder(model.encoder(x_in))
        return model.decoder.out_net(px_z)


def eval_images(run_dir, device, n):
    """The first n validation images: (uint8 NHWC, x_in, x_target)."""
    H, _, data, prep = load_run(run_dir, device)
    images = load_batch(data, range(min(n, len(data))))
    x_in, x_target = prep(images, device)
    return images.numpy(), x_in, x_target


from .figures import as_uint8, grid, plot  # noqa: E402,F401 (re-exported)


def write_results(out, name, results, report_lines):
    """results.json and report.md of one experiment under OUT/NAME/."""
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'results.json'), 'w') as f:
        json.dump(results, f, indent=1, default=float)
    with open(os.path.join(folder, 'report.md'), 'w') as f:
        f.write('\n'.join(report_lines) + '\n')
    say(f'{name}: report in {os.path.join(folder, "report.md")}')
    return folder


def default_device(cfg):
    return cfg.device or ('cuda' if torch.cuda.is_available() else 'cpu')


def parse(argv, description, add_arguments=None):
    parser = add_common_arguments(argparse.ArgumentParser(description=description))
    if add_arguments:
        add_arguments(parser)
    cfg = parser.parse_args(argv)
    os.makedirs(cfg.out, exist_ok=True)
    return cfg


def run_main(fn, argv):
    """Run an experiment's `fn(argv)` with one clear error message on failure."""
    from ..metrics import MissingWeightsError
    try:
        fn(argv)
        return 0
    except (ExperimentError, MissingWeightsError, ValueError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
