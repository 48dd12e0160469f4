"""FAKE of upstream openai/vdvae's train_helpers.py, written for progcode's tests from
../shared/spec/vdvae_upstream.md; not upstream code.

Hyperparameter/MPI/NCCL setup, model and optimizer construction, EMA, checkpoint save and restore
(spec §6.1, §6.2, §6.5). Hard dependencies kept as upstream: mpi4py, NCCL process group (always),
`torch.cuda.set_device`, `.cuda()` models, DistributedDataParallel and apex FusedAdam.
"""
import argparse
import json
import os
import socket
import subprocess

import numpy as np
import torch
import torch.distributed as dist
from apex.optimizers import FusedAdam as AdamW
from mpi4py import MPI
from torch.nn.parallel.distributed import DistributedDataParallel

from data import mkdir_p
from hps import Hyperparams, parse_args_and_update_hparams, add_vae_arguments
from utils import logger, local_mpi_rank, mpi_size, mpi_rank
from vae import VAE


def update_ema(vae, ema_vae, ema_rate):
    for p1, p2 in zip(vae.parameters(), ema_vae.parameters()):
        p2.data.mul_(ema_rate)
        p2.data.add_(p1.data * (1 - ema_rate))


def save_model(path, vae, ema_vae, optimizer, H):
    torch.save(vae.state_dict(), f'{path}-model.th')
    torch.save(ema_vae.state_dict(), f'{path}-model-ema.th')
    torch.save(optimizer.state_dict(), f'{path}-opt.th')
    from_log = os.path.join(H.save_dir, 'log.jsonl')
    to_log = f'{path}-log.jsonl'
    subprocess.check_output(['cp', from_log, to_log])     # not atomic, as upstream


def accumulate_stats(stats, frequency):
    """Summary of the last `frequency` training stats (spec §6.4)."""
    window = stats[-frequency:]
    z = {}
    for k in stats[-1]:
        vals = [s[k] for s in window]
        finite = [v for v in vals if np.isfinite(v)]
        if k.endswith('_nans') or k == 'skipped_updates':
            z[k] = float(np.sum(vals))
        elif k == 'grad_norm':
            z[k] = float(np.max(finite)) if finite else 0.0     # 0.0 if none finite: the fake's choice
        elif k == 'elbo':
            z[k] = float(np.mean(vals))
            z['elbo_filtered'] = float(np.mean(finite)) if finite else 0.0
        elif k == 'iter_time':
            z[k] = stats[-1][k] if len(stats) < frequency else float(np.mean(vals))
        else:
            z[k] = float(np.mean(vals))
    return z


def linear_warmup(warmup_iters):
    def f(iteration):
        return 1.0 if iteration > warmup_iters else iteration / warmup_iters   # 0 -> ZeroDivisionError
    return f


def setup_mpi(H):
    H.mpi_size = mpi_size()
    H.local_rank = local_mpi_rank()
    H.rank = mpi_rank()
    os.environ['RANK'] = str(H.rank)
    os.environ['WORLD_SIZE'] = str(H.mpi_size)
    os.environ['MASTER_PORT'] = str(H.port)
    os.environ['MASTER_ADDR'] = MPI.COMM_WORLD.bcast(socket.gethostname(), root=0)
    torch.cuda.set_device(H.local_rank)
    dist.init_process_group(backend='nccl', init_method='env://')    # even for one process


def setup_save_dirs(H):
    H.save_dir = os.path.join(H.save_dir, H.desc)
    mkdir_p(H.save_dir)
    H.logdir = os.path.join(H.save_dir, 'log')


def set_up_hyperparams(s=None):
    H = Hyperparams()
    parser = argparse.ArgumentParser()
    parser = add_vae_arguments(parser)
    parse_args_and_update_hparams(H, parser, s=s)
    setup_mpi(H)
    setup_save_dirs(H)
    logprint = logger(H.logdir)
    for k in sorted(H):
        logprint(type='hparam', key=k, value=H[k])
    np.random.seed(H.seed)
    torch.manual_seed(H.seed)
    torch.cuda.manual_seed(H.seed)
    logprint('training model', H.desc, 'on', H.dataset)
    return H, logprint


def restore_params(model, path, local_rank, mpi_size, map_ddp=True, map_cpu=False):
    # upstream also fetches gs:// paths with gsutil (first rank per node first); not in the fake.
    # weights_only=True: torch's default since 2.6, which upstream's plain torch.load relies on
    state_dict = torch.load(path, map_location='cpu' if map_cpu else None, weights_only=True)
    if map_ddp:
        state_dict = {(k[len('module.'):] if k.startswith('module.') else k): v
                      for k, v in state_dict.items()}
    model.load_state_dict(state_dict)


def restore_log(path, local_rank, mpi_size):
    """(cur_eval_loss, iterate, starting_epoch) from a log.jsonl (spec §6.5)."""
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    train = [r for r in records if r.get('type') == 'train_loss']
    evals = [r for r in records if r.get('type') == 'eval_loss']
    cur_eval_loss = min((r['elbo'] for r in evals), default=float('inf'))
    return cur_eval_loss, max(r['step'] for r in train), max(r['epoch'] for r in train)


def load_vaes(H, logprint):
    vae = VAE(H)
    if H.restore_path:
        logprint(f'Restoring vae from {H.restore_path}')
        restore_params(vae, H.restore_path, H.local_rank, H.mpi_size, map_cpu=True)
    ema_vae = VAE(H)
    if H.restore_ema_path:
        logprint(f'Restoring ema vae from {H.restore_ema_path}')
        restore_params(ema_vae, H.restore_ema_path, H.local_rank, H.mpi_size, map_cpu=True)
    else:
        ema_vae.load_state_dict(vae.state_dict())
    ema_vae.requires_grad_(False)
    vae = vae.cuda(H.local_rank)
    ema_vae = ema_vae.cuda(H.local_rank)
    vae = DistributedDataParallel(vae, device_ids=[H.local_rank], output_device=H.local_rank)
    total_params = sum(p.numel() for p in vae.parameters())
    logprint(total_params=total_params, readable=f'{total_params:,}')
    return vae, ema_vae


def load_opt(H, vae, logprint):
    optimizer = AdamW(vae.parameters(), weight_decay=H.wd, lr=H.lr,
                      betas=(H.adam_beta1, H.adam_beta2))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=linear_warmup(H.warmup_iters))
    if H.restore_optimizer_path:
        state = torch.load(H.restore_optimizer_path, map_location='cpu', weights_only=True)
        optimizer.load_state_dict(state)
    if H.restore_log_path:
        cur_eval_loss, iterate, starting_epoch = restore_log(H.restore_log_path, H.local_rank,
                                                             H.mpi_size)
    else:
        cur_eval_loss, iterate, starting_epoch = float('inf'), 0, 0
    logprint('starting at epoch', starting_epoch, 'iterate', iterate, 'eval loss', cur_eval_loss)
    return optimizer, scheduler, cur_eval_loss, iterate, starting_epoch
