"""Seconds per VDVAE training step and eval forward, and peak memory, on CPU or CUDA.

    python bench/bench.py --hps cifar10 --n_batch 4 --threads 2            # CPU, fp32
    python bench/bench.py --device cuda --n_batch 16 --amp bf16 --json out/bf16.json

Each run is a fresh worker process (a fresh model, and a clean peak-RSS counter) that builds the
model with seed 0, takes `--warmup` untimed and `--steps` timed training steps on one fixed random
batch (`vdvae.train_helpers.training_step`: forward, backward, grad clip, AdamW, EMA), then times
`--steps` no-grad forwards of the EMA model. Every configuration in `--configs` gets `--runs`
runs, interleaved (baseline 1, ours 1, baseline 2, ...) so that load from other processes hits
them alike; the summary is the median of the per-run medians, and ratios to `baseline` (or, if
it did not run, to the first configuration). Peak memory: the worker's peak RSS on CPU, torch's
peak GPU allocation on CUDA.

Configurations (see CONFIGS):
  baseline  upstream's way: NCHW tensors, torch's default (foreach) AdamW, a per-parameter EMA
            loop, glibc's default allocator settings;
  ours      the project's way with the speed-ups: `vdvae.train_helpers.build_optimizer` (fused
            AdamW), its foreach EMA, `keep_freed_memory()` on CPU, and the model (and EMA model)
            in channels-last memory format (`model.to(memory_format=torch.channels_last)`);
  ours-*    `ours` less one of these (ablations), or `ours-compile` with torch.compile. See
            BENCHMARKS.md.

`--layouts 1x2,2x1` measures throughput instead: for each layout PROCSxTHREADS, PROCS workers of
`--configs`' first configuration train at once, THREADS threads each (as the experiments' `--jobs`
runs independent models side by side); the figure is steps per second of all of them together,
PROCS / (their median seconds per step), with ratios to the first layout. Layouts interleave over
`--runs` like configurations.

`--amp bf16` (or `fp16`, with train.py's gradient scaler) runs the model's forward under
`torch.autocast(dtype=torch.bfloat16)` (or float16); the model
computes the DMoL likelihood and the KL terms in float32 either way (vdvae/vae.py), and the
backward, clipping, AdamW and EMA stay float32. The losses of the first and the last step of every
run are recorded so that configurations can be compared for numerics (same seeds, batch and
learning-rate schedule; the first step's loss depends on the model only).
"""
import argparse
import ast
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from progcode_ext.experiments.machine import machine_info

REPO = Path(__file__).resolve().parents[1]

# name -> switches. ema: 'foreach' (vdvae.train_helpers.update_ema) or 'loop' (per parameter);
# optimizer: 'project' (vdvae.train_helpers.build_optimizer: fused AdamW) or 'foreach' (torch's
# default AdamW); keep_memory: vdvae.train_helpers.keep_freed_memory() (glibc, CPU only);
# channels_last: model, EMA model and hence activations in torch.channels_last memory format;
# compile: the training step runs torch.compile(model).
_OURS = dict(ema='foreach', optimizer='project', keep_memory=True, channels_last=True,
             compile=False)
CONFIGS = {
    'baseline': dict(ema='loop', optimizer='foreach', keep_memory=False, channels_last=False,
                     compile=False),
    'ours': _OURS,
    # ablations: `ours` less one speed-up
    'ours-nchw': {**_OURS, 'channels_last': False},
    'ours-no-keep-memory': {**_OURS, 'keep_memory': False},
    'ours-foreach-adamw': {**_OURS, 'optimizer': 'foreach'},
    # `ours` plus torch.compile of the model (train.py --compile); compilation happens in the
    # untimed warm-up steps (use --warmup 3 or more), and takes minutes on CPU
    'ours-compile': {**_OURS, 'compile': True},
}

QUICK_OVERRIDES = dict(width=16, zdim=4, num_mixtures=2, enc_blocks='8x1,8d2,4x1,4d4,1x1',
                       dec_blocks='1x1,4m1,4x1,8m4,8x1', image_size=8, image_channels=3)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--hps', default='cifar10', help='preset(s), comma-separated (default: cifar10)')
    p.add_argument('--n_batch', type=int, default=4, help='batch size (default: 4)')
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                   help='hyperparameter override passed to get_hparams (repeatable)')
    p.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    p.add_argument('--amp', choices=['fp32', 'tf32', 'bf16', 'fp16'], default='fp32',
                   help='fp32 (on CUDA with TF32 off), tf32 (CUDA only: fp32 with TF32 matmuls '
                        'and convolutions), bf16 or fp16 (autocast around the forward; fp16 with a '
                        'gradient scaler) (default: fp32)')
    p.add_argument('--threads', type=int, default=None,
                   help='torch.set_num_threads on CPU (default: 2; ignored on CUDA)')
    p.add_argument('--steps', type=int, default=10, help='timed steps per run (default: 10)')
    p.add_argument('--warmup', type=int, default=2, help='untimed steps per run (default: 2)')
    p.add_argument('--runs', type=int, default=3, help='runs per configuration (default: 3)')
    p.add_argument('--configs', default='baseline,ours',
                   help=f"comma-separated, from: {', '.join(CONFIGS)} (default: baseline,ours)")
    p.add_argument('--quick', action='store_true',
                   help='a tiny 8x8 model, 1 warm-up + 2 timed steps, 1 run (for tests)')
    p.add_argument('--layouts', default=None, metavar='PxT,...',
                   help='throughput of P processes with T threads each, side by side, e.g. 1x2,2x1 '
                        '(CPU; the first of --configs)')
    p.add_argument('--json', default=None, metavar='PATH', help='write the results here')
    p.add_argument('--worker', default=None, help=argparse.SUPPRESS)   # internal: one run
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.runs = 2, 1, 1
    if args.amp == 'tf32' and args.device != 'cuda':
        p.error('--amp tf32 is for --device cuda')
    if args.threads is None:
        args.threads = 2 if args.device == 'cpu' else 0
    for name in args.configs.split(','):
        if name not in CONFIGS:
            p.error(f"unknown config {name!r}; choose from {', '.join(CONFIGS)}")
    if args.steps < 1 or args.runs < 1 or args.warmup < 0:
        p.error('need --steps >= 1, --runs >= 1 and --warmup >= 0')
    if args.layouts is not None:
        try:
            args.layouts = [tuple(int(n) for n in layout.split('x')) for layout in
                            args.layouts.split(',')]
        except ValueError:
            p.error(f'--layouts {args.layouts!r}: expected PxT,... e.g. 1x2,2x1')
        if any(len(layout) != 2 or min(layout) < 1 for layout in args.layouts):
            p.error('--layouts: every PxT needs P >= 1 and T >= 1')
        if args.device != 'cpu':
            p.error('--layouts is for --device cpu')
    return args


def overrides(args):
    """get_hparams keyword arguments: --quick's tiny model, then --set KEY=VALUE (Python
    literals where they parse, strings otherwise), then --n_batch."""
    out = dict(QUICK_OVERRIDES) if args.quick else {}
    for item in args.set:
        key, sep, value = item.partition('=')
        if not sep:
            raise SystemExit(f'--set wants KEY=VALUE, got {item!r}')
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.strip()] = value
    out['n_batch'] = args.n_batch
    return out


# ------------------------------------------------------------------------------------------------
# One run (in a worker process)

def update_ema_per_parameter(model, ema_model, ema_rate):
    """The baseline's EMA: one multiply and one add per parameter, in a Python loop."""
    with torch.no_grad():
        for p, e in zip(model.parameters(), ema_model.parameters()):
            e.mul_(ema_rate)
            e.add_(p.detach() * (1 - ema_rate))


def _sync(device):
    if device == 'cuda':
        torch.cuda.synchronize()


def _peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024       # Linux: KiB


def run_once(args, config):
    """Time one fresh model; returns a dict of per-step seconds, peak memory and the first loss."""
    from vdvae import VAE, get_hparams
    from vdvae import train_helpers
    switches = CONFIGS[config]
    if args.device == 'cpu':
        torch.set_num_threads(args.threads)
        if switches['keep_memory']:
            train_helpers.keep_freed_memory()
    elif not torch.cuda.is_available():
        raise SystemExit('--device cuda, but torch.cuda.is_available() is False')
    else:   # torch's default lets cuDNN use TF32 for float32 convolutions: say which one is timed
        torch.backends.cudnn.allow_tf32 = args.amp == 'tf32'
        torch.backends.cuda.matmul.allow_tf32 = args.amp == 'tf32'
    device = torch.device(args.device)
    H = get_hparams(*[s for s in args.hps.split(',') if s], **overrides(args))
    H.skip_threshold = -1          # time every update: never skip one for a large grad norm

    torch.manual_seed(0)
    model = VAE(H)
    ema_model = VAE(H)
    ema_model.load_state_dict(model.state_dict())
    ema_model.requires_grad_(False)
    layout = torch.channels_last if switches['channels_last'] else torch.contiguous_format
    model.to(device, memory_format=layout)
    ema_model.to(device, memory_format=layout)
    if switches['optimizer'] == 'project':
        optimizer, scheduler = train_helpers.build_optimizer(H, model)
    else:                           # torch's default AdamW (foreach on CPU and CUDA)
        optimizer = torch.optim.AdamW(model.parameters(), lr=H.lr,
                                      betas=(H.adam_beta1, H.adam_beta2), eps=1e-8,
                                      weight_decay=H.wd)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda it: train_helpers.warmup_factor(it, H.warmup_iters))
    if switches['ema'] == 'loop':
        # This process runs only this configuration, so swapping the module's function is safe.
        train_helpers.update_ema = update_ema_per_parameter

    gen = torch.Generator().manual_seed(1)
    shape = (H.n_batch, H.image_size, H.image_size, H.image_channels)
    x_in = torch.randn(shape, generator=gen).to(device)
    x_target = (torch.randint(0, 256, shape, generator=gen).float() / 127.5 - 1.0).to(device)

    def autocast():
        dtype = torch.float16 if args.amp == 'fp16' else torch.bfloat16
        return torch.autocast(device.type, dtype=dtype, enabled=args.amp in ('bf16', 'fp16'))

    # fp16 as train.py --amp fp16 does it: a gradient scaler around the loss
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == 'fp16')

    def timed(fn, n):
        times, out = [], None
        for _ in range(n):
            _sync(args.device)
            t0 = time.perf_counter()
            out = fn()
            _sync(args.device)
            times.append(time.perf_counter() - t0)
        return times, out

    step_model = torch.compile(model) if switches['compile'] else model

    def train():
        stats = train_helpers.training_step(H, x_in, x_target, step_model, ema_model, optimizer,
                                            scaler=scaler, autocast=autocast)
        scheduler.step()                   # as a training loop does (same lr in every config)
        return stats

    torch.manual_seed(2)
    first = train()                        # untimed: always at least one warm-up step
    timed(train, args.warmup - 1)
    step_times, last = timed(train, args.steps)
    with torch.no_grad(), autocast():
        eval_times, _ = timed(lambda: ema_model(x_in, x_target), args.steps)
    return dict(step_s=step_times, eval_s=eval_times,
                step_s_median=statistics.median(step_times), step_s_min=min(step_times),
                eval_s_median=statistics.median(eval_times), eval_s_min=min(eval_times),
                # CPU: the process's peak RSS; CUDA: the peak of torch's allocations on the GPU
                peak_mem_bytes=(torch.cuda.max_memory_allocated() if args.device == 'cuda'
                                else _peak_rss()),
                peak_rss_bytes=_peak_rss(),
                first_loss=first['elbo'], last_loss=last['elbo'],
                skipped_updates=first['skipped_updates'] + last['skipped_updates'])


# ------------------------------------------------------------------------------------------------
# The driver

def spawn(argv, config, processes=1):
    """Run one measurement in fresh Python processes (`processes` of them at once); returns the
    result dict of each."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')]))
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, '--worker', config]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(processes)]
    results = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f'benchmark worker for {config!r} failed:\n{err[-4000:]}')
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def throughput(argv, args):
    """--layouts: steps per second of P side-by-side workers of T threads, per layout."""
    config = args.configs.split(',')[0]
    per_layout = {f'{p}x{t}': [] for p, t in args.layouts}
    for run in range(args.runs):
        for p, t in args.layouts:
            results = spawn(argv + ['--threads', str(t)], config, processes=p)   # the last wins
            step = statistics.median(r['step_s_median'] for r in results)
            per_layout[f'{p}x{t}'].append(dict(step_s=step, steps_per_s=p / step,
                                               worker_step_s=[r['step_s_median'] for r in results]))
            print(f'run {run + 1}/{args.runs} {p} process(es) x {t} thread(s): {step:.3f} s per '
                  f'step each, {p / step:.2f} steps/s in all', file=sys.stderr, flush=True)
    out = {}
    first = None
    for name, runs in per_layout.items():
        rate = statistics.median(r['steps_per_s'] for r in runs)
        first = first or rate
        out[name] = dict(steps_per_s=rate, ratio=rate / first,
                         step_s=statistics.median(r['step_s'] for r in runs), runs=runs)
        print(f'{name:>6}: {rate:.2f} steps/s ({rate / first:.2f}x {next(iter(per_layout))})')
    return out


def summarize(per_config):
    out = {}
    for name, runs in per_config.items():
        out[name] = dict(
            step_s=statistics.median(r['step_s_median'] for r in runs),
            eval_s=statistics.median(r['eval_s_median'] for r in runs),
            peak_mem_bytes=int(statistics.median(r['peak_mem_bytes'] for r in runs)),
            step_s_per_run=[r['step_s_median'] for r in runs],
            eval_s_per_run=[r['eval_s_median'] for r in runs],
            step_s_min=min(r['step_s_min'] for r in runs),     # least disturbed by other load
            eval_s_min=min(r['eval_s_min'] for r in runs),
            first_loss=runs[0]['first_loss'],
            last_loss=runs[0]['last_loss'],
            runs=runs)
    return out


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_once(args, args.worker)))
        return None
    names = args.configs.split(',')
    per_config = {name: [] for name in names}
    load_before = os.getloadavg()
    machine = machine_info(args.threads, cuda=args.device == 'cuda')
    if args.layouts:
        results = dict(machine=machine, command=' '.join(['bench/bench.py', *argv]),
                       hparam_overrides=overrides(args), config=names[0],
                       layouts=throughput(argv, args), loadavg_before=load_before,
                       loadavg_after=os.getloadavg())
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=1) + '\n')
        return results
    for run in range(args.runs):
        for name in names:
            result, = spawn(argv, name)
            per_config[name].append(result)
            print(f"run {run + 1}/{args.runs} {name:>20}: step {result['step_s_median']:.3f} s  "
                  f"eval {result['eval_s_median']:.3f} s  "
                  f"peak {result['peak_mem_bytes'] / 2**30:.2f} GiB", file=sys.stderr, flush=True)
    results = dict(machine=machine,
                   args={k: v for k, v in vars(args).items() if k != 'worker'},
                   hparam_overrides=overrides(args), command=' '.join(['bench/bench.py', *argv]),
                   loadavg_before=load_before, loadavg_after=os.getloadavg(),
                   configs=summarize(per_config))
    # Ratios against `baseline` if it ran, else against the first configuration.
    summary = results['configs']
    results['reference'] = ref_name = 'baseline' if 'baseline' in summary else names[0]
    ref = summary[ref_name]
    for name, s in summary.items():
        s['step_ratio'] = s['step_s'] / ref['step_s']
        s['eval_ratio'] = s['eval_s'] / ref['eval_s']
        for key in ('first_loss', 'last_loss'):      # numerics: same init, batch, seeds, lr
            s[f'{key}_rel_diff'] = abs(s[key] - ref[key]) / max(abs(ref[key]), 1e-30)
        print(f"{name:>20}: step {s['step_s']:.3f} s ({s['step_ratio']:.2f}x {ref_name})  "
              f"eval {s['eval_s']:.3f} s ({s['eval_ratio']:.2f}x)  "
              f"peak {s['peak_mem_bytes'] / 2**30:.2f} GiB  first loss {s['first_loss']:.6f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1) + '\n')
    return results


if __name__ == '__main__':
    main()
