"""Train a VDVAE with upstream's command line, on one process or many, resumable exactly.

    python train.py --hps mnist5k                              # CPU, offline
    python train.py --hps cifar10 --data_root DATA            # one GPU
    mpiexec -n 8 python train.py --hps imagenet32             # upstream's launcher
    torchrun --nproc_per_node 8 train.py --hps imagenet32
    python train.py --hps cifar10 --desc run1 --resume       # continue save_dir/run1 exactly
    python train.py --hps cifar10 --restore_ema_path X --test_eval

Checkpoints use upstream's names (`latest-model.th`, `-model-ema.th`, `-opt.th`, `-log.jsonl`,
`iter-N-*`) plus `-state.th` (step, data position, scheduler, scaler, RNG states) and are written as
one set that a crash can never leave half-new.
"""
import argparse
import json
import math
import os
import random
import shutil
import sys
import warnings
from collections import deque
from contextlib import nullcontext

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from vdvae.checkpoint import (load_file, recover_checkpoint_set, restore_optimizer,
                              restore_params, save_checkpoint_set)
from vdvae.data import set_up_data
from vdvae.distributed import all_reduce_mean, broadcast_from_main, cleanup, setup_distributed
from vdvae.evaluation import evaluate, load_batch
from vdvae.hps import Hyperparams, add_vae_arguments, parse_args_and_update_hparams
from vdvae.images import write_images
from vdvae.models import build_model
from vdvae.logger import Logger, read_jsonl
from vdvae.train_helpers import build_optimizer, keep_freed_memory, training_step

# A skipped first update is normal here (NaN batch, huge gradient); torch would warn about it.
warnings.filterwarnings('ignore', message='Detected call of `lr_scheduler.step')

# Keys that fix the architecture: a resumed run must not change them.
ARCHITECTURE_KEYS = ('dataset', 'image_size', 'image_channels', 'enc_blocks', 'dec_blocks', 'width',
                     'zdim', 'custom_width_str', 'bottleneck_multiple', 'no_bias_above',
                     'num_mixtures')
EARLY_LOG_STEPS = {1} | {2 ** e for e in range(3, 14)}
RUN_FILES = ('hparams.json', 'log.jsonl', 'latest-state.th', 'latest-model.th')


class TrainingStopped(RuntimeError):
    """Training cannot make progress; the message says why and what to change."""


# ------------------------------------------------------------------------------------------------
# Run folder, data order, state

def prepare_run_dir(H, run_dir):
    """Check the run folder: writable; holds a run iff --resume; a different run needs --overwrite."""
    try:
        os.makedirs(run_dir, exist_ok=True)
        probe = os.path.join(run_dir, '.write-test')
        open(probe, 'w').close()
        os.unlink(probe)
    except OSError as e:
        raise OSError(f'cannot write to save dir {run_dir!r} ({e.strerror}); choose another '
                      '--save_dir or fix its permissions') from None
    recover_checkpoint_set(run_dir)
    has_run = any(os.path.exists(os.path.join(run_dir, f)) for f in RUN_FILES)
    if H.resume:
        if not os.path.exists(os.path.join(run_dir, 'latest-state.th')):
            raise ValueError(f'--resume: no checkpoint to resume in {run_dir!r} (no '
                             'latest-state.th); start without --resume')
        with open(os.path.join(run_dir, 'hparams.json')) as f:
            saved = json.load(f)
        for key in ARCHITECTURE_KEYS:
            if saved.get(key) != H[key]:
                raise ValueError(f'--resume: the run in {run_dir!r} has {key}={saved.get(key)!r}, '
                                 f'these flags give {H[key]!r}; use the same --hps and flags')
    elif has_run and not H.overwrite:
        raise ValueError(f'save dir {run_dir!r} already holds a run; continue it with --resume, '
                         'start a new one with another --desc, or replace it with --overwrite')
    elif has_run:
        for name in os.listdir(run_dir):
            if name.startswith(('latest-', 'iter-', 'log.', 'samples-', 'hparams')):
                os.unlink(os.path.join(run_dir, name))


def epoch_batches(n_examples, n_batch, seed, epoch, rank, world_size):
    """This rank's index batches of one epoch: a permutation fixed by (seed, epoch), strided over
    ranks like DistributedSampler, last partial batch dropped like upstream's training loader."""
    order = np.random.default_rng([seed, epoch]).permutation(n_examples)[rank::world_size]
    return [order[i * n_batch:(i + 1) * n_batch].tolist() for i in range(len(order) // n_batch)]


def rng_state():
    return dict(torch=torch.get_rng_state(),
                cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                numpy=_numpy_state(), python=random.getstate())


def set_rng_state(state):
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    name, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state['python'])


def _numpy_state():
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)


def gather_rng_states(world_size):
    if world_size == 1:
        return [rng_state()]
    states = [None] * world_size
    torch.distributed.all_gather_object(states, rng_state())
    return states


def save_run(H, run_dir, prefix, vae, ema_vae, optimizer, scheduler, scaler, progress, rngs):
    files = {
        f'{prefix}-model.th': vae.state_dict(),
        f'{prefix}-model-ema.th': ema_vae.state_dict(),
        f'{prefix}-opt.th': optimizer.state_dict(),
        f'{prefix}-state.th': dict(progress, scheduler=scheduler.state_dict(),
                                   scaler=scaler.state_dict(), rng=rngs),
    }
    if os.path.exists(os.path.join(run_dir, 'log.jsonl')):
        files[f'{prefix}-log.jsonl'] = os.path.join(run_dir, 'log.jsonl')
    save_checkpoint_set(run_dir, files)


def accumulate_stats(window):
    """Upstream's summary of the last `iters_per_print` steps: sums of skip/NaN counts, max finite
    grad norm, mean elbo and the mean of its finite values, means of the rest."""
    out = {}
    for key in window[-1]:
        values = [s[key] for s in window]
        finite = [v for v in values if math.isfinite(v)]
        if key in ('distortion_nans', 'rate_nans', 'skipped_updates'):
            out[key] = float(sum(values))
        elif key == 'grad_norm':
            out[key] = max(finite) if finite else float('nan')
        elif key == 'iter_time':
            out[key] = values[-1]
        else:
            out[key] = float(np.mean(values))
            if key == 'elbo':
                out['elbo_filtered'] = float(np.mean(finite)) if finite else float('nan')
    return out


# ------------------------------------------------------------------------------------------------

def main(argv=None):
    H = Hyperparams()
    parser = add_vae_arguments(argparse.ArgumentParser(description=__doc__.split('\n')[0]))
    try:
        parse_args_and_update_hparams(H, parser, argv)
        return train(H)
    except (ValueError, OSError) as e:             # CheckpointError is a ValueError
        print(f'error: {e}', file=sys.stderr)
        return 2
    except TrainingStopped as e:
        print(f'stopped: {e}', file=sys.stderr)
        return 3
    finally:
        cleanup()


def train(H):
    d = setup_distributed(H.port, H.device)
    if d.device.type == 'cpu':
        keep_freed_memory()                 # about 6% faster CPU steps (BENCHMARKS.md)
    run_dir = os.path.join(H.save_dir, H.desc)
    problem = None
    if d.is_main:
        try:
            prepare_run_dir(H, run_dir)
        except (ValueError, OSError) as e:
            problem = str(e)
    problem = broadcast_from_main(problem)          # every rank stops, none waits forever
    if problem:
        raise ValueError(problem)
    H, data_train, data_eval, preprocess_fn = set_up_data(H)
    logprint = Logger(run_dir, enabled=d.is_main, echo=not H.quiet)
    H.update(mpi_size=d.world_size, rank=d.rank, local_rank=d.local_rank, logdir=run_dir)
    if d.is_main:
        with open(os.path.join(run_dir, 'hparams.json'), 'w') as f:
            json.dump(H, f, indent=1, sort_keys=True)
        for key in sorted(H):
            logprint(type='hparam', key=key, value=H[key])

    # Models: the same init on every rank; then per-rank noise (upstream gives all ranks one seed,
    # so their posterior samples repeat the same noise).
    torch.manual_seed(H.seed)
    np.random.seed(H.seed)
    random.seed(H.seed)
    vae, ema_vae = build_model(H), build_model(H)
    if H.restore_path:
        restore_params(vae, H.restore_path)
    if H.restore_ema_path:
        restore_params(ema_vae, H.restore_ema_path)
    else:
        ema_vae.load_state_dict(vae.state_dict())
    ema_vae.requires_grad_(False)
    memory_format = torch.channels_last if H.channels_last else torch.contiguous_format
    vae = vae.to(d.device, memory_format=memory_format)
    ema_vae = ema_vae.to(d.device, memory_format=memory_format)
    optimizer, scheduler = build_optimizer(H, vae)
    scaler = torch.amp.GradScaler(d.device.type, enabled=H.amp == 'fp16')
    amp_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(H.amp)
    autocast = (lambda: torch.autocast(d.device.type, dtype=amp_dtype)) if amp_dtype else nullcontext
    logprint(f'parameters: {sum(p.numel() for p in vae.parameters()):,}; device {d.device}, '
             f'{d.world_size} process(es), batch {H.n_batch} per process, amp {H.amp}')

    progress = dict(step=0, epoch=0, batch=0, consecutive_skips=0)
    rngs = None
    if H.resume:
        state = load_file(os.path.join(run_dir, 'latest-state.th'))
        restore_params(vae, os.path.join(run_dir, 'latest-model.th'))
        restore_params(ema_vae, os.path.join(run_dir, 'latest-model-ema.th'))
        restore_optimizer(optimizer, os.path.join(run_dir, 'latest-opt.th'))
        scheduler.load_state_dict(state['scheduler'])
        scaler.load_state_dict(state['scaler'])
        progress = {k: state[k] for k in progress}
        rngs = state['rng']
        if d.is_main and os.path.exists(os.path.join(run_dir, 'latest-log.jsonl')):
            shutil.copyfile(os.path.join(run_dir, 'latest-log.jsonl'), logprint.jsonl_path)
            logprint.jsonl.seek(0, os.SEEK_END)
        logprint(f"resumed {run_dir} at step {progress['step']}")
    else:
        if H.restore_optimizer_path:
            restore_optimizer(optimizer, H.restore_optimizer_path)
        if H.restore_log_path:
            steps = [r for r in read_jsonl(H.restore_log_path) if r.get('type') == 'train_loss']
            if steps:
                progress.update(epoch=max(r['epoch'] for r in steps), step=max(r['step'] for r in steps))
    if hasattr(vae, 'calibrate') and progress['step'] == 0 and not H.test_eval:
        # before the per-rank seeds, so that every rank measures the same (e.g. gamma = R_K)
        vae.calibrate(data_eval, preprocess_fn, d.device, logprint)
        with torch.no_grad():
            for ema_buffer, buffer in zip(ema_vae.buffers(), vae.buffers()):
                ema_buffer.copy_(buffer)
    if rngs is not None and len(rngs) == d.world_size:
        set_rng_state(rngs[d.rank])
    else:
        torch.manual_seed(H.seed + d.rank)

    model = vae
    if d.world_size > 1:
        model = DistributedDataParallel(
            vae, device_ids=[d.local_rank] if d.device.type == 'cuda' else None,
            gradient_as_bucket_view=True,
            find_unused_parameters=getattr(vae, 'has_unused_parameters', False))
    if H.compile:
        model = torch.compile(model)

    if H.test_eval:
        stats = evaluate(H, ema_vae, data_eval, preprocess_fn, d.device, d.rank, d.world_size, autocast)
        logprint(type='test_loss', **stats)
        return 0

    viz_items = load_batch(data_eval, range(min(H.num_images_visualize, len(data_eval))))
    viz_in, viz_target = preprocess_fn(viz_items, d.device)
    window = deque(maxlen=H.iters_per_print)
    start_step = progress['step']
    done = lambda: progress['epoch'] >= H.num_epochs or (
        H.num_iters is not None and progress['step'] >= H.num_iters)
    bar = tqdm(total=H.num_iters, initial=start_step,
               disable=not (d.is_main and sys.stdout.isatty()) or H.quiet)
    while not done():
        batches = epoch_batches(len(data_train), H.n_batch, H.seed, progress['epoch'], d.rank, d.world_size)
        for indices in batches[progress['batch']:]:
            if done():
                break
            x_in, x_target = preprocess_fn(load_batch(data_train, indices), d.device)
            stats = training_step(H, x_in, x_target, model, ema_vae, optimizer, scaler=scaler,
                                  autocast=autocast, reduce_stats=lambda s: all_reduce_mean(s, d.device))
            scheduler.step()
            if not stats['skipped_updates'] and hasattr(vae, 'after_update'):
                vae.after_update(stats)             # e.g. the Lagrange multiplier's step
            window.append(stats)
            progress['consecutive_skips'] = progress['consecutive_skips'] + 1 if stats['skipped_updates'] else 0
            progress['step'] += 1
            progress['batch'] += 1
            bar.update(1)
            step = progress['step']
            if step % H.iters_per_print == 0 or (step - start_step) in EARLY_LOG_STEPS:
                logprint(type='train_loss', lr=scheduler.get_last_lr()[0], epoch=progress['epoch'],
                         step=step, **accumulate_stats(list(window)))
            if progress['consecutive_skips'] >= H.max_consecutive_skips:
                raise TrainingStopped(
                    f"{progress['consecutive_skips']} updates in a row were skipped (last grad norm "
                    f"{stats['grad_norm']:.1f}, skip_threshold {H.skip_threshold}, NaN loss: "
                    f"{bool(stats['distortion_nans'] or stats['rate_nans'])}); the model no longer "
                    'changes. Raise --skip_threshold above the logged grad norms (or -1 to never '
                    'skip), lower --lr, or restart from an earlier iter-N checkpoint')
            if d.is_main and (step % H.iters_per_images == 0 or (
                    step - start_step in EARLY_LOG_STEPS and H.dataset != 'ffhq_1024')):
                # on a fork of the RNG: pictures (also those after a restart) must not change training
                with torch.random.fork_rng(devices=[d.device] if d.device.type == 'cuda' else []):
                    write_images(H, ema_vae, viz_items, viz_in, viz_target,
                                 os.path.join(run_dir, f'samples-{step}.png'))
            save_latest = step % H.iters_per_save == 0 and math.isfinite(stats.get('loss', stats.get('elbo')))
            save_numbered = step % H.iters_per_ckpt == 0
            if save_latest or save_numbered:
                rngs_now = gather_rng_states(d.world_size)
                for prefix, wanted in (('latest', save_latest), (f'iter-{step}', save_numbered)):
                    if wanted and d.is_main:
                        save_run(H, run_dir, prefix, vae, ema_vae, optimizer, scheduler, scaler,
                                 progress, rngs_now)
        else:                                       # the epoch ran to its end
            progress.update(epoch=progress['epoch'] + 1, batch=0)
            if (progress['epoch'] - 1) % H.epochs_per_eval == 0:
                stats = evaluate(H, ema_vae, data_eval, preprocess_fn, d.device, d.rank,
                                 d.world_size, autocast)
                logprint(type='eval_loss', epoch=progress['epoch'] - 1, step=progress['step'], **stats)
    rngs_now = gather_rng_states(d.world_size)
    if d.is_main:
        save_run(H, run_dir, 'latest', vae, ema_vae, optimizer, scheduler, scaler, progress, rngs_now)
        logprint(f"finished at step {progress['step']}; checkpoints in {run_dir}")
    bar.close()
    logprint.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
