"""Train a VDVAE with upstream's command line, on one process or many, resumable exactly.

SIGTERM or SIGINT saves the latest state after the current step and exits with 143 or 130; a rank
that loses the others stops with status 4; a full disk is one `error:` line (status 2), the
previous checkpoint intact (docs/training.md, "Faults").

    python train.py --hps mnist5k                              # CPU, offline
    python train.py --hps cifar10 --data_root DATA            # one GPU
    mpiexec -n 8 python train.py --hps imagenet32             # upstream's launcher
    torchrun --nproc_per_node 8 train.py --hps imagenet32
    python train.py --hps cifar10 --desc run1 --resume       # continue save_dir/run1 exactly
    python train.py --hps mnist16 --desc r --ensemble 3      # seeds 0-2 as one batched model
    python train.py --hps cifar10 --restore_ema_path X --test_eval

Checkpoints use upstream's names (`latest-model.th`, `-model-ema.th`, `-opt.th`, `-log.jsonl`,
`iter-N-*`) plus `-state.th` (step, data position, scheduler, scaler, RNG states) and are written as
one set that a crash can never leave half-new.
"""
import argparse
import errno
import json
import math
import os
import random
import shutil
import signal
import sys
import warnings
from collections import deque, namedtuple
from contextlib import nullcontext

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from vdvae.checkpoint import (check_can_write, load_file, recover_checkpoint_set,
                              restore_optimizer, restore_params, save_checkpoint_set)
from vdvae.contract import training_loss, with_distortion_name
from vdvae.data import DataError, set_up_data
from vdvae.distributed import (all_reduce_mean, broadcast_from_main, cleanup, exit_at_once,
                               is_collective_failure, leave_together, lost_rank_error,
                               match_gradient_layout, rank_processes, setup_distributed)
from vdvae.errors import ConfigError, UserError
from vdvae.ensemble import seed_members, train_ensemble
from vdvae.evaluation import evaluate, load_batch
from vdvae.hps import Hyperparams, add_vae_arguments, parse_args_and_update_hparams, read_hparams
from vdvae.images import write_images
from vdvae.logger import Logger, read_jsonl
from vdvae.models import build_model
from vdvae.preemption import preempted_status, stop_on_signals
from vdvae.train_helpers import (build_optimizer, copy_buffers, keep_freed_memory,
                                 training_step)

# A skipped first update is normal here (NaN batch, huge gradient); torch would warn about it.
warnings.filterwarnings('ignore', message='Detected call of `lr_scheduler.step')

# Keys that fix the architecture: a resumed run must not change them.
ARCHITECTURE_KEYS = ('dataset', 'image_size', 'image_channels', 'enc_blocks', 'dec_blocks', 'width',
                     'zdim', 'custom_width_str', 'bottleneck_multiple', 'no_bias_above',
                     'num_mixtures')
EARLY_LOG_STEPS = {1} | {2 ** e for e in range(3, 14)}
RUN_FILES = ('hparams.json', 'log.jsonl', 'latest-state.th', 'latest-model.th')
PROGRESS_KEYS = ('step', 'epoch', 'batch', 'consecutive_skips')


# Exit statuses besides 0 (finished): 2 bad input or a full disk (vdvae.errors), 3 training cannot
# make progress, 4 another rank was lost, 128 + N stopped by signal N (vdvae.preemption).
STOPPED, LOST_RANK = 3, 4
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class TrainingStopped(RuntimeError):
    """Training cannot make progress; the message says why and what to change."""


# ------------------------------------------------------------------------------------------------
# Run folder, data order, state

def check_run_dir(H, run_dir):
    """Whether the run folder can be used as asked, without writing to it (only an interrupted
    checkpoint save is finished first): a folder or nothing yet, somewhere writable; holding a
    run iff --resume, unless --overwrite replaces it."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ConfigError(f'save dir {run_dir!r} is a file, not a folder; choose another '
                          '--save_dir or --desc')
    check_can_write(os.path.join(run_dir, 'hparams.json'), f'save dir {run_dir!r}')
    if os.path.isdir(run_dir):
        recover_checkpoint_set(run_dir)
    has_run = any(os.path.exists(os.path.join(run_dir, f)) for f in RUN_FILES)
    if H.resume and not os.path.exists(os.path.join(run_dir, 'latest-state.th')):
        raise ConfigError(f'--resume: no checkpoint to resume in {run_dir!r} (no '
                          'latest-state.th); start without --resume')
    if has_run and not (H.resume or H.overwrite):
        raise ConfigError(f'save dir {run_dir!r} already holds a run; continue it with --resume, '
                          'start a new one with another --desc, or replace it with --overwrite')


def check_same_architecture(H, run_dir):
    """--resume: the flags must give the run's architecture (after the data set the geometry)."""
    try:
        saved = read_hparams(os.path.join(run_dir, 'hparams.json'))
    except (OSError, ValueError) as e:
        raise ConfigError(f'--resume: cannot read {run_dir}/hparams.json ({e}); the run folder is '
                          'damaged: start a new run with another --desc') from e
    for key in ARCHITECTURE_KEYS:
        if saved.get(key) != H[key]:
            raise ConfigError(f'--resume: the run in {run_dir!r} has {key}={saved.get(key)!r}, '
                              f'these flags give {H[key]!r}; use the same --hps and flags')


def start_run_dir(H, run_dir):
    """The first write of a run, once every input has been checked: the folder, emptied of an
    earlier run's files with --overwrite, and hparams.json (not on resume: the run's own stays)."""
    os.makedirs(run_dir, exist_ok=True)
    if H.overwrite and not H.resume:
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


def save_run(run, st, prefixes):
    """Write the checkpoint sets `prefixes` (e.g. 'latest', 'iter-N'), each all-or-nothing. Every
    rank takes part (its RNG states are gathered); the main rank writes."""
    rngs = gather_rng_states(run.dist.world_size)
    if not run.dist.is_main:
        return
    for prefix in prefixes:
        files = {
            f'{prefix}-model.th': st.vae.state_dict(),
            f'{prefix}-model-ema.th': st.ema_vae.state_dict(),
            f'{prefix}-opt.th': st.optimizer.state_dict(),
            f'{prefix}-state.th': dict(st.progress, scheduler=st.scheduler.state_dict(),
                                       scaler=st.scaler.state_dict(), rng=rngs),
        }
        if os.path.exists(os.path.join(run.run_dir, 'log.jsonl')):
            files[f'{prefix}-log.jsonl'] = os.path.join(run.run_dir, 'log.jsonl')
        save_checkpoint_set(run.run_dir, files)


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
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except TrainingStopped as e:
        print(f'stopped: {e}', file=sys.stderr)
        return STOPPED
    except OSError as e:
        if e.errno not in NO_SPACE:
            raise
        print(f"error: no space left on the device to write {e.filename or H.get('save_dir')!r}: "
              'free space (or choose another --save_dir) and start again; --resume continues '
              'from the last checkpoint, which is intact', file=sys.stderr)
        return 2
    except RuntimeError as e:
        if not is_collective_failure(e):
            raise
        print(f'stopped: {lost_rank_error(e, H.collective_timeout)}. The last checkpoint in '
              f'{os.path.join(H.save_dir, H.desc)} is intact: start every rank again with --resume',
              file=sys.stderr)
        exit_at_once(LOST_RANK)
    finally:
        cleanup()


def train(H):
    if H.ensemble != 1:
        return train_ensemble(seed_members(H, H.ensemble))
    d = setup_distributed(H.port, H.device, H.collective_timeout)
    if d.device.type == 'cpu':
        keep_freed_memory()                 # fewer page faults per CPU step (BENCHMARKS.md)
    run_dir = os.path.join(H.save_dir, H.desc)
    check_on_main_rank(d, check_run_dir, H, run_dir)
    H, data_train, data_eval, preprocess_fn = set_up_data(H)
    state, rngs = build_or_resume(H, d, run_dir)
    # every input has been read and checked: only now is anything written
    run = start_run(H, d, run_dir, data_train, data_eval, preprocess_fn)
    state = ready_to_train(H, run, state, rngs)
    if H.test_eval:
        stats = evaluate(H, state.ema_vae, data_eval, preprocess_fn, d.device, d.rank,
                         d.world_size, state.autocast)
        run.logprint(type='test_loss', **stats)
        return 0
    with stop_on_signals() as stop:
        status = train_loop(H, run, state, stop)
    leave_together()
    return status


# What a run works on (`Run`), and the training state that a checkpoint saves (`TrainState`).
Run = namedtuple('Run', 'dist run_dir data_train data_eval preprocess_fn logprint')
TrainState = namedtuple('TrainState', 'vae ema_vae model optimizer scheduler scaler autocast '
                                      'progress')


def check_on_main_rank(d, check, *args):
    """`check(*args)` on the main rank only; on a problem every rank stops, none waits forever."""
    problem = None
    if d.is_main:
        try:
            check(*args)
        except UserError as e:
            problem = str(e)
    problem = broadcast_from_main(problem)
    if problem:
        raise ConfigError(problem)


def build_models(H, device):
    """The model and its EMA copy: the same init on every rank (seeded), weights from
    --restore_path / --restore_ema_path, on `device` in the chosen memory format."""
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
    return vae.to(device, memory_format=memory_format), ema_vae.to(device, memory_format=memory_format)


def build_or_resume(H, d, run_dir):
    """Models, optimizer, scheduler, scaler and progress: fresh, or exactly as the run's latest
    checkpoint left them (--resume). Reads, writes nothing. -> (state, the run's RNG states)."""
    vae, ema_vae = build_models(H, d.device)
    optimizer, scheduler = build_optimizer(H, vae)
    scaler = torch.amp.GradScaler(d.device.type, enabled=H.amp == 'fp16')
    amp_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(H.amp)
    autocast = (lambda: torch.autocast(d.device.type, dtype=amp_dtype)) if amp_dtype else nullcontext
    if H.resume:
        check_same_architecture(H, run_dir)
        progress, rngs = resume(run_dir, vae, ema_vae, optimizer, scheduler, scaler)
    else:
        progress, rngs = start_progress(H, optimizer), None
    return TrainState(vae, ema_vae, vae, optimizer, scheduler, scaler, autocast, progress), rngs


def resume(run_dir, vae, ema_vae, optimizer, scheduler, scaler):
    """Load the run's latest checkpoint set into the training state; (progress, RNG states)."""
    state = load_file(os.path.join(run_dir, 'latest-state.th'))
    restore_params(vae, os.path.join(run_dir, 'latest-model.th'))
    restore_params(ema_vae, os.path.join(run_dir, 'latest-model-ema.th'))
    restore_optimizer(optimizer, os.path.join(run_dir, 'latest-opt.th'))
    try:
        scheduler.load_state_dict(state['scheduler'])
        scaler.load_state_dict(state['scaler'])
        return {k: state[k] for k in PROGRESS_KEYS}, state['rng']
    except (KeyError, TypeError) as e:
        raise ConfigError(f'--resume: {run_dir}/latest-state.th is not a training state of '
                          f'this project ({type(e).__name__}: {e}); start a new run') from e


def start_run(H, d, run_dir, data_train, data_eval, preprocess_fn):
    """The run folder (main rank), hparams.json and the log; on resume the log goes on from the
    checkpoint's copy of it."""
    if d.is_main:
        start_run_dir(H, run_dir)
    logprint = Logger(run_dir, enabled=d.is_main, echo=not H.quiet)
    H.update(mpi_size=d.world_size, rank=d.rank, local_rank=d.local_rank, logdir=run_dir)
    if d.is_main:
        with open(os.path.join(run_dir, 'hparams.json'), 'w') as f:
            json.dump(H, f, indent=1, sort_keys=True)
        for key in sorted(H):
            logprint(type='hparam', key=key, value=H[key])
        if H.resume and os.path.exists(os.path.join(run_dir, 'latest-log.jsonl')):
            shutil.copyfile(os.path.join(run_dir, 'latest-log.jsonl'), logprint.jsonl_path)
            logprint.jsonl.seek(0, os.SEEK_END)
    return Run(d, run_dir, data_train, data_eval, preprocess_fn, logprint)


def ready_to_train(H, run, st, rngs):
    """Say what runs; calibrate a fresh model (before the per-rank seeds, so that every rank
    measures the same, e.g. gamma = R_K); then the per-rank seeds (upstream gives all ranks one
    seed, so their posterior samples would repeat the same noise); DDP and compile."""
    d, logprint = run.dist, run.logprint
    logprint(f'parameters: {sum(p.numel() for p in st.vae.parameters()):,}; device {d.device}, '
             f'{d.world_size} process(es), batch {H.n_batch} per process, amp {H.amp}')
    if d.world_size > 1:
        logprint('ranks (pid@host): ' + ', '.join(f'{r}: {p}' for r, p in
                                                  enumerate(rank_processes())))
    if H.resume:
        logprint(f"resumed {run.run_dir} at step {st.progress['step']}")
    if st.progress['step'] == 0 and not H.test_eval:
        st.vae.calibrate(run.data_eval, run.preprocess_fn, d.device, logprint)
        with torch.no_grad():
            for ema_buffer, buffer in zip(st.ema_vae.buffers(), st.vae.buffers()):
                ema_buffer.copy_(buffer)
    if rngs is not None and len(rngs) == d.world_size:
        set_rng_state(rngs[d.rank])
    else:
        torch.manual_seed(H.seed + d.rank)
    return st._replace(model=wrap_for_training(H, d, st.vae))


def start_progress(H, optimizer):
    """A fresh run's progress; upstream's --restore_optimizer_path / --restore_log_path."""
    progress = dict.fromkeys(PROGRESS_KEYS, 0)
    if H.restore_optimizer_path:
        restore_optimizer(optimizer, H.restore_optimizer_path)
    if H.restore_log_path:
        if not os.path.isfile(H.restore_log_path):
            raise ConfigError(f'--restore_log_path {H.restore_log_path!r} is not a file; pass the '
                              'log.jsonl of the run to continue')
        steps = [r for r in read_jsonl(H.restore_log_path) if r.get('type') == 'train_loss']
        if steps:
            progress.update(epoch=max(r['epoch'] for r in steps), step=max(r['step'] for r in steps))
    return progress


def wrap_for_training(H, d, vae):
    """What the loop calls: the model, under DDP on several processes, compiled with --compile."""
    model = vae
    if d.world_size > 1:
        match_gradient_layout(vae)          # gradients come out as DDP's buckets lay them out
        model = DistributedDataParallel(
            vae, device_ids=[d.local_rank] if d.device.type == 'cuda' else None,
            gradient_as_bucket_view=True, find_unused_parameters=vae.has_unused_parameters)
    if H.compile:
        model = torch.compile(model)
    return model


# ------------------------------------------------------------------------------------------------
# The loop

def finished(H, progress):
    return progress['epoch'] >= H.num_epochs or (
        H.num_iters is not None and progress['step'] >= H.num_iters)


def train_loop(H, run, st, stop):
    """Train until --num_iters / --num_epochs, or until a stop signal (`stop`, a
    vdvae.preemption.StopRequest) is seen between steps. Returns the exit status."""
    d, progress = run.dist, st.progress
    viz_items = load_batch(run.data_eval, range(min(H.num_images_visualize, len(run.data_eval))))
    viz_in, _ = run.preprocess_fn(viz_items, d.device)
    window = deque(maxlen=H.iters_per_print)
    start_step = progress['step']
    bar = tqdm(total=H.num_iters, initial=start_step,
               disable=not (d.is_main and sys.stdout.isatty()) or H.quiet)
    while not finished(H, progress):
        batches = epoch_batches(len(run.data_train), H.n_batch, H.seed, progress['epoch'], d.rank,
                                d.world_size)
        for indices in batches[progress['batch']:]:
            if finished(H, progress):
                break
            x_in, x_target = run.preprocess_fn(load_training_batch(run, indices, progress),
                                               d.device)
            stats = training_step(H, x_in, x_target, st.model, st.ema_vae, st.optimizer,
                                  scaler=st.scaler, autocast=st.autocast,
                                  reduce_stats=lambda s: all_reduce_mean(s, d.device))
            st.scheduler.step()
            if not stats['skipped_updates']:
                st.vae.after_update(stats)          # e.g. the Lagrange multiplier's step
                copy_buffers(st.vae, st.ema_vae)    # so that the EMA holds the multiplier it made
            window.append(stats)
            progress.update(step=progress['step'] + 1, batch=progress['batch'] + 1,
                            consecutive_skips=(progress['consecutive_skips'] + 1
                                               if stats['skipped_updates'] else 0))
            bar.update(1)
            after_step(H, run, st, stats, window, progress['step'] - start_step,
                       (viz_items, viz_in))
            # between steps, where the state is what a periodic save holds: every rank agrees
            signum = not finished(H, progress) and stop.agreed(d.device)
            if signum:
                bar.close()
                return preempt(run, st, signum)
        else:                                       # the epoch ran to its end
            progress.update(epoch=progress['epoch'] + 1, batch=0)
            if (progress['epoch'] - 1) % H.epochs_per_eval == 0:
                stats = evaluate(H, st.ema_vae, run.data_eval, run.preprocess_fn, d.device, d.rank,
                                 d.world_size, st.autocast)
                run.logprint(type='eval_loss', epoch=progress['epoch'] - 1, step=progress['step'],
                             **stats)
    save_run(run, st, ['latest'])
    run.logprint(f"finished at step {progress['step']}; checkpoints in {run.run_dir}")
    bar.close()
    run.logprint.close()
    return 0


def load_training_batch(run, indices, progress):
    """The next batch. The data were checked when the run started; a file removed or damaged
    since then is one error naming it, and the last checkpoint is intact."""
    try:
        return load_batch(run.data_train, indices)
    except DataError as e:
        raise type(e)(f"the training data changed during the run (step {progress['step'] + 1}): "
                      f'{e}. The last checkpoint in {run.run_dir} is intact: restore the data, '
                      'then continue with --resume') from None


def preempt(run, st, signum):
    """After a stop signal: save the latest set (what a periodic save writes, so that --resume
    continues exactly), and only then let any rank exit: a launcher such as mpiexec ends the
    remaining ranks as soon as one exits with a non-zero status. Returns the exit status."""
    save_run(run, st, ['latest'])
    broadcast_from_main(None)                   # a barrier: rank 0 has written the set
    line = (f"pre-empted by {signal.Signals(signum).name} at step {st.progress['step']}: saved "
            f'the latest checkpoint in {run.run_dir}; continue with --resume')
    run.logprint(line)
    if run.dist.is_main and not run.logprint.echo:
        print(line, file=sys.stderr)            # shown under --quiet too: it is how the run ended
    run.logprint.close()
    return preempted_status(signum)


def after_step(H, run, st, stats, window, steps_here, viz):
    """The log record, the stall check, the sample grid and the checkpoints due after a step
    (`steps_here`: steps since this process started)."""
    d, step = run.dist, st.progress['step']
    if step % H.iters_per_print == 0 or steps_here in EARLY_LOG_STEPS:
        record = with_distortion_name(accumulate_stats(list(window)), st.vae.distortion_kind)
        run.logprint(type='train_loss', lr=st.scheduler.get_last_lr()[0],
                     epoch=st.progress['epoch'], step=step, **record)
    if st.progress['consecutive_skips'] >= H.max_consecutive_skips:
        raise TrainingStopped(
            f"{st.progress['consecutive_skips']} updates in a row were skipped (last grad norm "
            f"{stats['grad_norm']:.1f}, skip_threshold {H.skip_threshold}, NaN loss: "
            f"{bool(stats['distortion_nans'] or stats['rate_nans'])}); the model no longer "
            'changes. Raise --skip_threshold above the logged grad norms (or -1 to never '
            'skip), lower --lr, or restart from an earlier iter-N checkpoint')
    if d.is_main and (step % H.iters_per_images == 0 or (
            steps_here in EARLY_LOG_STEPS and H.dataset != 'ffhq_1024')):
        # on a fork of the RNG: pictures (also those after a restart) must not change training
        with torch.random.fork_rng(devices=[d.device] if d.device.type == 'cuda' else []):
            write_images(H, st.ema_vae, *viz, os.path.join(run.run_dir, f'samples-{step}.png'))
    save_latest = step % H.iters_per_save == 0 and math.isfinite(training_loss(stats))
    prefixes = ['latest'] * save_latest + [f'iter-{step}'] * (step % H.iters_per_ckpt == 0)
    if prefixes:
        save_run(run, st, prefixes)


if __name__ == '__main__':
    sys.exit(main())
