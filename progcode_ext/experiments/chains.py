"""Comparing chains of trained models, the pipeline of which Table 2 (two stages, progressive
against conventional: table2.py) and two against N stages (stages.py) are two plans, each with its
own report. A chain is trained as runs: progressively one per stage, each on the frozen runs before
it (`progressive`), or conventionally one of every stage at once. Its last run holds the whole
model: there a chain is measured (`measure`) and sampled stage by stage (`draw_samples`). Two
chains are compared per seed, on paired differences (`differences`)."""
import math
import os
from dataclasses import replace

import numpy as np
import torch

from vdvae.data import load_splits

from ..mean_head import mse_per_example
from ..metrics import SAMPLE_QUALITY, choose_metric, sample_quality
from ..multi_stage import stage_titles
from .evaluate import default_device, evaluate_run, load_run, metrics_cache
from .figures import grid
from .report import table_head
from .runs import run_dir, say

# A stand-in's number is not comparable with a published FID: every report says so next to it.
STANDIN_NOTE = ' (a stand-in in the features of a classifier trained here; not FID)'


def progressive(cfg, runs, flag='--stage_paths'):
    """The runs of a progressively trained chain, in order: each after the runs before it, whose
    folders `flag` (`--stage_paths`, or `--stage1_path` for one) hands it to load frozen."""
    chain = []
    for run in runs:
        if chain:
            paths = ','.join(run_dir(cfg, r.name) for r in chain)
            run = replace(run, flags=run.flags + (f'{flag}={paths}',),
                          after=tuple(r.name for r in chain))
        chain.append(run)
    return chain


@torch.no_grad()
def draw_samples(model, n, batch, t=1.0):
    """What each stage puts out for n draws from the chain's prior at temperature t: a uint8 NHWC
    array per stage (x_hat_1, ..., then the sample)."""
    def draw(m):        # a chain: every stage's output; a single VDVAE: its samples
        if hasattr(model, 'sample_stages'):
            return model.sample_stages(m, [t] * model.trained_stage)
        return [model.sample(m, t=t)]
    parts = [draw(min(batch, n - start)) for start in range(0, n, batch)]
    return [np.concatenate(outputs) for outputs in zip(*parts)]


@torch.no_grad()
def staircase(model, x_in, x_target, batch):
    """The MSE after each stage, over all images: of each stage's MSE-optimal reconstruction
    (`MultiStageHVAE.stage_means`), the progressive code's point after that stage."""
    sums = [0.0] * model.trained_stage
    for start in range(0, len(x_in), batch):
        means = model.stage_means(x_in[start:start + batch])
        sums = [total + mse_per_example(m, x_target[start:start + batch]).sum().item()
                for total, m in zip(sums, means)]
    return [total / len(x_in) for total in sums]


def check_sample_metric(cfg, H):
    """The sample metric's weights (or the stand-in's permission), checked before training."""
    choose_metric(SAMPLE_QUALITY, H.dataset, cfg.fid_weights, allow_standin=cfg.allow_standin,
                  cache_dir=metrics_cache(cfg), data_root=H.data_root, device=default_device(cfg),
                  logprint=say)


def sample_metric(cfg, H, samples, device):
    """(name, value) of the sample metric against the training split's statistics (FID's usual
    reference)."""
    reference = load_splits(H.dataset, H.data_root)['train']
    return sample_quality(samples, reference, H.dataset, fid_weights=cfg.fid_weights,
                          allow_standin=cfg.allow_standin, reference_split='train',
                          n_reference=cfg.n_reference, data_root=H.data_root, device=device,
                          logprint=say, cache_dir=metrics_cache(cfg))


def measure(cfg, folder, device, seed, prefix='latest', eval_seed=0):
    """(row, model, each stage's samples) of a chain's last run (`folder`), or of a single VDVAE's,
    at `prefix`: the -ELBO
    and each stage's `rate_stageK` and `mse_stageK` (exact, validation split, posterior draws of
    `eval_seed`) and the sample metric of `cfg.n_samples` draws at t = 1 with `seed` (other seeds:
    independent measurements, for the metrics' own noise)."""
    stats = evaluate_run(cfg, folder, device, prefix, eval_seed)
    H, model, _, _ = load_run(folder, device, prefix=prefix)
    torch.manual_seed(seed)
    outputs = draw_samples(model, cfg.n_samples, cfg.sample_batch)
    metric, value = sample_metric(cfg, H, outputs[-1], device)
    stages = {k: v for k, v in stats.items() if k.startswith(('rate_stage', 'mse_stage'))}
    row = dict(run=os.path.basename(folder), elbo=stats['elbo'],
               elbo_bits_per_dim=stats['elbo'] / math.log(2),
               # a single VDVAE, as a chain whose stage 1 is unused
               **(stages or dict(rate_stage1=0.0, rate_stage2=stats['rate'])),
               metric=metric, sample_metric=value, n_samples=len(outputs[-1]),
               parameters=sum(p.numel() for p in model.parameters()), step=stats['step'])
    return row, model, outputs


def sample_grid(outputs, n, sets, path, t=1.0):
    """A PNG of `sets` sets of n draws (`draw_samples` at temperature t): for each, a row per
    stage (x_hat_1, ..., the sample), titled, with the temperature above."""
    titles = stage_titles(len(outputs), len(outputs))
    return grid([o[i * n:(i + 1) * n] for i in range(sets) for o in outputs], path,
                titles * sets, f'temperature {t:g}')


def differences(pairs, key, sign=1):
    """Per seed, sign x (b[key] - a[key]) of each (a, b) pair of chain rows: the evidence of a
    claim, signed so that a positive difference is the claimed direction."""
    return [sign * (b[key] - a[key]) for a, b in pairs]


def seed_table(seeds, pairs, names, columns):
    """Markdown rows: per seed, each column (key, label, digits) of both chains of its pair."""
    lines = table_head('seed', *(f'{label} {name}' for _, label, _ in columns for name in names))
    return lines + [f'| {seed} | ' + ' | '.join(f'{r[key]:.{digits}f}'
                                                for key, _, digits in columns for r in pair) + ' |'
                    for seed, pair in zip(seeds, pairs)]


def metric_sentence(metric, n_samples):
    """How a report introduces the sample metric."""
    return (f'Sample metric: **{metric}**{"" if metric == "FID" else STANDIN_NOTE}, {n_samples} '
            'samples at t = 1 against the training split')
