"""`install(root)`: progcode's presets, flags, models and datasets in a checkout of openai/vdvae,
by rebinding names in its imported modules (no file is edited).

Besides adding progcode, it fixes these quirks of upstream's code (docs/plugin.md lists them with
the tests that show each):
* `--hps` is mandatory (an AttributeError without it) and an unknown preset is a bare KeyError:
  `--hps` now defaults to no preset and a wrong name is a parser error listing the presets;
* `warmup_iters 0` divides by zero (the paper's presets use 0): `linear_warmup` takes 0 as "no
  warm-up" and otherwise keeps upstream's schedule (factor 0 at the first step, 1 from
  warmup_iters on);
* `save_model` writes four files one after another (and copies the log with `cp`): it now writes
  them as one all-or-nothing set (vdvae.checkpoint.save_checkpoint_set), under the same names;
* `update_ema` averages every parameter, which moves frozen ones (a progressive stage 1) by
  rounding, and no buffers: it now averages trainable parameters only and copies buffers (the
  Lagrange multiplier), and first lets the model take its multiplier step;
* the cifar10 loader's `np.vstack(generator)` fails on NumPy >= 1.24 (upstream issue 19);
* SIGTERM (pre-emption) and SIGINT end the loop at once, losing everything since the last save:
  they now stop it after the current iteration, every rank at the same one, with the `latest`
  set saved, and the process exits with 128 + the signal's number (vdvae.preemption);
* DDP with `device_ids` fails for a model on the CPU, and without `find_unused_parameters` for
  the masked decoder's unused branches.
Not changed: the first step's lr is 0; warm-up restarts on resume; a run whose gradient norm stays
above skip_threshold stops updating for good (openai/vdvae issue 25); evaluation averages batch means.
"""
import argparse
import json
import os
import signal
import sys

import torch
import torch.distributed as dist

from progcode_ext.register import add_progcode_arguments  # (importing it registers the models)
from vdvae import data as core_data
from vdvae.checkpoint import atomic_write, recover_checkpoint_set, save_checkpoint_set
from vdvae.contract import Model
from vdvae.errors import ConfigError
from vdvae.hps import HPARAMS_REGISTRY, unknown_name_message
from vdvae.models import MODELS
from vdvae.preemption import StopRequest, install_stop_handlers, preempted_status
from vdvae.train_helpers import cosine_decay_factor, update_ema as update_trainable_ema

from . import substitutes
from .checkout import import_modules, is_main_process, recognise, warn_unless_pinned
from .interface import UpstreamInterface, vae_factory

UPSTREAM_DATASETS = ('cifar10', 'imagenet32', 'imagenet64', 'ffhq_256', 'ffhq_1024')
_INSTALLED = {}


def install(root):
    """Install progcode into the checkout at `root` (its folder, or its train.py; None: the
    vdvae_upstream submodule); idempotent. Returns {module name: module} of the checkout."""
    root = recognise(root)
    if root in _INSTALLED:          # also when a hooked train.py is imported by install itself
        return _INSTALLED[root]
    warn_unless_pinned(root)
    _INSTALLED[root] = modules = {}
    try:
        modules.update(_install(root))
    except BaseException:
        del _INSTALLED[root]
        raise
    return modules


def _install(root):
    done = substitutes.install_substitutes()
    modules = import_modules(root)
    hps, helpers = modules['hps'], modules['train_helpers']
    for name, preset in HPARAMS_REGISTRY.items():     # the checkout's own presets win
        hps.HPARAMS_REGISTRY.setdefault(name, getattr(hps, 'Hyperparams', dict)(preset))
    replacements = [
        (hps.add_vae_arguments, with_progcode_arguments(hps.add_vae_arguments, hps.HPARAMS_REGISTRY)),
        (modules['vae'].VAE, vae_factory(modules['vae'].VAE)),
        (modules['data'].set_up_data, with_progcode_datasets(modules['data'].set_up_data)),
        (torch.nn.parallel.DistributedDataParallel, substitutes.DistributedDataParallel),
    ]
    if hasattr(helpers, 'load_vaes') and hasattr(helpers, 'load_opt'):    # what a save needs
        for name, wrap in (('load_vaes', remembering_models), ('load_opt', stopping_on_signals)):
            replacements.append((getattr(helpers, name), wrap(getattr(helpers, name))))
    for name, replacement in (('update_ema', update_ema), ('save_model', save_model),
                              ('linear_warmup', linear_warmup)):
        if hasattr(helpers, name):
            replacements.append((getattr(helpers, name), replacement))
    for original, replacement in replacements:
        rebind(modules.values(), original, replacement)
    if getattr(modules['data'], 'np', None) is substitutes.np:
        modules['data'].np = substitutes.NumpyWithListStacking()
    if done and is_main_process():
        print(f'progcode: substitutes for {", ".join(done)} (see progcode_ext/upstream/'
              'substitutes.py)', file=sys.stderr)
    return modules


def rebind(modules, original, replacement):
    """Point every module-level name bound to `original` at `replacement` (also the copies that
    `from x import y` made)."""
    for module in modules:
        for name, value in list(vars(module).items()):
            if value is original:
                setattr(module, name, replacement)


# ------------------------------------------------------------------------------------------------
# Flags

class _NewOptionsOnly:
    """A parser front that skips options the checkout's parser already has (a fork's own)."""

    def __init__(self, parser):
        self.parser = parser

    def add_argument(self, *names, **kwargs):
        if not any(n in self.parser._option_string_actions for n in names):
            self.parser.add_argument(*names, **kwargs)


def with_progcode_arguments(add_vae_arguments, registry):
    def add_arguments(parser):
        parser = add_vae_arguments(parser) or parser
        new = _NewOptionsOnly(parser)
        new.add_argument('--model', type=str, default='vdvae', choices=sorted(MODELS),
                         help="network: 'vdvae' is the checkout's own VAE; stage1, two_stage, "
                              "multi_stage and masked are progcode's (default: %(default)s)")
        new.add_argument('--num_iters', type=int, default=None,
                         help='stop after this many iterations, saved as latest (None: upstream\'s '
                              '--num_epochs); with it each save also writes latest-state.th '
                              '(the step) and the run folder hparams.json, as progcode\'s train.py '
                              'does, so that progcode\'s experiments read the run')
        add_progcode_arguments(new)
        presets = parser._option_string_actions.get('--hps') or \
            parser._option_string_actions.get('--hparam_sets')
        if presets is not None:
            presets.type = preset_list(registry)
            if presets.default is None:
                presets.default = ''
        return parser
    return add_arguments


def preset_list(registry):
    def check(text):
        for name in filter(None, text.split(',')):
            if name not in registry:
                raise argparse.ArgumentTypeError(unknown_name_message('preset', name, registry))
        return text
    check.__name__ = 'preset list'
    return check


# ------------------------------------------------------------------------------------------------
# Data

class UpstreamItems(torch.utils.data.Dataset):
    """A progcode dataset with upstream's items: 1-tuples of a uint8 HWC tensor, as from a
    TensorDataset, which upstream's loader and sample grid index with x[0]."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return (self.images[i],)


def with_progcode_datasets(set_up_data):
    """Upstream's `set_up_data`, which also serves progcode's datasets (svhn, celeba64,
    lsun_bedroom64, imagefolder) with their files, splits and normalisations (docs/data.md)."""
    def set_up_data_(H):
        if H.dataset in UPSTREAM_DATASETS or H.dataset not in core_data.LOADERS:
            return set_up_data(H)
        H, train, valid, preprocess = core_data.set_up_data(H)
        if H.image_channels != 3:
            raise ConfigError(f'{H.dataset} has {H.image_channels}-channel images, but upstream\'s '
                              'loop handles RGB only (its sample grid and mixture of logistics); '
                              'train it with progcode\'s train.py')
        device = torch.device('cuda', H.local_rank or 0) if torch.cuda.is_available() else None
        return H, UpstreamItems(train), UpstreamItems(valid), lambda x: preprocess(x, device)

    def set_up_data_and_run(H):
        H, *rest = set_up_data_(H)
        RUN.update(H=H, iteration=0)
        if H.get('num_iters') and H.num_iters % H.iters_per_save:
            raise ConfigError(f'--num_iters {H.num_iters} must be a multiple of --iters_per_save '
                              f'({H.iters_per_save}), so that the run is saved where it stops')
        if H.get('num_iters') and is_main_process():
            write_hparams(H)
        return (H, *rest)
    return set_up_data_and_run


# ------------------------------------------------------------------------------------------------
# A run of a fixed number of iterations (--num_iters), in run folders progcode's experiments read

# this process's run: its H, iterations done; once its loop starts, what a save needs (the
# models, optimizer and logprint) and the stop request that SIGTERM / SIGINT set
RUN = {'H': None, 'iteration': 0, 'stop': None}


def write_hparams(H):
    """hparams.json in the run folder (upstream's save_dir/desc), as progcode's train.py writes it."""
    path = os.path.join(H.save_dir, 'hparams.json')
    atomic_write(path, lambda f: f.write(json.dumps(dict(H), indent=1, sort_keys=True,
                                                    default=str).encode()))


def count_iteration(iteration):
    """Called with the number of iterations done after each one (the warm-up schedule's step):
    past --num_iters, every rank stops, the run having been saved at --num_iters; after a stop
    signal, every rank stops here, the run saved now."""
    RUN['iteration'] = iteration
    H = RUN['H']
    if H is not None and H.get('num_iters') and iteration > H.num_iters:
        sys.exit(0)
    if RUN['stop'] is not None:
        signum = RUN['stop'].agreed(_collective_device())
        if signum:
            preempt(signum)


# ------------------------------------------------------------------------------------------------
# Pre-emption: upstream's loop has no signal handler; this one acts between iterations

def remembering_models(load_vaes):
    """Upstream's `load_vaes`, keeping the models for a save at a stop signal."""
    def load_vaes_(H, logprint):
        vae, ema_vae = load_vaes(H, logprint)
        RUN.update(vae=vae, ema_vae=ema_vae)
        return vae, ema_vae
    return load_vaes_


def calibrate(H, vae, ema_vae, logprint):
    """What progcode's train.py does before a fresh run's first step, done in upstream's loop too:
    the model's `calibrate` on progcode's loader of the same validation split (e.g. the
    gamma-optimal decoder's gamma = R_K of the trained VDVAE), then the EMA copy's buffers."""
    vae = getattr(vae, 'module', vae)                   # upstream's load_vaes wraps it in DDP
    if H.get('restore_path') or getattr(type(vae), 'calibrate', Model.calibrate) is Model.calibrate:
        return
    _, _, valid, preprocess = core_data.set_up_data(H)
    with torch.random.fork_rng(devices=[]):      # upstream's own random stream stays as it was
        torch.manual_seed(H.seed)
        vae.calibrate(valid, preprocess, next(vae.parameters()).device, logprint)
    if ema_vae is not None:
        with torch.no_grad():
            for ema_buffer, buffer in zip(ema_vae.buffers(), vae.buffers()):
                ema_buffer.copy_(buffer)


def stopping_on_signals(load_opt):
    """Upstream's `load_opt`, which its training loop calls first: keeps the optimizer and the
    logger for a save at a stop signal, then lets SIGTERM / SIGINT only ask the loop to stop (it
    does at the next iteration, in `count_iteration`)."""
    def load_opt_(H, vae, logprint):
        calibrate(H, vae, RUN.get('ema_vae'), logprint)
        out = load_opt(H, vae, logprint)
        RUN.update(optimizer=out[0], logprint=logprint, stop=StopRequest())
        install_stop_handlers(RUN['stop'])
        return out
    return load_opt_


def _collective_device():
    """Where the stop flag is reduced: NCCL reduces CUDA tensors only."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == 'nccl':
        return torch.device('cuda', torch.cuda.current_device())
    return None


def preempt(signum):
    """Save `latest` as upstream's periodic save does (rank 0), wait until it is written (mpiexec
    ends the other ranks as soon as one exits non-zero), then exit with 128 + signum."""
    H, iteration = RUN['H'], RUN['iteration']
    if is_main_process():
        save_model(os.path.join(H.save_dir, 'latest'), RUN['vae'], RUN['ema_vae'],
                   RUN['optimizer'], H)
        RUN['logprint'](f'pre-empted by {signal.Signals(signum).name} after {iteration} '
                        f'iterations: saved {os.path.join(H.save_dir, "latest")}-*; continue with '
                        "upstream's --restore_path, --restore_ema_path, --restore_optimizer_path "
                        'and --restore_log_path on those files')
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    sys.exit(preempted_status(signum))


# ------------------------------------------------------------------------------------------------
# train_helpers

def update_ema(vae, ema_vae, ema_rate):
    """After an applied update: the model's multiplier step, then the EMA of trainable
    parameters (frozen ones are left exactly as they are) and a copy of the buffers."""
    model = getattr(vae, 'module', vae)                # under DDP
    if isinstance(model, UpstreamInterface):        # a progcode network, not the checkout's VAE
        model.after_update(model.rank_averaged_terms())
    update_trainable_ema(model, ema_vae, float(ema_rate))


def save_model(path, vae, ema_vae, optimizer, H):
    """Upstream's four checkpoint files, written as one all-or-nothing set."""
    folder, prefix = os.path.split(os.path.abspath(path))
    recover_checkpoint_set(folder)                   # finish or drop an interrupted save first
    files = {f'{prefix}-model.th': vae.state_dict(), f'{prefix}-model-ema.th': ema_vae.state_dict(),
             f'{prefix}-opt.th': optimizer.state_dict()}
    log = os.path.join(H.save_dir, 'log.jsonl')
    if os.path.exists(log):
        files[f'{prefix}-log.jsonl'] = log
    if H.get('num_iters'):
        files[f'{prefix}-state.th'] = dict(step=RUN['iteration'])
    save_checkpoint_set(folder, files)


def linear_warmup(warmup_iters):
    """Upstream's warm-up factor; warmup_iters 0 means none (upstream divides by zero); times
    progcode's cosine decay when the run asks for one (--lr_decay_iters)."""
    def factor(iteration):
        count_iteration(iteration)
        H = RUN['H']
        decay = cosine_decay_factor(iteration, H.get('lr_decay_iters') or 0, warmup_iters) \
            if H is not None else 1.0
        if warmup_iters <= 0 or iteration > warmup_iters:
            return decay
        return iteration / warmup_iters * decay
    return factor
