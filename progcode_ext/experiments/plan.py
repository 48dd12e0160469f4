"""What the paper's protocol will train, before anything trains: every run of Table 1, Figure 2
(and Figure 4, which reuses it) and Table 2, with its preset, steps, batch, the runs it waits for,
whether it is done already, and an estimate of its memory per GPU and its time.

    scripts/paper_protocol.sh svhn --plan          (the same environment as a real run)
    python -m progcode_ext.experiments.plan --hps svhn --out OUT --steps 800000 --probe_steps 400000

The estimates come from the model itself, built on torch's meta device (no memory, no data, no
time): one training step's forward and backward at batch 1 under `FlopCounterMode` gives the
FLOPs per image, and the tensors autograd saves for the backward give the activation memory per
image. Memory per GPU = activations x the batch per GPU + 4 bytes per parameter (weights) + 16
per trained parameter (gradient, AdamW's two moments, the EMA copy). Time = FLOPs x batch x steps
/ (the GPU's dense fp32 rate x UTILISATION). Both are estimates, not measurements: the
activation count ignores the allocator's slack and the temporaries of a step (bench/gpu_check.sh
measures the real peak), and UTILISATION is assumed. Table 2's runs at the headline lambda are
shown at the first target: the rule picks the headline only once the family has trained, and
every target costs the same.
"""
import argparse
import os
import shlex
import sys
from contextlib import contextmanager
from unittest import mock

import torch

from vdvae.errors import UserError, exit_status
from vdvae.hps import setup_hparams
from vdvae.models import build_model

from . import cli, rd_curve, table1, table2
from .report import table_head
from .runs import launch_command, steps_done

# Dense fp32 rates (TFLOP/s, vendor data sheets, no TF32, no sparsity) and memory of named GPUs.
GPUS = {'V100': (15.7, 32), 'A100': (19.5, 80), 'H100': (67.0, 80)}
UTILISATION = 0.4          # assumed share of the dense rate a training step reaches
BYTES_PER_PARAMETER = 4    # the weights, every parameter
BYTES_PER_TRAINED = 16     # gradient, AdamW's exp_avg and exp_avg_sq, the EMA copy


@contextmanager
def nothing_loaded():
    """Build any preset's model without the runs it would load (frozen stages, a trained VDVAE,
    a starting point): on the meta device their weights do not matter, only their shapes and
    which parameters train."""
    from progcode_ext import masked, multi_stage

    def freeze(self, paths):
        for k in range(1, len(paths) + 1):
            self.stage(k).requires_grad_(False)

    with mock.patch.object(multi_stage.MultiStageHVAE, 'load_frozen_stages', freeze), \
            mock.patch.object(multi_stage.MultiStageHVAE, 'start_from', lambda self, path: None), \
            mock.patch.object(masked, 'restore_params', lambda *args, **kwargs: None):
        yield


def step_cost(argv):
    """(parameters, trained parameters, FLOPs per image, activation bytes per image) of one
    training step of the model train.py builds from `argv`, at batch 1 on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode
    H = setup_hparams(argv)
    with nothing_loaded(), torch.device('meta'):
        model = build_model(H)
    params = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    x = torch.zeros((1, H.image_size, H.image_size, H.image_channels), device='meta')
    saved = []
    with FlopCounterMode(display=False) as flops, \
            torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        stats = model(x, x)
        (stats['loss'] if 'loss' in stats else stats['elbo']).backward()
    # a tensor saved twice (or views of one storage) is counted once
    storages = {}
    for t in saved:
        key = (id(t.untyped_storage()) if t.device.type != 'meta' else id(t), t.dtype)
        storages[key] = max(storages.get(key, 0), t.numel() * t.element_size())
    return params, trained, flops.get_total_flops(), sum(storages.values())


def protocol_runs(argv):
    """(cfg, runs) of the protocol that scripts/paper_protocol.sh runs with these flags, each run
    once (Figure 2's stage-1 runs are also Table 2's)."""
    cfg = cli.parse(argv, 'plan', lambda p: (table1.add_arguments(p), table2.add_arguments(p)),
                    ('sample', 'perceptual'))
    headline = table2.family(cfg)[0]
    runs = {}
    for run in (table1.plan(cfg) + rd_curve.plan(_with(cfg, targets=rd_curve.PAPER_TARGETS))
                + table2.plan(cfg, headline=headline)):
        runs.setdefault(run.name, run)
    return cfg, list(runs.values()), headline


def _with(cfg, **changes):
    out = argparse.Namespace(**vars(cfg))
    for k, v in changes.items():
        setattr(out, k, v)
    return out


def human(n, unit=''):
    for size, prefix in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
        if n >= size:
            return f'{n / size:.3g} {prefix}{unit}'
    return f'{n:.3g} {unit}'


def rows(cfg, runs, gpu):
    rate, memory = GPUS[gpu]
    costs, out = {}, []
    for run in runs:
        argv = ['--hps', run.preset, *shlex.split(cfg.train_flags), *run.flags]
        H = setup_hparams(argv)
        key = (run.preset, tuple(a for a in run.flags if not a.startswith('/')))
        if key not in costs:
            costs[key] = step_cost(argv)
        params, trained, flops, activations = costs[key]
        gib = (activations * H.n_batch + BYTES_PER_PARAMETER * params
               + BYTES_PER_TRAINED * trained) / 2 ** 30
        hours = flops * H.n_batch * run.steps / (rate * 1e12 * UTILISATION) / 3600
        try:
            done = steps_done(cfg, run)
        except UserError:                   # a folder of that name, trained otherwise
            done = -1
        out.append(dict(name=run.name, preset=run.preset, steps=run.steps, batch=H.n_batch,
                        after=', '.join(run.after) or '-', done=done, params=params,
                        flops=flops * H.n_batch, gib=gib, fits=gib <= memory,
                        hours=hours * (run.steps - max(0, min(done, run.steps))) / run.steps))
    return out


def first_command(cfg, runs):
    """How the first run will be started: the launcher (LAUNCH, e.g. NGPU > 1) and the loop."""
    launcher = shlex.split(os.environ.get('LAUNCH', '')) or [sys.executable]
    return shlex.join(launch_command(cfg, runs[0], 0, launcher))


def render(cfg, out, gpu, headline, command=''):
    rate, memory = GPUS[gpu]
    lines = [f'Plan of the paper\'s protocol for {cfg.hps} in {cfg.out} ({len(out)} runs; '
             f'Table 2\'s headline runs shown at lambda {headline:g}). Estimates, not '
             f'measurements: memory per GPU and time on one {gpu} ({rate:g} TFLOP/s fp32 at an '
             f'assumed {UTILISATION:.0%}); see `python -m progcode_ext.experiments.plan --help`.',
             '',
             *table_head('run', 'preset', 'steps', 'batch/GPU', 'after', 'done', 'parameters',
                         'FLOPs/step', 'memory/GPU', f'{gpu} hours left')]
    for r in out:
        done = 'other settings' if r['done'] < 0 else f"{r['done']:,}"
        lines.append(f"| {r['name']} | {r['preset']} | {r['steps']:,} | {r['batch']} | {r['after']} "
                     f"| {done} | {human(r['params'])} | {human(r['flops'])} | "
                     f"{r['gib']:.1f} GiB{'' if r['fits'] else f' (over {memory} GiB)'} | "
                     f"{r['hours']:,.1f} |")
    total = sum(r['hours'] for r in out)
    lines += ['', f'Total: {total:,.0f} {gpu} hours left ({total / 24:,.1f} days on one GPU); '
              f'the largest run needs {max(r["gib"] for r in out):.1f} GiB per GPU.']
    if command:
        lines += ['', f'The first run starts as: `{command}`']
    return '\n'.join(lines)


def run(argv):
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument('--gpu', choices=sorted(GPUS), default='H100')
    known, rest = p.parse_known_args(argv)
    if '-h' in rest or '--help' in rest:
        print(__doc__)
        print(f'--gpu {{{",".join(sorted(GPUS))}}} (default H100), then the flags of the '
              'experiments (--hps, --out, --steps, --probe_steps, --seeds, --train_flags, ...)')
        return
    cfg, runs, headline = protocol_runs(rest)
    print(render(cfg, rows(cfg, runs, known.gpu), known.gpu, headline,
                 first_command(cfg, runs)))


def main(argv=None):
    return exit_status(run, sys.argv[1:] if argv is None else argv)


if __name__ == '__main__':
    raise SystemExit(main())
