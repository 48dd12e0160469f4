"""Model-steps per second of K models trained as one ensemble against K separate processes.

    python bench/bench_ensemble.py                                   # the toy's kinds, 2 cores
    python bench/bench_ensemble.py --kinds vdvae --hps cifar10 --n_batch 4 --ks 1,2,3
    python bench/bench_ensemble.py --device cuda --ks 1,2,4,8 --json out/ensemble.json

For each kind of model (`KINDS`: the toy's VDVAE, stage 1, progressive stage 2, conventional,
masked probe) and each K, two ways to train K models on the machine's cores:
  ensemble   one process, all cores, K members as one batched step (`vdvae.ensemble`: the
             stacked forward and backward, then each member's clip, AdamW and EMA);
  separate   K processes at once, each training one model the usual way
             (`train_helpers.training_step`) with cores / K threads (at least 1), as the
             experiments' `--jobs K` does.
The figure is model-steps per second: K / (the ensemble's seconds per step), or the sum over the
K processes of 1 / (its seconds per step). Each worker is a fresh process that builds its models
(seeds 0..K-1), takes `--warmup` untimed and `--steps` timed steps on fixed random batches, and
reports its median; both ways of each K alternate over `--runs` runs, and the summary is the
median over runs, with the ratio ensemble / separate. On CUDA `separate` shares the one GPU.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

# kind -> (preset suffix, flags; '{stage1}' / '{vdvae}' are run folders the driver makes first)
KINDS = {
    'vdvae': ('', []),
    'stage1': ('_stage1', []),
    'stage2': ('_stage2', ['--stage1_path', '{stage1}']),
    'conventional': ('_conventional', []),
    'masked': ('_masked', ['--encoder_path', '{vdvae}/latest-model-ema.th']),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--hps', default='mnist16', help='the dataset preset the kinds build on')
    p.add_argument('--kinds', default=','.join(KINDS), help=f'some of {", ".join(KINDS)}')
    p.add_argument('--ks', default='1,2,3,4,6', help='ensemble sizes')
    p.add_argument('--n_batch', type=int, default=None, help='batch per model (default: preset)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--cores', type=int, default=os.cpu_count(), help='threads to share out')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--steps', type=int, default=6)
    p.add_argument('--runs', type=int, default=3)
    p.add_argument('--json', default=None, help='write the results here')
    p.add_argument('--worker', nargs=4, metavar=('KIND', 'K', 'THREADS', 'FOLDERS'),
                   help=argparse.SUPPRESS)
    return p.parse_args(argv)


def flags_of(args, kind, folders):
    suffix, extra = KINDS[kind]
    flags = ['--hps', args.hps + suffix, '--skip_threshold', '-1', '--device', args.device,
             *[f.format(**folders) for f in extra]]
    return flags + (['--n_batch', str(args.n_batch)] if args.n_batch else [])


def hparams(flags):
    from vdvae.hps import Hyperparams, add_vae_arguments, parse_args_and_update_hparams, \
        with_geometry
    H = Hyperparams()
    parse_args_and_update_hparams(H, add_vae_arguments(argparse.ArgumentParser()), flags)
    return with_geometry(H)


# ------------------------------------------------------------------------------------------------
# One measurement (in a worker process)

def worker(args):
    """Seconds per step of K models trained one way: K > 1 as an ensemble, K = 1 alone."""
    from vdvae.ensemble import Ensemble
    from vdvae.models import build_model
    from vdvae.train_helpers import (apply_update, build_optimizer, keep_freed_memory,
                                     training_step)
    kind, k, threads, folders = args.worker[0], int(args.worker[1]), int(args.worker[2]), \
        json.loads(args.worker[3])
    torch.set_num_threads(threads)
    device = torch.device(args.device)
    if device.type == 'cpu':
        keep_freed_memory()
    H = hparams(flags_of(args, kind, folders))
    models, emas, optimizers = [], [], []
    for seed in range(k):
        torch.manual_seed(seed)
        model, ema = build_model(H).to(device), build_model(H).to(device)
        ema.load_state_dict(model.state_dict())
        ema.requires_grad_(False)
        models.append(model)
        emas.append(ema)
        optimizers.append(build_optimizer(H, model)[0])
    gen = torch.Generator().manual_seed(1)
    shape = (k, H.n_batch, H.image_size, H.image_size, H.image_channels)
    xs_in = torch.randn(shape, generator=gen).to(device)
    xs_target = (torch.randint(0, 256, shape, generator=gen).float() / 127.5 - 1.0).to(device)
    generators = [torch.Generator(device).manual_seed(seed) for seed in range(k)]
    ensemble = Ensemble(models, generators)

    def step():
        if k == 1:
            training_step(H, xs_in[0], xs_target[0], models[0], emas[0], optimizers[0])
            return
        t0 = time.time()
        for model in models:
            model.zero_grad(set_to_none=True)
        stats = ensemble(xs_in, xs_target)
        (stats['loss'] if 'loss' in stats else stats['elbo']).sum().backward()
        for i in range(k):
            apply_update(H, {n: v[i] for n, v in stats.items()}, models[i], emas[i],
                         optimizers[i], t0=t0)

    times = []
    for i in range(args.warmup + args.steps):
        if device.type == 'cuda':
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    print(json.dumps(dict(step_s=statistics.median(times))))


# ------------------------------------------------------------------------------------------------
# The driver

def spawn(argv, kind, k, threads, folders, processes):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')])))
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv,
           '--worker', kind, str(k), str(threads), json.dumps(folders)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(processes)]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f'worker {kind} K={k} failed:\n{stderr[-3000:]}')
        out.append(json.loads(stdout.strip().splitlines()[-1])['step_s'])
    return out


def make_folders(args, root, kinds):
    """One-step runs that the stage-2 and masked kinds build on (those `kinds` need)."""
    from vdvae.train import main as train
    needs = {'stage2': ('stage1', args.hps + '_stage1'), 'masked': ('vdvae', args.hps)}
    folders = {}
    for name, preset in (needs[kind] for kind in kinds if kind in needs):
        flags = ['--hps', preset, '--num_iters', '1', '--quiet', '--save_dir', root, '--desc',
                 name, '--iters_per_images', '1000000', '--device', args.device]
        if train(flags + (['--n_batch', str(args.n_batch)] if args.n_batch else [])) != 0:
            raise SystemExit(f'could not train the {name} run the kinds build on')
        folders[name] = os.path.join(root, name)
    return folders


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    from progcode_ext.experiments.machine import machine_info
    kinds, ks = args.kinds.split(','), [int(k) for k in args.ks.split(',')]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise SystemExit(f'--kinds: unknown {", ".join(sorted(unknown))}; choose from '
                         f'{", ".join(KINDS)}')
    results = dict(machine=machine_info(args.cores), hps=args.hps, n_batch=args.n_batch, kinds={})
    with tempfile.TemporaryDirectory() as root:
        folders = make_folders(args, root, kinds)
        for kind in kinds:
            rows = results['kinds'][kind] = {}
            for k in ks:
                runs = []
                for _ in range(args.runs):
                    together = spawn(argv, kind, k, args.cores, folders, 1)[0]
                    apart = spawn(argv, kind, 1, max(1, args.cores // k), folders, k)
                    runs.append(dict(ensemble=k / together, separate=sum(1 / s for s in apart),
                                     ensemble_step_s=together, separate_step_s=apart))
                ens = statistics.median(r['ensemble'] for r in runs)
                sep = statistics.median(r['separate'] for r in runs)
                rows[k] = dict(ensemble=ens, separate=sep, ratio=ens / sep, runs=runs)
                print(f'{kind:>12} K={k}: ensemble {ens:6.2f}, separate {sep:6.2f} model-steps/s '
                      f'(ensemble / separate {ens / sep:.2f})', flush=True)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
