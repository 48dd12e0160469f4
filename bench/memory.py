"""Memory and cost of one training step of the paper's presets, and what they imply on GPUs
(BENCHMARKS.md, "Memory and cost at paper scale").

    python bench/memory.py --presets svhn,celeba64,lsun64 --json bench/results/memory.json
    python bench/memory.py --presets svhn --measure fp32,bf16       # also peak RSS on the CPU

For each preset and kind of run (vdvae, stage1, stage2, conventional, probe), from the model built
on the meta device (`progcode_ext.experiments.plan.step_cost`: no memory, no time): parameters
(and those trained), FLOPs of a step per image, and the bytes autograd saves for the backward per
image (the activations). A step at batch B then needs about
    4 bytes x parameters + 16 x trained parameters (gradient, AdamW's moments, EMA) + B x activations,
from which the largest batch per GPU on 16, 40 and 80 GiB and the GPUs the paper's batch needs
(A.1 gives per-GPU batches: 12 for SVHN, 6 for CelebA and LSUN).

`--measure fp32[,bf16]` checks the estimate where it can: the peak RSS of a CPU training step
(`vdvae.train_helpers.training_step`, fused AdamW, EMA) at batch 1 and at batch 1 + k, each in a
fresh process, k the images whose estimated activations reach `--measure_mib` (default 256: k = 1
for a paper preset; a toy model needs more for its activations to stand out of the RSS's noise);
their difference over k is the activation memory of one image as measured (the CPU allocator's
and oneDNN's own buffers included). bf16 means torch.autocast around the forward, as train.py
--amp bf16. `--device cuda` measures on a GPU instead, at the paper's batch itself: torch's peak
allocation of a step against the estimate's total (bench/gpu_check.sh, step 6).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KINDS = {'vdvae': ('{p}', ()), 'stage1': ('{p}_stage1', ()),
         'stage2': ('{p}_stage2', ('--stage1_path', '/unused')),
         'conventional': ('{p}_conventional', ()),
         'probe': ('{p}_masked', ('--mode', 'probe', '--encoder_path', '/unused'))}
GIB = 2 ** 30
GPU_MEMORY = (16, 40, 80)


def argv_of(preset, kind):
    name, flags = KINDS[kind]
    return ['--hps', name.format(p=preset), *flags]


def estimate(preset, kind):
    from progcode_ext.experiments.plan import BYTES_PER_PARAMETER, BYTES_PER_TRAINED, step_cost
    from vdvae.hps import setup_hparams
    argv = argv_of(preset, kind)
    params, trained, flops, activations = step_cost(argv)
    batch = setup_hparams(argv).n_batch
    fixed = BYTES_PER_PARAMETER * params + BYTES_PER_TRAINED * trained
    fits = {str(g): max(0, int((g * GIB - fixed) // activations)) for g in GPU_MEMORY}
    return dict(preset=preset, kind=kind, params=params, trained=trained, batch=batch,
                flops_per_image=flops, activation_bytes_per_image=activations,
                fixed_bytes=fixed, step_bytes=fixed + batch * activations, largest_batch=fits,
                gpus_for_batch={g: (None if not b else -(-batch // b)) for g, b in fits.items()})


def worker(preset, kind, batch, amp, device='cpu'):
    """One training step at `batch` in this process; prints the peak memory in bytes (the RSS on
    the CPU, torch's peak allocation on a GPU)."""
    import torch
    from progcode_ext.experiments.plan import nothing_loaded
    from vdvae import train_helpers
    from vdvae.hps import setup_hparams
    from vdvae.models import build_model
    torch.set_num_threads(2)
    train_helpers.keep_freed_memory()
    H = setup_hparams(argv_of(preset, kind) + ['--n_batch', str(batch)])
    H.skip_threshold = -1
    with nothing_loaded():
        model, ema = build_model(H).to(device), build_model(H).to(device)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    optimizer, _ = train_helpers.build_optimizer(H, model)
    x = torch.rand(batch, H.image_size, H.image_size, H.image_channels, device=device) * 2 - 1

    def autocast():
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                              enabled=amp == 'bf16')
    train_helpers.training_step(H, x, x, model, ema, optimizer, autocast=autocast)
    if device == 'cpu':
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    else:
        print(torch.cuda.max_memory_allocated())


def measure_cuda(preset, kind, amp, batch):
    out = subprocess.run([sys.executable, __file__, '--worker', preset, kind, str(batch), amp,
                          'cuda'], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f'{preset} {kind} batch {batch} {amp} on cuda: {out.stderr[-1500:]}')
    return dict(peak_allocated=int(out.stdout.split()[-1]), batch=batch)


def measure(preset, kind, amp, estimate_per_image, mib=256):
    extra = max(1, -(-(mib * 2 ** 20) // estimate_per_image))
    peaks = []
    for batch in (1, 1 + extra):
        out = subprocess.run([sys.executable, __file__, '--worker', preset, kind, str(batch), amp],
                             capture_output=True, text=True, env=dict(os.environ,
                                                                      OMP_NUM_THREADS='2'))
        if out.returncode:
            raise SystemExit(f'{preset} {kind} batch {batch} {amp}: {out.stderr[-1500:]}')
        peaks.append(int(out.stdout.split()[-1]))
    return dict(peak_rss_batch1=peaks[0], larger_batch=1 + extra, peak_rss_larger=peaks[1],
                activation_bytes_per_image=(peaks[1] - peaks[0]) // extra)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--presets', default='svhn,celeba64,lsun64')
    p.add_argument('--kinds', default=','.join(KINDS))
    p.add_argument('--measure', default='', help='fp32 and/or bf16: also measure a step')
    p.add_argument('--measure_mib', type=int, default=256,
                   help='CPU: the larger batch adds images worth this many MiB of activations')
    p.add_argument('--device', choices=('cpu', 'cuda'), default='cpu',
                   help='where --measure measures (cuda: at the paper\'s batch)')
    p.add_argument('--json', default=None)
    p.add_argument('--worker', nargs='+', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        preset, kind, batch, amp, *device = args.worker
        return worker(preset, kind, int(batch), amp, *device)
    rows = []
    for preset in args.presets.split(','):
        for kind in args.kinds.split(','):
            row = estimate(preset, kind)
            for amp in filter(None, args.measure.split(',')):
                row[f'measured_{amp}'] = (
                    measure(preset, kind, amp, row['activation_bytes_per_image'],
                            args.measure_mib)
                    if args.device == 'cpu' else measure_cuda(preset, kind, amp, row['batch']))
            rows.append(row)
            if args.device == 'cuda':
                print(preset, kind, 'estimate', f"{row['step_bytes'] / GIB:.2f} GiB", *(
                    f"measured {amp}: {row[f'measured_{amp}']['peak_allocated'] / GIB:.2f} GiB"
                    for amp in filter(None, args.measure.split(','))), flush=True)
                continue
            measured = ''.join(
                f'; measured {amp}: {row[f"measured_{amp}"]["activation_bytes_per_image"] / GIB:.2f} '
                f'GiB/image, peak {row[f"measured_{amp}"]["peak_rss_larger"] / GIB:.2f} GiB at batch '
                f'{row[f"measured_{amp}"]["larger_batch"]}'
                for amp in filter(None, args.measure.split(',')))
            print(f"{preset:9s} {kind:12s} params {row['params'] / 1e6:6.1f} M "
                  f"(trained {row['trained'] / 1e6:5.1f} M)  {row['flops_per_image'] / 1e12:.3f} "
                  f"TFLOP/image  activations {row['activation_bytes_per_image'] / GIB:.2f} GiB/image"
                  f"  batch {row['batch']}: {row['step_bytes'] / GIB:5.1f} GiB  largest batch "
                  + ' / '.join(f"{row['largest_batch'][str(g)]} on {g}" for g in GPU_MEMORY)
                  + measured, flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(command=' '.join(sys.argv), rows=rows), f, indent=1)


if __name__ == '__main__':
    main()
