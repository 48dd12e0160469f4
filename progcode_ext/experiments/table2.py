"""Table 2 and Figure 3: progressive coding against conventional training of the same two-stage
HVAE, at equal steps and parameters: ELBO (nats/dim and bits/dim) and the sample metric, per seed.

progressive:  stage 1 lambda-optimal (`X_stage1`, `--steps`), frozen; stage 2 (`X_stage2`, `--steps`)
conventional: both stages jointly by the ELBO (`X_conventional`, `--steps`): every parameter is updated
              `--steps` times in both, as in A.4.
The sample metric is FID with Inception weights (`--fid_weights`), else - only with
`--allow_standin` - FD-<dataset> in the features of a classifier trained here; the report names it.
Its reference statistics are those of the training split (as FID is usually computed, and as
docs/metrics.md says; LSUN's official validation split has only 300 images). Samples at
temperature 1 (no reduced-temperature sampling, as in the paper).
The claims are inconclusive when stage 1 missed its distortion target by more than 10%, or when the
-ELBO of stage 2 or of the conventional model still moved by 2% or more in its last fifth.
Writes OUT/table2/{results.json, report.md, table2.png, samples-*.png}.
"""
import math
import os

import numpy as np
import torch

from vdvae.data import load_splits
from vdvae.hps import get_hparams

from ..metrics import DEFAULT_FID_SAMPLES, choose_sample_metric, sample_quality
from . import convergence as cv
from .common import (check_inputs, check_table, default_device, evaluate_last_fifth,
                     evaluate_run, grid, load_run, mean_std, metrics_cache, number, parse, plot,
                     run_main, say, seeded, summary, write_results)
from .rd_curve import stage1_stage
from .runs import Stage, run_dir, run_stages

TRAININGS = ('conventional', 'progressive')


def add_arguments(parser):
    parser.add_argument('--distortion_target', type=number(0.0, float, strict=True), default=None,
                        help="stage 1's lambda (default: the preset's, e.g. 0.0032 for svhn)")
    add_sample_arguments(parser)


def add_sample_arguments(parser):
    """The sample metric's flags (also the stages experiment's)."""
    parser.add_argument('--n_samples', type=number(1), default=DEFAULT_FID_SAMPLES,
                        help='samples for the sample metric (default: %(default)s)')
    parser.add_argument('--n_reference', type=number(1), default=DEFAULT_FID_SAMPLES,
                        help='training images for the reference statistics (default: %(default)s, '
                             'at most the whole training split)')
    parser.add_argument('--sample_batch', type=number(1), default=100)
    parser.add_argument('--fid_weights', default=None, help='local Inception weights for FID')
    parser.add_argument('--allow_standin', action='store_true',
                        help='without Inception weights, use the clearly labelled FD-<dataset>')


def distortion_target(cfg):
    if cfg.distortion_target is None:
        cfg.distortion_target = get_hparams(f'{cfg.hps}_stage1').distortion_target
    return cfg.distortion_target


def run_names(seed):
    return dict(progressive=seeded('table2-stage2', seed),
                conventional=seeded('table2-conventional', seed))


def stages(cfg):
    target = distortion_target(cfg)
    plan = []
    for seed in cfg.seeds:
        stage1 = stage1_stage(cfg, target, seed)     # rd_curve's run at this target, when it has one
        flags = ('--seed', str(seed), '--distortion_target', str(target))
        names = run_names(seed)
        plan += [stage1,
                 Stage(names['progressive'], f'{cfg.hps}_stage2', cfg.steps,
                       flags + (f'--stage1_path={run_dir(cfg, stage1.name)}',), (stage1.name,),
                       cost=1.25),
                 Stage(names['conventional'], f'{cfg.hps}_conventional', cfg.steps, flags, cost=2.3)]
    return plan


@torch.no_grad()
def draw_samples(model, n, batch, t=1.0):
    """(x_hat, samples), uint8 NHWC, from the two-stage model's prior at temperature t."""
    hats, xs = [], []
    for start in range(0, n, batch):
        x_hat, x = model.sample_stages(min(batch, n - start), t1=t, t2=t)
        hats.append(x_hat)
        xs.append(x)
    return np.concatenate(hats), np.concatenate(xs)


def sample_metric(cfg, H, samples, device):
    """(name, value) of the sample metric against the training split's statistics."""
    reference = load_splits(H.dataset, H.data_root)['train']
    return sample_quality(samples, reference, H.dataset, fid_weights=cfg.fid_weights,
                          allow_standin=cfg.allow_standin, reference_split='train',
                          n_reference=cfg.n_reference, data_root=H.data_root, device=device,
                          logprint=say, cache_dir=metrics_cache(cfg))


def evaluate_seed(cfg, device, seed, folder):
    target = distortion_target(cfg)
    stage1 = stage1_stage(cfg, target, seed).name
    stage1_stats = evaluate_run(cfg, run_dir(cfg, stage1), device)
    checks = [cv.reaches_target(stage1, 'D', stage1_stats['mse'], target)]
    row = {}
    for name, run in run_names(seed).items():
        before, stats = evaluate_last_fifth(cfg, run_dir(cfg, run), device)
        checks.append(cv.settled(run, '-ELBO', before and before['elbo'], stats['elbo'],
                                 stats['step']))
        H, model, _, _ = load_run(run_dir(cfg, run), device)
        torch.manual_seed(seed)
        x_hat, samples = draw_samples(model, cfg.n_samples, cfg.sample_batch)
        metric, value = sample_metric(cfg, H, samples, device)
        if seed == cfg.seeds[0]:
            grid([x_hat[:8], samples[:8], x_hat[8:16], samples[8:16], x_hat[16:24], samples[16:24]],
                 os.path.join(folder, f'samples-{name}.png'))
        row[name] = dict(elbo=stats['elbo'], elbo_bits_per_dim=stats['elbo'] / math.log(2),
                         rate_stage1=stats['rate_stage1'], rate_stage2=stats['rate_stage2'],
                         mse_stage1=stats['mse_stage1'], metric=metric, sample_metric=value,
                         n_samples=len(samples),
                         parameters=sum(p.numel() for p in model.parameters()))
        say(f"table2: {run}: -ELBO {stats['elbo']:.4f} nats/dim, {metric} {value:.3f}")
    prog, conv = row['progressive'], row['conventional']
    assert prog['parameters'] == conv['parameters'], 'the two trainings must have the same networks'
    row.update(seed=seed, sample_metric_held=prog['sample_metric'] < conv['sample_metric'],
               elbo_held=conv['elbo'] < prog['elbo'])
    return row, checks


def report(cfg):
    device = default_device(cfg)
    folder = os.path.join(cfg.out, 'table2')
    os.makedirs(folder, exist_ok=True)
    rows, checks = [], []
    for seed in cfg.seeds:
        row, seed_checks = evaluate_seed(cfg, device, seed, folder)
        rows.append(row)
        checks += seed_checks
    metric = rows[0]['progressive']['metric']
    result = dict(dataset=cfg.hps, seeds=cfg.seeds, metric=metric, rows=rows, checks=checks,
                  distortion_target=distortion_target(cfg),
                  parameters=rows[0]['progressive']['parameters'])
    for name in TRAININGS:
        result[name] = {key: summary([r[name][key] for r in rows]) for key in
                        ('elbo', 'sample_metric', 'rate_stage1', 'rate_stage2', 'mse_stage1')}
    result['sample_metric_verdict'] = cv.verdict([r['sample_metric_held'] for r in rows], checks)
    result['elbo_verdict'] = cv.verdict([r['elbo_held'] for r in rows], checks)
    draw(cfg, result, folder)
    write_results(cfg.out, 'table2', result, report_lines(cfg, result))
    return result


def draw(cfg, result, folder):
    conv, prog = result['conventional'], result['progressive']

    def bars(ax):
        ax.bar([0, 1], [conv['sample_metric']['mean'], prog['sample_metric']['mean']],
               yerr=[conv['sample_metric']['std'], prog['sample_metric']['std']], capsize=6,
               color=['tab:gray', 'tab:blue'], alpha=0.8)
        for r in result['rows']:
            ax.plot([0, 1], [r['conventional']['sample_metric'], r['progressive']['sample_metric']],
                    'k.', ms=6)
        ax.set_xticks([0, 1], [f"conventional\n-ELBO {conv['elbo']['mean']:.4f}",
                               f"progressive\n-ELBO {prog['elbo']['mean']:.4f}"])
        ax.set_ylabel(f"{result['metric']} (lower is better)")
        n = len(result['rows'])
        ax.set_title(f'{cfg.hps}: samples at t = 1 ({n} seed{"s" * (n > 1)})')
    plot(os.path.join(folder, 'table2.png'), bars)


def report_lines(cfg, result):
    metric, rows = result['metric'], result['rows']
    n = len(rows)
    note = '' if metric == 'FID' else ' (a stand-in in the features of a classifier trained here; not FID)'
    lines = [f'# Table 2 on {cfg.hps}', '',
             f'Negative ELBO per dimension on the validation split (EMA weights; nats, bits in '
             f'brackets; the paper reports ELBO with the opposite sign). Sample metric: '
             f'**{metric}**{note}, {rows[0]["progressive"]["n_samples"]} samples at t = 1 against '
             f'the training split. Stage 1 at lambda = {result["distortion_target"]:g}. '
             f'{n} seed{"s" * (n > 1)} ({", ".join(map(str, cfg.seeds))})'
             f'{", mean ± std" if n > 1 else ""}.', '',
             f'| training | -ELBO | {metric} | stage-1 rate | stage-2 rate | stage-1 MSE |',
             '|---|---|---|---|---|---|']
    for name in TRAININGS:
        s = result[name]
        lines.append(f"| {name} | {mean_std(s['elbo']['values'], 4)} | "
                     f"{mean_std(s['sample_metric']['values'], 3)} | "
                     f"{mean_std(s['rate_stage1']['values'], 4)} | "
                     f"{mean_std(s['rate_stage2']['values'], 4)} | "
                     f"{mean_std(s['mse_stage1']['values'], 5)} |")
    if n > 1:
        lines += ['', f'| seed | -ELBO conventional | -ELBO progressive | {metric} conventional | '
                  f'{metric} progressive |', '|---|---|---|---|---|']
        lines += [f"| {r['seed']} | {r['conventional']['elbo']:.4f} | {r['progressive']['elbo']:.4f} | "
                  f"{r['conventional']['sample_metric']:.3f} | {r['progressive']['sample_metric']:.3f} |"
                  for r in rows]
    failed = (f" — {cv.describe_failures(result['checks'])}" if cv.failures(result['checks'])
              else '')
    lines += ['', f"Claim: progressive better than conventional on {metric}: "
              f"**{result['sample_metric_verdict']}**"
              + (failed or f" ({sum(r['sample_metric_held'] for r in rows)} of {n} seeds)") + '.',
              f"Claim: conventional has the better ELBO (the paper: slightly): "
              f"**{result['elbo_verdict']}**"
              + (failed or f" ({sum(r['elbo_held'] for r in rows)} of {n} seeds)") + '.',
              f"Both have {result['parameters']:,} parameters.", '', 'Convergence checks:', '']
    lines += check_table(result['checks'])
    lines += ['', 'Paper (FID, conventional vs progressive): SVHN 18.92 vs 10.07, CelebA 13.33 vs '
              '8.54, LSUN 40.71 vs 36.87.', '', '![](table2.png)', '',
              f'Samples (Figure 3, seed {cfg.seeds[0]}): rows of stage-1 x_hat, each followed by '
              'the row of stage-2 samples drawn given it. Conventional:',
              '', '![](samples-conventional.png)', '', 'Progressive:', '',
              '![](samples-progressive.png)']
    return lines


def check_sample_metric(cfg, H):
    """The sample metric's weights (or the stand-in's permission), checked before training."""
    choose_sample_metric(H.dataset, fid_weights=cfg.fid_weights, allow_standin=cfg.allow_standin,
                         cache_dir=metrics_cache(cfg), data_root=H.data_root,
                         device=default_device(cfg), logprint=say)


def run(cfg):
    check_sample_metric(cfg, check_inputs(cfg))
    run_stages(cfg, stages(cfg))
    return report(cfg)


def main(argv=None):
    return run_main(lambda a: run(parse(a, __doc__.split('\n')[0], add_arguments)), argv)


if __name__ == '__main__':
    raise SystemExit(main())
