"""Table 2 and Figure 3: progressive coding against conventional training of the same two-stage
HVAE, at equal steps and parameters: ELBO (nats/dim and bits/dim) and the sample metric.

progressive:  stage 1 lambda-optimal (`X_stage1`, `--steps`), frozen; stage 2 (`X_stage2`, `--steps`)
conventional: both stages jointly by the ELBO (`X_conventional`, `--steps`): every parameter is updated
              `--steps` times in both, as in A.4.
The sample metric is FID with Inception weights (`--fid_weights`), else - only with
`--allow_standin` - FD-<dataset> in the features of a classifier trained here; the report names it.
Samples at temperature 1 (no reduced-temperature sampling, as in the paper).
Writes OUT/table2/{results.json, report.md, table2.png, samples-*.png}.
"""
import math
import os

import numpy as np
import torch

from ..metrics import sample_quality
from .common import (metrics_cache, default_device, evaluate_run, grid, load_run, parse, plot, run_main, say,
                     train_stage, write_results)
from vdvae.data import load_splits
from vdvae.hps import get_hparams


def add_arguments(parser):
    parser.add_argument('--distortion_target', type=float, default=None,
                        help="stage 1's lambda (default: the preset's, e.g. 0.0032 for svhn)")
    parser.add_argument('--n_samples', type=int, default=50000, help='samples for the sample metric')
    parser.add_argument('--sample_batch', type=int, default=100)
    parser.add_argument('--fid_weights', default=None, help='local Inception weights for FID')
    parser.add_argument('--allow_standin', action='store_true',
                        help='without Inception weights, use the clearly labelled FD-<dataset>')


@torch.no_grad()
def draw_samples(model, n, batch, t=1.0):
    """(x_hat, samples), uint8 NHWC, from the two-stage model's prior at temperature t."""
    hats, xs = [], []
    for start in range(0, n, batch):
        x_hat, x = model.sample(min(batch, n - start), t1=t, t2=t)
        hats.append(x_hat)
        xs.append(x)
    return np.concatenate(hats), np.concatenate(xs)


def run(cfg):
    device = default_device(cfg)
    if cfg.distortion_target is None:
        cfg.distortion_target = get_hparams(f'{cfg.hps}_stage1').distortion_target
    target = ['--distortion_target', str(cfg.distortion_target)]
    # named as rd_curve names its runs, so that a stage 1 trained there is reused here
    stage1 = train_stage(cfg, f'stage1-{cfg.distortion_target:g}', f'{cfg.hps}_stage1', target)
    runs = dict(
        progressive=train_stage(cfg, 'table2-stage2', f'{cfg.hps}_stage2',
                                target + [f'--stage1_path={stage1}']),
        conventional=train_stage(cfg, 'table2-conventional', f'{cfg.hps}_conventional', target))
    folder = os.path.join(cfg.out, 'table2')
    os.makedirs(folder, exist_ok=True)
    results = {}
    for name, run_dir in runs.items():
        stats = evaluate_run(cfg, run_dir, device)
        H, model, _, _ = load_run(run_dir, device)
        torch.manual_seed(0)
        x_hat, samples = draw_samples(model, cfg.n_samples, cfg.sample_batch)
        metric, value = sample_quality(samples, load_splits(H.dataset, H.data_root)['test'],
                                       H.dataset, fid_weights=cfg.fid_weights,
                                       allow_standin=cfg.allow_standin, reference_split='test',
                                       n_reference=cfg.n_samples, data_root=H.data_root,
                                       device=device, logprint=say,
                                       cache_dir=metrics_cache(cfg))
        grid([x_hat[:8], samples[:8], samples[8:16], samples[16:24]],
             os.path.join(folder, f'samples-{name}.png'))
        results[name] = dict(elbo=stats['elbo'], elbo_bits_per_dim=stats['elbo'] / math.log(2),
                             rate_stage1=stats['rate_stage1'], rate_stage2=stats['rate_stage2'],
                             mse_stage1=stats['mse_stage1'], metric=metric, sample_metric=value,
                             n_samples=len(samples),
                             parameters=sum(p.numel() for p in model.parameters()))
        say(f"table2: {name}: ELBO {stats['elbo']:.4f} nats/dim, {metric} {value:.3f}")
    prog, conv = results['progressive'], results['conventional']
    assert prog['parameters'] == conv['parameters'], 'the two trainings must have the same networks'
    metric = prog['metric']
    better = prog['sample_metric'] < conv['sample_metric']

    def draw(ax):
        ax.bar([0, 1], [conv['sample_metric'], prog['sample_metric']], color=['tab:gray', 'tab:blue'])
        ax.set_xticks([0, 1], [f"conventional\nELBO {conv['elbo']:.3f}",
                               f"progressive\nELBO {prog['elbo']:.3f}"])
        ax.set_ylabel(f'{metric} (lower is better)')
        ax.set_title(f'{cfg.hps}: samples at t = 1')
    plot(os.path.join(folder, 'table2.png'), draw)
    note = '' if metric == 'FID' else ' (a stand-in in the features of a classifier trained here; not FID)'
    report = [f'# Table 2 on {cfg.hps}', '',
              f'Negative ELBO per dimension on the validation split (EMA weights; nats, bits in brackets; '
              f'the paper reports ELBO with the opposite sign). Sample metric: **{metric}**{note}, '
              f'{prog["n_samples"]} samples at t = 1 against the test split.', '',
              f'| training | -ELBO | {metric} | stage-1 rate | stage-2 rate | stage-1 MSE |',
              '|---|---|---|---|---|---|']
    for name, r in (('conventional', conv), ('progressive', prog)):
        report.append(f"| {name} | {r['elbo']:.4f} ({r['elbo_bits_per_dim']:.4f}) | "
                      f"{r['sample_metric']:.3f} | {r['rate_stage1']:.4f} | {r['rate_stage2']:.4f} | "
                      f"{r['mse_stage1']:.5f} |")
    report += ['', f"Claim: progressive better than conventional on {metric}: "
               f"**{'held' if better else 'did not hold'}**; ELBO: conventional "
               f"{'better' if conv['elbo'] < prog['elbo'] else 'not better'} (the paper: slightly).",
               f"Both have {prog['parameters']:,} parameters.", '',
               'Paper (FID, conventional vs progressive): SVHN 18.92 vs 10.07, CelebA 13.33 vs 8.54, '
               'LSUN 40.71 vs 36.87.', '', '![](table2.png)', '',
               'Samples (Figure 3), first row the stage-1 x_hat: conventional', '',
               '![](samples-conventional.png)', '', 'progressive', '', '![](samples-progressive.png)']
    results.update(dataset=cfg.hps, claim_held=better, metric=metric)
    write_results(cfg.out, 'table2', results, report)
    return results


def main(argv=None):
    return run_main(lambda a: run(parse(a, __doc__.split('\n')[0], add_arguments)), argv)


if __name__ == '__main__':
    raise SystemExit(main())
