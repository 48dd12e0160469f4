"""Seconds per DDP training step with and without `vdvae.distributed.match_gradient_layout`.

    torchrun --nproc_per_node 2 bench/bench_ddp.py --json bench/results/cpu_mnist5k_ddp_layout.json

Every rank builds two identical models (seed 0), `plain` and `matched` (match_gradient_layout
before DDP), each wrapped as train.py wraps it (DistributedDataParallel, gradients as bucket views;
gloo on the CPU) with its own EMA model and optimizer, and trains both on the same mnist5k batches
(--n_batch per process) with the same seeds: they compute the same numbers, and the benchmark
stops if their losses differ at all. A step is `vdvae.train_helpers.training_step` (forward,
backward with the all-reduce, clipping, AdamW, EMA) as train.py calls it. After --warmup steps of
each, --reps rounds alternate --steps timed steps of one and then the other (the order swapped
every round), in one session, so that load from other processes hits both alike. A round's figure
is the slower rank's mean step time (wall clock; also its process CPU time, which another
process's load disturbs less); the summary is the median over rounds and the ratio matched / plain.
"""
import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from progcode_ext.experiments.machine import machine_info  # noqa: E402
from vdvae.data import set_up_data  # noqa: E402
from vdvae.distributed import (all_reduce_mean, cleanup, match_gradient_layout,  # noqa: E402
                               setup_distributed)
from vdvae.hps import get_hparams  # noqa: E402
from vdvae.train_helpers import build_optimizer, keep_freed_memory, training_step  # noqa: E402
from vdvae.vae import VAE  # noqa: E402

CONFIGS = ('plain', 'matched')
STRIDE_WARNING = 'Grad strides do not match bucket view strides'


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--hps', default='mnist5k')
    p.add_argument('--n_batch', type=int, default=32, help='images per process')
    p.add_argument('--warmup', type=int, default=3, help='untimed steps of each model first')
    p.add_argument('--steps', type=int, default=10, help='timed steps per model and round')
    p.add_argument('--reps', type=int, default=6, help='rounds')
    p.add_argument('--channels_last', action='store_true')
    p.add_argument('--json', help='write the figures here (rank 0)')
    return p.parse_args()


class Trainer:
    """One model as train.py trains it, counting the steps it has taken."""

    def __init__(self, H, d, match):
        torch.manual_seed(0)
        memory_format = torch.channels_last if H.channels_last else torch.contiguous_format
        self.vae = VAE(H).to(d.device, memory_format=memory_format)
        self.ema = VAE(H).to(d.device, memory_format=memory_format)
        self.ema.load_state_dict(self.vae.state_dict())
        self.ema.requires_grad_(False)
        self.restrided = match_gradient_layout(self.vae) if match else []
        self.model = DistributedDataParallel(self.vae, gradient_as_bucket_view=True)
        self.optimizer, self.scheduler = build_optimizer(H, self.vae)
        self.H, self.d, self.step, self.losses, self.stride_warnings = H, d, 0, [], 0

    def train(self, batches, n):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            for _ in range(n):
                x_in, x_target = batches(self.step)
                torch.manual_seed(1000 * self.step + self.d.rank)    # the same draws for both
                stats = training_step(self.H, x_in, x_target, self.model, self.ema,
                                      self.optimizer,
                                      reduce_stats=lambda s: all_reduce_mean(s, self.d.device))
                self.scheduler.step()
                self.losses.append(stats['elbo'])
                self.step += 1
        self.stride_warnings += sum(STRIDE_WARNING in str(w.message) for w in caught)


def batch_source(H, d, data_train, preprocess_fn):
    """Step -> this rank's (x_in, x_target): consecutive slices of the training set, cycling."""
    def batches(step):
        start = ((step * d.world_size + d.rank) * H.n_batch) % (len(data_train) - H.n_batch)
        items = data_train[torch.arange(start, start + H.n_batch)]
        return preprocess_fn(items, d.device)
    return batches


def timed(trainer, batches, n):
    """The slower rank's mean wall and CPU seconds per step over n steps."""
    dist.barrier()
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.train(batches, n)
    elapsed = torch.tensor([time.perf_counter() - t0, time.process_time() - c0],
                           dtype=torch.float64)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    return (elapsed / n).tolist()


def main():
    args = parse_args()
    d = setup_distributed()
    if d.world_size < 2:
        sys.exit('run under torchrun --nproc_per_node 2 (DDP needs several processes)')
    if d.device.type == 'cpu':
        keep_freed_memory()                 # as train.py
    H = get_hparams(args.hps, n_batch=args.n_batch, channels_last=args.channels_last)
    H, data_train, _, preprocess_fn = set_up_data(H)
    batches = batch_source(H, d, data_train, preprocess_fn)
    load_before = os.getloadavg()
    trainers = {name: Trainer(H, d, name == 'matched') for name in CONFIGS}
    for trainer in trainers.values():
        trainer.train(batches, args.warmup)
    rounds = {name: [] for name in CONFIGS}
    cpu = {name: [] for name in CONFIGS}
    for rep in range(args.reps):
        for name in (CONFIGS if rep % 2 == 0 else CONFIGS[::-1]):
            wall_s, cpu_s = timed(trainers[name], batches, args.steps)
            rounds[name].append(wall_s)
            cpu[name].append(cpu_s)
    plain, matched = trainers['plain'], trainers['matched']
    if plain.losses != matched.losses:
        sys.exit(f'rank {d.rank}: the two models computed different losses')
    if d.is_main:
        report(args, H, trainers, rounds, cpu, load_before)
    cleanup()


def report(args, H, trainers, rounds, cpu, load_before):
    medians = {name: statistics.median(r) for name, r in rounds.items()}
    cpu_medians = {name: statistics.median(r) for name, r in cpu.items()}
    ratio = medians['matched'] / medians['plain']
    cpu_ratio = cpu_medians['matched'] / cpu_medians['plain']
    for name in CONFIGS:
        t = trainers[name]
        print(f'{name:8s} median {medians[name]:.4f} s/step (CPU {cpu_medians[name]:.4f})  rounds '
              f'{" ".join(f"{s:.4f}" for s in rounds[name])}  re-strided {len(t.restrided)}  '
              f'stride warnings {t.stride_warnings}')
    print(f'matched / plain: {ratio:.3f} wall, {cpu_ratio:.3f} CPU  (losses identical over '
          f'{len(trainers["plain"].losses)} steps)')
    if args.json:
        out = dict(
            machine=machine_info(torch.get_num_threads()), world_size=2, backend='gloo',
            command='torchrun --nproc_per_node 2 bench/bench_ddp.py ' + ' '.join(sys.argv[1:]),
            hps=args.hps, n_batch=H.n_batch, channels_last=H.channels_last, warmup=args.warmup,
            steps=args.steps, reps=args.reps, load_average_before=load_before,
            load_average_after=os.getloadavg(), ratio_matched_over_plain=ratio,
            cpu_ratio_matched_over_plain=cpu_ratio, losses_identical=True,
            configs={name: dict(step_s=medians[name], round_step_s=rounds[name],
                                step_s_min=min(rounds[name]), cpu_step_s=cpu_medians[name],
                                round_cpu_step_s=cpu[name],
                                restrided=len(trainers[name].restrided),
                                stride_warnings=trainers[name].stride_warnings)
                     for name in CONFIGS})
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + '\n')


if __name__ == '__main__':
    main()
