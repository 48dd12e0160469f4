"""Two against N stages of progressive coding (progcode_ext/multi_stage.py), at equal total
parameters and equal updates per parameter: does a further stage (coarse -> medium -> full detail)
give a better progressive code, a better ELBO or better samples than two?

    python -m progcode_ext.experiments.stages --hps mnist16 --steps 1500 --seeds 0,1,2 \
        --allow_standin          # the toy (scripts/stages.sh)

The two chains, each trained progressively (one run per stage, each on the frozen runs before it,
`--steps` steps each, so that every parameter is updated `--steps` times in both):
  2 stages  lambda (the last of --distortion_targets), then the likelihood, at the preset's width;
  N stages  --distortion_targets (default: X_stage3's, 4 lambda then lambda), then the likelihood,
            every stage at the one width that brings the chain's parameter count closest to the
            two-stage chain's (the report gives both counts).
Both chains reach lambda at their last mean head: the N-stage code gets there in N - 1 steps.
Measured with EMA weights on the validation split: the -ELBO (exact); the rate and the MSE after
each stage, the progressive code's staircase (rates from the exact evaluation; the MSE of each
stage's MSE-optimal reconstruction from one posterior pass per image: a mean head's x_hat_k, the
likelihood stage's mixture mean); the sample
metric at t = 1 (FID with `--fid_weights`, else with `--allow_standin` the labelled FD-<dataset>).
Convergence: each mean-head stage ends within 10% of its target; the likelihood stage's -ELBO
moved by less than 2% over its last fifth. A finding is "inconclusive" when a check failed.
Writes OUT/stages/{results.json, report.md, staircase.png, reconstructions-K.png, samples-K.png}.
"""
import functools
import math
import os
import shlex

import numpy as np
import torch

from vdvae.errors import ConfigError
from vdvae.hps import comma_list, get_hparams, setup_hparams
from vdvae.models import build_model

from ..mean_head import mse_per_example
from ..mean_head import picture
from . import convergence as cv
from .common import (check_inputs, check_table, default_device, eval_images, evaluate_last_fifth,
                     evaluate_run, grid, load_run, mean_std, number, parse, plot,
                     run_main, say, seeded, summary, write_results)
from .figures import log_axis
from .runs import Stage, run_dir, run_stages
from .table2 import add_sample_arguments, check_sample_metric, sample_metric

COST = {1: 0.9, 'conditional': 2.0}          # time per step relative to a VDVAE (orders the work)


def add_arguments(parser):
    add_sample_arguments(parser)
    parser.add_argument('--distortion_targets', type=comma_list(float), default=None,
                        help="the N-stage chain's lambda_1 > ... > lambda_{N-1}; the two-stage "
                             "chain uses the last (default: the X_stage3 preset's)")
    parser.add_argument('--n_images', type=number(1), default=8,
                        help='images per row of the reconstruction and sample grids (default: '
                             '%(default)s)')


def chain_targets(cfg):
    """{number of stages: its distortion targets} of the two chains."""
    targets = cfg.distortion_targets or get_hparams(f'{cfg.hps}_stage3').distortion_targets
    if len(targets) < 2:
        raise ConfigError(f'--distortion_targets {targets}: give at least two targets (N >= 3 '
                          'stages); the two-stage chain uses the last')
    return {2: targets[-1:], len(targets) + 1: targets}


def cfg_train_flags(cfg):
    return shlex.split(cfg.train_flags)


def parameter_count(cfg, targets, widths):
    """Parameters of the whole chain (every stage), counted without allocating them."""
    H = setup_hparams(['--hps', f'{cfg.hps}_stages', *cfg_train_flags(cfg), '--training',
                       'conventional', '--distortion_targets', ','.join(f'{t:g}' for t in targets),
                       '--stage_widths', ','.join(map(str, widths))])
    with torch.device('meta'):
        return sum(p.numel() for p in build_model(H).parameters())


def chain_widths(cfg):
    """{number of stages: widths}: the two-stage chain at the preset's width; the N-stage chain at
    the one width whose parameter count is closest to it (ties: the smaller count). The count
    grows with the width, so a bisection finds the largest width at or below the goal."""
    width = setup_hparams(['--hps', cfg.hps, *cfg_train_flags(cfg)]).width
    (_, two_targets), (n, targets) = sorted(chain_targets(cfg).items())
    goal = parameter_count(cfg, two_targets, [width] * 2)
    count = functools.lru_cache(None)(lambda w: parameter_count(cfg, targets, [w] * n))
    low, high = 1, width                  # count(low) <= goal unless even width 1 is above it
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if count(mid) <= goal else (low, mid - 1)
    best = min({low, min(low + 1, width)}, key=lambda w: (abs(count(w) - goal), count(w)))
    return {2: [width] * 2, n: [best] * n}


def stage_name(n, k, seed):
    return seeded(f'stages{n}-s{k}', seed)


def stages(cfg):
    widths = chain_widths(cfg)
    plan = []
    for seed in cfg.seeds:
        for n, targets in chain_targets(cfg).items():
            flags = ('--seed', str(seed),
                     '--distortion_targets', ','.join(f'{t:g}' for t in targets),
                     '--stage_widths', ','.join(map(str, widths[n])))
            before = []
            for k in range(1, n + 1):
                paths = ','.join(run_dir(cfg, name) for name in before)
                plan.append(Stage(stage_name(n, k, seed), f'{cfg.hps}_stages', cfg.steps,
                                  flags + ((f'--stage_paths={paths}',) if paths else ()),
                                  tuple(before), cost=COST[1] if k == 1 else COST['conditional']))
                before.append(stage_name(n, k, seed))
    return plan


@torch.no_grad()
def staircase(model, x_in, x_target, batch):
    """The MSE after each stage, over all images, (n_stages,): of each stage's MSE-optimal
    reconstruction (`MultiStageHVAE.stage_means`)."""
    sums = [0.0] * model.trained_stage
    for start in range(0, len(x_in), batch):
        means = model.stage_means(x_in[start:start + batch])
        sums = [total + mse_per_example(m, x_target[start:start + batch]).sum().item()
                for total, m in zip(sums, means)]
    return [total / len(x_in) for total in sums]


@torch.no_grad()
def draw_stages(model, n, batch):
    """Each stage's output for n draws from the prior at t = 1: a list per stage of uint8 NHWC."""
    parts = []
    for start in range(0, n, batch):
        parts.append(model.sample_stages(min(batch, n - start), [1.0] * model.trained_stage))
    return [np.concatenate(stage) for stage in zip(*parts)]


def evaluate_chain(cfg, device, seed, n, targets, folder):
    """The numbers and checks of one chain of one seed."""
    runs = [run_dir(cfg, stage_name(n, k, seed)) for k in range(1, n + 1)]
    checks = []
    for k, (run, target) in enumerate(zip(runs, targets), 1):
        stats = evaluate_run(cfg, run, device)
        checks.append(cv.reaches_target(stage_name(n, k, seed), 'D', stats[f'mse_stage{k}'],
                                        target))
    before, stats = evaluate_last_fifth(cfg, runs[-1], device)
    checks.append(cv.settled(stage_name(n, n, seed), '-ELBO', before and before['elbo'],
                             stats['elbo'], stats['step']))
    H, model, _, _ = load_run(runs[-1], device)
    images, x_in, x_target = eval_images(runs[-1], device, cfg.n_eval or 10 ** 9)
    torch.manual_seed(seed)
    mses = staircase(model, x_in, x_target, cfg.sample_batch)
    rates = list(np.cumsum([stats[f'rate_stage{k}'] for k in range(1, n + 1)]))
    torch.manual_seed(seed)
    outputs = draw_stages(model, cfg.n_samples, cfg.sample_batch)
    metric, value = sample_metric(cfg, H, outputs[-1], device)
    if seed == cfg.seeds[0]:
        m = cfg.n_images
        torch.manual_seed(seed)
        recons = model.stage_means(x_in[:m])
        grid([images[:m]] + [picture(r) for r in recons],
             os.path.join(folder, f'reconstructions-{n}.png'))
        grid([o[:m] for o in outputs] + [o[m:2 * m] for o in outputs],
             os.path.join(folder, f'samples-{n}.png'))
    say(f"stages: {n} stages, seed {seed}: -ELBO {stats['elbo']:.4f} nats/dim, {metric} "
        f"{value:.3f}, rates {', '.join(f'{r:.4f}' for r in rates)}, MSEs "
        f"{', '.join(f'{d:.5f}' for d in mses)}")
    row = dict(elbo=stats['elbo'], elbo_bits_per_dim=stats['elbo'] / math.log(2), rates=rates,
               mses=mses, rate_at_lambda=rates[n - 2], metric=metric, sample_metric=value,
               n_samples=len(outputs[-1]), parameters=sum(p.numel() for p in model.parameters()),
               widths=[s.H.width for s in model.stages])
    return row, checks


def report(cfg):
    device = default_device(cfg)
    folder = os.path.join(cfg.out, 'stages')
    os.makedirs(folder, exist_ok=True)
    chains = chain_targets(cfg)
    (_, _), (many, _) = sorted(chains.items())
    rows, checks = [], []
    for seed in cfg.seeds:
        row = dict(seed=seed)
        for n, targets in chains.items():
            row[n], chain_checks = evaluate_chain(cfg, device, seed, n, targets, folder)
            checks += chain_checks
        two, more = row[2], row[many]
        row.update(elbo_better=more['elbo'] < two['elbo'],
                   sample_metric_better=more['sample_metric'] < two['sample_metric'],
                   rate_at_lambda_higher=more['rate_at_lambda'] > two['rate_at_lambda'])
        rows.append(row)
    result = dict(dataset=cfg.hps, seeds=cfg.seeds, steps=cfg.steps, targets=chains,
                  metric=rows[0][2]['metric'], rows=rows, checks=checks, stages=many)
    for n in chains:
        result[f'chain{n}'] = {key: summary([r[n][key] for r in rows]) for key in
                               ('elbo', 'sample_metric', 'rate_at_lambda', 'parameters')}
        result[f'chain{n}']['rates'] = np.mean([r[n]['rates'] for r in rows], axis=0).tolist()
        result[f'chain{n}']['mses'] = np.mean([r[n]['mses'] for r in rows], axis=0).tolist()
        result[f'chain{n}']['widths'] = rows[0][n]['widths']
    for key in ('elbo_better', 'sample_metric_better', 'rate_at_lambda_higher'):
        result[key] = cv.verdict([r[key] for r in rows], checks)
    draw(cfg, result, folder)
    write_results(cfg.out, 'stages', result, report_lines(cfg, result))
    return result


def draw(cfg, result, folder):
    chains = sorted(result['targets'])
    colours = dict(zip(chains, ('tab:gray', 'tab:blue', 'tab:green', 'tab:orange')))

    def steps(ax):
        for n in chains:
            for r in result['rows']:
                ax.step(r[n]['rates'], r[n]['mses'], where='post', color=colours[n], alpha=0.25,
                        lw=1)
            rates, mses = result[f'chain{n}']['rates'], result[f'chain{n}']['mses']
            ax.step(rates, mses, where='post', color=colours[n], lw=2, label=f'{n} stages')
            ax.plot(rates, mses, 'o', color=colours[n], ms=6)
            for k, (x, y) in enumerate(zip(rates, mses), 1):     # 2 stages left, N right
                ax.annotate(f'{k}', (x, y), textcoords='offset points', fontsize=8,
                            xytext=(-10 if n == 2 else 5, 4), color=colours[n])
        targets = sorted({t for ts in result['targets'].values() for t in ts})
        for t in targets:
            ax.axhline(t, color='k', lw=0.5, ls=':')
            ax.annotate(f'lambda = {t:g}', (0.4, t), xycoords=('axes fraction', 'data'),
                        textcoords='offset points', xytext=(4, -9), fontsize=7)
        values = [d for r in result['rows'] for n in chains for d in r[n]['mses']] + targets
        ax.set_ylim(min(values) / 1.3, max(values) * 1.3)
        log_axis(ax, 'y', targets)
        ax.set_xlabel('rate after stage k (nats/dim, cumulative)')
        ax.set_ylabel('MSE after stage k ([-1, 1] scale)')
        n_seeds = len(result['rows'])
        ax.set_title(f'{cfg.hps}: the progressive code, stage by stage ({n_seeds} seed'
                     f'{"s" * (n_seeds > 1)})')
        ax.legend(loc='center')
    plot(os.path.join(folder, 'staircase.png'), steps)


def report_lines(cfg, result):
    metric, rows, many = result['metric'], result['rows'], result['stages']
    n_seeds = len(rows)
    note = ('' if metric == 'FID' else
            ' (a stand-in in the features of a classifier trained here; not FID)')
    chains = sorted(result['targets'])
    lines = [f'# Two against {many} stages on {cfg.hps}', '',
             f'Each chain trained progressively, one run per stage, {cfg.steps} steps each (every '
             f'parameter updated {cfg.steps} times). Validation split, EMA weights; -ELBO in '
             f'nats/dim (bits in brackets); rates cumulative, nats/dim; MSE on the [-1, 1] scale. '
             f'Sample metric: **{metric}**{note}, {rows[0][2]["n_samples"]} samples at t = 1 '
             f'against the training split. Seeds {", ".join(map(str, cfg.seeds))}'
             f'{", mean ± std" if n_seeds > 1 else ""}.', '',
             '| chain | targets | widths | parameters | -ELBO | ' + metric + ' | rate at lambda |',
             '|---|---|---|---|---|---|---|']
    for n in chains:
        s = result[f'chain{n}']
        elbo = s['elbo']['values']
        lines.append(f"| {n} stages | {', '.join(f'{t:g}' for t in result['targets'][n])} | "
                     f"{', '.join(map(str, s['widths']))} | {int(s['parameters']['mean']):,} | "
                     f"{mean_std(elbo, 4)} ({np.mean(elbo) / math.log(2):.4f}) | "
                     f"{mean_std(s['sample_metric']['values'], 3)} | "
                     f"{mean_std(s['rate_at_lambda']['values'], 4)} |")
    ratio = result[f'chain{many}']['parameters']['mean'] / result['chain2']['parameters']['mean']
    lines += ['', f'Parameters of {many} stages / 2 stages: {ratio:.4f}.', '',
              'The staircase (mean over seeds): rate and MSE after each stage.', '',
              '| chain | ' + ' | '.join(f'stage {k}' for k in range(1, many + 1)) + ' |',
              '|---|' + '---|' * many]
    for n in chains:
        s = result[f'chain{n}']
        cells = [f'R {r:.4f}, D {d:.5f}' for r, d in zip(s['rates'], s['mses'])]
        lines.append(f'| {n} stages | ' + ' | '.join(cells + [''] * (many - n)) + ' |')
    if n_seeds > 1:
        lines += ['', f'| seed | -ELBO 2 | -ELBO {many} | {metric} 2 | {metric} {many} | '
                  f'rate at lambda 2 | rate at lambda {many} |', '|---|---|---|---|---|---|---|']
        lines += [f"| {r['seed']} | {r[2]['elbo']:.4f} | {r[many]['elbo']:.4f} | "
                  f"{r[2]['sample_metric']:.3f} | {r[many]['sample_metric']:.3f} | "
                  f"{r[2]['rate_at_lambda']:.4f} | {r[many]['rate_at_lambda']:.4f} |" for r in rows]
    failed = len(cv.failures(result['checks']))

    def finding(text, key):
        held = sum(r[key] for r in rows)
        return (f'{text}: **{result[key]}** (held on {held} of {n_seeds} seeds'
                + (f'; {failed} convergence checks failed, below' if failed else '') + ').')
    lines += ['', 'Findings ("held" on every seed, "did not hold" on some, "inconclusive" when a '
              'model failed a convergence check):', '',
              '- ' + finding(f'{many} stages give a better -ELBO than 2', 'elbo_better'),
              '- ' + finding(f'{many} stages give better samples than 2 ({metric})',
                             'sample_metric_better'),
              '- ' + finding(f'the {many}-stage code spends more rate to reach lambda than the '
                             'two-stage code (the price of its coarser first point)',
                             'rate_at_lambda_higher'),
              '', 'Convergence checks:', '']
    lines += check_table(result['checks'])
    lines += ['', '![](staircase.png)', '']
    for n in chains:
        lines += [f'Reconstructions by the {n}-stage chain (seed {cfg.seeds[0]}): the originals, '
                  'then the reconstruction after each stage (as measured in the staircase).', '', f'![](reconstructions-{n}.png)',
                  '', f'Samples of the {n}-stage chain at t = 1 (seed {cfg.seeds[0]}): a row per '
                  'stage (x_hat_1, ..., then the sample) for one set of draws, then the same for '
                  'another.', '',
                  f'![](samples-{n}.png)', '']
    return lines


def run(cfg):
    H = check_inputs(cfg)
    chain_targets(cfg)
    check_sample_metric(cfg, H)
    run_stages(cfg, stages(cfg))
    return report(cfg)


def main(argv=None):
    return run_main(lambda a: run(parse(a, __doc__.split('\n')[0], add_arguments)), argv)


if __name__ == '__main__':
    raise SystemExit(main())
