"""Two against N stages of progressive coding (progcode_ext/multi_stage.py), at equal total
parameters and equal updates per parameter: does a further stage (coarse -> medium -> full detail)
give a better progressive code, a better ELBO or better samples than two? One plan of the
comparison of chains of `chains.py` (its chains, its runs), with its own report.

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
likelihood stage's mixture mean); the sample metric at t = 1 (FID with `--fid_weights`, else with
`--allow_standin` the labelled FD-<dataset>).
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

from ..mean_head import picture
from ..multi_stage import stage_titles
from . import chains
from . import convergence as cv
from .chains import check_sample_metric, differences
from .cli import check_inputs, command, number
from .evaluate import default_device, eval_images, evaluate_last_fifth, evaluate_run
from .figures import grid, log_axis, plot
from .report import check_table, mean_std, summary, table_head, write_results
from .runs import COST, Run, run_all, run_dir, say, seeded

# The findings: (name, key compared, sign making it positive where N stages beat 2 as claimed)
FINDINGS = (('elbo_better', 'elbo', 1), ('sample_metric_better', 'sample_metric', 1),
            ('rate_at_lambda_higher', 'rate_at_lambda', -1))


def add_arguments(parser):
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


def parameter_count(cfg, targets, widths):
    """Parameters of the whole chain (every stage), counted without allocating them."""
    H = setup_hparams(['--hps', f'{cfg.hps}_stages', *shlex.split(cfg.train_flags), '--training',
                       'conventional', '--distortion_targets', ','.join(f'{t:g}' for t in targets),
                       '--stage_widths', ','.join(map(str, widths))])
    with torch.device('meta'):
        return sum(p.numel() for p in build_model(H).parameters())


def chain_widths(cfg):
    """{number of stages: widths}: the two-stage chain at the preset's width; the N-stage chain at
    the one width whose parameter count is closest to it (ties: the smaller count). The count
    grows with the width, so a bisection finds the largest width at or below the goal."""
    width = setup_hparams(['--hps', cfg.hps, *shlex.split(cfg.train_flags)]).width
    (_, two_targets), (n, targets) = sorted(chain_targets(cfg).items())
    goal = parameter_count(cfg, two_targets, [width] * 2)
    count = functools.lru_cache(None)(lambda w: parameter_count(cfg, targets, [w] * n))
    low, high = 1, width                  # count(low) <= goal unless even width 1 is above it
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if count(mid) <= goal else (low, mid - 1)
    best = min({low, min(low + 1, width)}, key=lambda w: (abs(count(w) - goal), count(w)))
    return {2: [width] * 2, n: [best] * n}


def run_name(n, k, seed):
    """The run of stage k of the n-stage chain."""
    return seeded(f'stages{n}-s{k}', seed)


def plan(cfg):
    """Per seed, both chains, progressively: one run per stage, each on the frozen runs before."""
    widths = chain_widths(cfg)
    runs = []
    for seed in cfg.seeds:
        for n, targets in chain_targets(cfg).items():
            flags = ('--seed', str(seed),
                     '--distortion_targets', ','.join(f'{t:g}' for t in targets),
                     '--stage_widths', ','.join(map(str, widths[n])))
            runs += chains.progressive(cfg, [
                Run(run_name(n, k, seed), f'{cfg.hps}_stages', cfg.steps, flags,
                    cost=COST['stage1'] if k == 1 else COST['later_stage'])
                for k in range(1, n + 1)])
    return runs


def evaluate_chain(cfg, device, seed, n, targets, folder):
    """The numbers and checks of one chain of one seed."""
    folders = [run_dir(cfg, run_name(n, k, seed)) for k in range(1, n + 1)]
    checks = [cv.reaches_target(run_name(n, k, seed), 'D',
                                evaluate_run(cfg, run_folder, device)[f'mse_stage{k}'], target)
              for k, (run_folder, target) in enumerate(zip(folders, targets), 1)]
    row, model, outputs = chains.measure(cfg, folders[-1], device, seed)
    before, _ = evaluate_last_fifth(cfg, folders[-1], device)
    checks.append(cv.settled(run_name(n, n, seed), '-ELBO', before and before['elbo'],
                             row['elbo'], row['step']))
    images, x_in, x_target = eval_images(folders[-1], device, cfg.n_eval or 10 ** 9)
    torch.manual_seed(seed)
    row['mses'] = chains.staircase(model, x_in, x_target, cfg.sample_batch)
    row['rates'] = list(np.cumsum([row[f'rate_stage{k}'] for k in range(1, n + 1)]))
    row['rate_at_lambda'] = row['rates'][n - 2]
    row['widths'] = [s.H.width for s in model.stages]
    if seed == cfg.seeds[0]:
        m = cfg.n_images
        torch.manual_seed(seed)
        recons = model.stage_means(x_in[:m])
        grid([images[:m]] + [picture(r) for r in recons],
             os.path.join(folder, f'reconstructions-{n}.png'),
             ['original'] + stage_titles(len(recons), n, 'mean'),
             "validation images and each stage's mean reconstruction")
        chains.sample_grid(outputs, m, 2, os.path.join(folder, f'samples-{n}.png'))
    say(f"stages: {n} stages, seed {seed}: -ELBO {row['elbo']:.4f} nats/dim, {row['metric']} "
        f"{row['sample_metric']:.3f}, rates {', '.join(f'{r:.4f}' for r in row['rates'])}, MSEs "
        f"{', '.join(f'{d:.5f}' for d in row['mses'])}")
    return row, checks


def report(cfg):
    device = default_device(cfg)
    folder = os.path.join(cfg.out, 'stages')
    os.makedirs(folder, exist_ok=True)
    targets_of = chain_targets(cfg)
    (_, _), (many, _) = sorted(targets_of.items())
    rows, checks = [], []
    for seed in cfg.seeds:
        row = dict(seed=seed)
        for n, targets in targets_of.items():
            row[n], chain_checks = evaluate_chain(cfg, device, seed, n, targets, folder)
            checks += chain_checks
        for finding, key, sign in FINDINGS:
            row[finding] = differences([(row[many], row[2])], key, sign)[0] > 0
        rows.append(row)
    result = dict(dataset=cfg.hps, seeds=cfg.seeds, steps=cfg.steps, targets=targets_of,
                  metric=rows[0][2]['metric'], rows=rows, checks=checks, stages=many)
    for n in targets_of:
        result[f'chain{n}'] = {key: summary([r[n][key] for r in rows]) for key in
                               ('elbo', 'sample_metric', 'rate_at_lambda', 'parameters')}
        result[f'chain{n}']['rates'] = np.mean([r[n]['rates'] for r in rows], axis=0).tolist()
        result[f'chain{n}']['mses'] = np.mean([r[n]['mses'] for r in rows], axis=0).tolist()
        result[f'chain{n}']['widths'] = rows[0][n]['widths']
    for finding, _, _ in FINDINGS:
        result[finding] = cv.verdict([r[finding] for r in rows], checks)
    draw(cfg, result, folder)
    write_results(cfg.out, 'stages', result, report_lines(cfg, result))
    return result


def draw(cfg, result, folder):
    lengths = sorted(result['targets'])
    colours = dict(zip(lengths, ('tab:gray', 'tab:blue', 'tab:green', 'tab:orange')))

    def steps(ax):
        for n in lengths:
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
        values = [d for r in result['rows'] for n in lengths for d in r[n]['mses']] + targets
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
    lengths = sorted(result['targets'])
    lines = [f'# Two against {many} stages on {cfg.hps}', '',
             f'Each chain trained progressively, one run per stage, {cfg.steps} steps each (every '
             f'parameter updated {cfg.steps} times). Validation split, EMA weights; -ELBO in '
             f'nats/dim (bits in brackets); rates cumulative, nats/dim; MSE on the [-1, 1] scale. '
             + chains.metric_sentence(metric, rows[0][2]['n_samples'])
             + f'. Seeds {", ".join(map(str, cfg.seeds))}{", mean ± std" if n_seeds > 1 else ""}.',
             '',
             *table_head('chain', 'targets', 'widths', 'parameters', '-ELBO', metric,
                         'rate at lambda')]
    for n in lengths:
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
              *table_head('chain', *(f'stage {k}' for k in range(1, many + 1)))]
    for n in lengths:
        s = result[f'chain{n}']
        cells = [f'R {r:.4f}, D {d:.5f}' for r, d in zip(s['rates'], s['mses'])]
        lines.append(f'| {n} stages | ' + ' | '.join(cells + [''] * (many - n)) + ' |')
    if n_seeds > 1:
        lines += [''] + chains.seed_table(
            cfg.seeds, [(r[2], r[many]) for r in rows], (2, many),
            (('elbo', '-ELBO', 4), ('sample_metric', metric, 3),
             ('rate_at_lambda', 'rate at lambda', 4)))
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
              '', 'Convergence checks:', ''] + check_table(result['checks'])
    lines += ['', '![](staircase.png)', '']
    for n in lengths:
        lines += [f'Reconstructions by the {n}-stage chain (seed {cfg.seeds[0]}): the originals, '
                  'then the reconstruction after each stage (as measured in the staircase).', '',
                  f'![](reconstructions-{n}.png)',
                  '', f'Samples of the {n}-stage chain at t = 1 (seed {cfg.seeds[0]}): a row per '
                  'stage (x_hat_1, ..., then the sample) for one set of draws, then the same for '
                  'another.', '',
                  f'![](samples-{n}.png)', '']
    return lines


def run(cfg):
    H = check_inputs(cfg)
    chain_targets(cfg)
    check_sample_metric(cfg, H)
    run_all(cfg, plan(cfg))
    return report(cfg)


main = command(run, __doc__, add_arguments, ('sample',))


if __name__ == '__main__':
    raise SystemExit(main())
