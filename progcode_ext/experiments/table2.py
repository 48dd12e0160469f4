"""Table 2 across the rate-distortion family, its controls, and Figure 3: progressive coding
against conventional training of the same two-stage HVAE. One plan of the comparison of chains of
`chains.py` (its chains, its runs), with its own report:

progressive:  stage 1 lambda-optimal (`X_stage1`, `--steps`), frozen; stage 2 (`X_stage2`, `--steps`)
              on it, for every lambda of the family (first seed), and for every seed at the
              headline lambda;
conventional: both stages jointly by the ELBO (`X_conventional`, every seed; it does not depend on
              lambda). Trained for 2 x `--steps`: its checkpoint at `--steps` is the paper's
              baseline (every parameter updated as often as in the progressive model, A.4), its
              end the compute-matched control (as many updates as stage 1 and stage 2 together).

The controls (every seed; `--controls budget`: the first two, `all`: the four) ask whether the
baseline lost on its own objective for want of optimisation:
continued:    the trained progressive chain at the headline lambda, continued for `--steps` / 2
              by the joint ELBO (every stage) and, beside it, by its own objective (stage 2
              only): equal compute from the same point (`--init_from`);
compute_matched: above;
warmup:       conventional training whose loss lets stage 1's rate in over the first half of the
              run (`--stage1_rate_warmup`; then the joint -ELBO), so that stage 1 can take
              information before it is charged for it;
vdvae_wide:   one VDVAE (`X`, `--width` raised) with as many parameters as the two-stage model.

The strongest conventional baseline, by a rule fixed before any result: of the models trained to
the conventional objective (the ELBO: every model above but the progressive ones), the one with
the lowest mean -ELBO over the seeds, chosen without looking at samples. Both claims are judged
against it too, each baseline against the progressive model of the same starting point: the ELBO
continuation against the progressive continuation, every other against the headline chain.

The headline lambda is fixed by a rule before any Table 2 result: the smallest lambda of the
family whose stage 1 spends at most half the rate of the VDVAE of the same protocol (Table 1's,
first seed), so that stage 2 is left information to code (`--distortion_target` overrides it).
Wherever progressive stage 2 codes less than 10% of the two-stage rate, that lambda's claims are
"not testable here: stage 2 has nothing to code".

Measured with EMA weights: the -ELBO on the validation split (exact; twice with independent
posterior draws, their mean the score, their spread its noise), the rate of each stage, and the
sample metric at t = 1 (FID with Inception weights, `--fid_weights`, else - only with
`--allow_standin` - FD-<dataset> in the features of a classifier trained once and cached), twice
with independent samples likewise; once more at 6/10 and 8/10 of every run (the continuations:
also at 2/10 and 4/10). Verdicts follow `verdicts.py`.
Writes OUT/table2/{results.json, report.md, table2.png, samples-*.png}.
"""
import math
import os
import shlex

import numpy as np

from vdvae.hps import comma_list, setup_hparams

from . import chains
from . import convergence as cv
from .chains import check_sample_metric, differences
from .cli import check_inputs, command, number
from .evaluate import default_device, evaluate_run
from .figures import plot
from .rd_curve import PAPER_TARGETS, lambdas, stage1_name, stage1_run
from .report import check_table, mean_std, table_head, write_results
from .runs import COST, Run, run_all, run_dir, say, seeded, tenth, window
from .table1 import vdvae_run
from .verdicts import (RULE, Trajectory, claim_verdict, mean_noise, measured_spread,
                       pooled_noise_sd, spread_of, stated)

HEADLINE_RATE_SHARE = 0.5      # the headline's stage 1: R_1 <= this x the VDVAE's total rate
MIN_STAGE2_SHARE = 0.10        # below this share of the two-stage rate, stage 2 codes nothing
# The claims: progressive has the lower sample metric, conventional the lower -ELBO (key, sign)
CLAIMS = (('sample_metric', 1), ('elbo', -1))
SAMPLE_SEEDS = (1, 10_008)     # of the two independent sample draws (the first also on the way)
WINDOW = (6, 8, 10)            # the tenths of a run whose checkpoints judge settledness
ALONG = (2, 4) + WINDOW        # the continuations: measured along the whole way
CONTROLS = {'budget': ('continued', 'compute_matched'),
            'all': ('continued', 'compute_matched', 'warmup', 'vdvae_wide')}
# Every conventional-objective model, the progressive model it is judged against, and its words
BASELINES = {
    'conventional': ('progressive', "conventional (the paper's baseline: both stages jointly by "
                                    'the ELBO, the same steps)'),
    'compute_matched': ('progressive', 'conventional, compute-matched (2x the steps: as many '
                                       'updates as stage 1 and stage 2 together)'),
    'continued_elbo': ('continued_progressive', 'the progressive chain continued by the joint '
                                                'ELBO (its own continuation beside it)'),
    'warmup': ('progressive', "conventional with stage 1's rate warmed up over the first half"),
    'vdvae_wide': ('progressive', 'one VDVAE with as many parameters'),
}
WORDS = {'sample_metric': ('progressive has the better samples', 'the baseline has the better '
                           'samples'),
         'elbo': ('the baseline has the better -ELBO', 'progressive has the better -ELBO')}


def add_arguments(parser):
    parser.add_argument('--targets', type=comma_list(float), default=PAPER_TARGETS,
                        help='the lambda family: progressive stage 2 on the lambda-optimal stage 1 '
                             'of each (default: %(default)s)')
    parser.add_argument('--distortion_target', type=number(0.0, float, strict=True), default=None,
                        help='the headline lambda, for the seeds after the first (default: chosen '
                             'by the rule: the smallest lambda whose stage 1 spends at most half '
                             "the VDVAE's rate)")
    parser.add_argument('--stage2_family', choices=('all', 'headline'), default='all',
                        help='train progressive stage 2 on every lambda of the family (Table 2 '
                             'across lambda), or on the headline lambda alone (default: '
                             '%(default)s)')
    parser.add_argument('--controls', choices=tuple(CONTROLS), default='all',
                        help='budget: the continuation by either objective and the '
                             'compute-matched conventional model; all: also the warmed-up '
                             'conventional model and the parameter-matched VDVAE '
                             '(default: %(default)s)')


def family(cfg):
    """The lambdas of the family, largest first (with --distortion_target, when given)."""
    targets = set(lambdas(cfg))
    if getattr(cfg, 'distortion_target', None):
        targets.add(cfg.distortion_target)
    return sorted(targets, reverse=True)


def stage2_targets(cfg, headline):
    """The lambdas that get a progressive stage 2 (first seed): the family, or the headline."""
    return family(cfg) if getattr(cfg, 'stage2_family', 'all') == 'all' else [headline]


def controls(cfg):
    return CONTROLS[getattr(cfg, 'controls', 'all')]


def stage2_name(target, seed):
    return seeded(f'table2-stage2-{target:g}', seed)


def conventional_name(seed):
    return seeded('table2-conventional', seed)


def continued_name(objective, target, seed):
    return seeded(f'table2-continue-{objective}-{target:g}', seed)


def warmup_name(seed):
    return seeded('table2-conventional-warmup', seed)


def wide_name(seed):
    return seeded('table2-vdvae-wide', seed)


def progressive_chain(cfg, target, seed):
    """Stage 1 lambda-optimal for `target` (rd_curve's run), then stage 2 on it, frozen."""
    stage2 = Run(stage2_name(target, seed), f'{cfg.hps}_stage2', cfg.steps,
                 ('--seed', str(seed), '--distortion_target', str(target)), cost=COST['stage2'])
    return chains.progressive(cfg, [stage1_run(cfg, target, seed), stage2], '--stage1_path')


def parameters(cfg, preset, *flags):
    """Parameters of a preset's model with these flags, counted without allocating them."""
    import torch
    from vdvae.models import build_model
    H = setup_hparams(['--hps', preset, *shlex.split(cfg.train_flags), *flags])
    with torch.device('meta'):
        return sum(p.numel() for p in build_model(H).parameters())


def matched_width(cfg):
    """The VDVAE width whose parameter count is closest to the two-stage model's (the count grows
    with the width: the largest width at or below it, or the next)."""
    goal = parameters(cfg, f'{cfg.hps}_conventional')
    width = setup_hparams(['--hps', cfg.hps, *shlex.split(cfg.train_flags)]).width
    count = {}

    def n(w):
        if w not in count:
            count[w] = parameters(cfg, cfg.hps, '--width', str(w))
        return count[w]
    low, high = width, 4 * width
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if n(mid) <= goal else (low, mid - 1)
    return min((low, low + 1), key=lambda w: abs(n(w) - goal))


def rule_runs(cfg):
    """What the headline rule reads: the VDVAE (Table 1's run) and the stage-1 family, first seed."""
    first = cfg.seeds[0]
    return [vdvae_run(cfg, first)] + [stage1_run(cfg, t, first) for t in family(cfg)]


def control_runs(cfg, headline, seed):
    """The controls of one seed (`controls(cfg)`), after its headline chain where they start."""
    s1, s2 = (run_dir(cfg, n) for n in (stage1_name(headline, seed), stage2_name(headline, seed)))
    seed_flag = ('--seed', str(seed))
    half = max(1, cfg.steps // 2)
    runs = []
    if 'continued' in controls(cfg):
        after = (stage1_name(headline, seed), stage2_name(headline, seed))
        runs += [Run(continued_name('elbo', headline, seed), f'{cfg.hps}_conventional', half,
                     seed_flag + (f'--init_from={s2}',), after, cost=COST['conventional']),
                 Run(continued_name('progressive', headline, seed), f'{cfg.hps}_stage2', half,
                     seed_flag + ('--distortion_target', str(headline), f'--stage1_path={s1}',
                                  f'--init_from={s2}'), after, cost=COST['stage2'])]
    if 'warmup' in controls(cfg):
        runs.append(Run(warmup_name(seed), f'{cfg.hps}_conventional', cfg.steps,
                        seed_flag + ('--stage1_rate_warmup', str(half)),
                        cost=COST['conventional']))
    if 'vdvae_wide' in controls(cfg):
        runs.append(Run(wide_name(seed), cfg.hps, cfg.steps,
                        seed_flag + ('--width', str(matched_width(cfg))), cost=2 * COST['vdvae']))
    return runs


def plan(cfg, headline=None):
    """Everything but what depends on the headline lambda; with `headline`, that too."""
    first = cfg.seeds[0]
    runs = rule_runs(cfg)
    if getattr(cfg, 'stage2_family', 'all') == 'all':
        runs += [progressive_chain(cfg, target, first)[-1] for target in family(cfg)]
    # 2 x the steps, its checkpoints at the tenths of `--steps` (the baseline's window among them)
    runs += [Run(conventional_name(seed), f'{cfg.hps}_conventional', 2 * cfg.steps,
                 ('--seed', str(seed)), cost=COST['conventional'], ckpt_every=tenth(cfg.steps))
             for seed in cfg.seeds]
    if headline is not None:
        for seed in cfg.seeds:
            runs += progressive_chain(cfg, headline, seed) + control_runs(cfg, headline, seed)
    return runs


def choose_headline(cfg, device):
    """The headline lambda by the rule (see the module's docstring), and the numbers behind it."""
    first = cfg.seeds[0]
    vdvae_rate = evaluate_run(cfg, run_dir(cfg, vdvae_run(cfg, first).name), device)['rate']
    limit = HEADLINE_RATE_SHARE * vdvae_rate
    rates = {t: evaluate_run(cfg, run_dir(cfg, stage1_name(t, first)), device)['rate']
             for t in family(cfg)}
    eligible = [t for t, r in rates.items() if r <= limit]
    given = getattr(cfg, 'distortion_target', None)
    target = given or (min(eligible) if eligible else max(rates))
    rule = dict(vdvae_rate=vdvae_rate, limit=limit, eligible=eligible, headline=target,
                stage1_rates={f'{t:g}': r for t, r in rates.items()}, given=bool(given),
                met=rates[target] <= limit)
    say(f"table2: headline lambda {target:g} ({'given' if given else 'by the rule'}: R_1 "
        f"{rates[target]:.4f} vs half the VDVAE's rate {limit:.4f})")
    return target, rule


def path_point(row, tenth_):
    keys = ('step', 'elbo', 'sample_metric', 'rate_stage1', 'rate_stage2')
    return dict(tenth=tenth_, **{k: row[k] for k in keys})


def measure(cfg, device, name, checks, steps=None, tenths=WINDOW, grid_path=None):
    """Everything Table 2 reads of one model (a chain's last run, or a VDVAE) at step `steps`
    (None: its end), its convergence check added to `checks`: the -ELBO and the sample metric
    twice, independently (their means are its scores, their spreads the metrics' noise), and
    once at each checkpoint of `tenths` of those steps (`path`)."""
    folder = run_dir(cfg, name)
    prefix = f'iter-{steps}' if steps else 'latest'
    row, _, outputs = chains.measure(cfg, folder, device, SAMPLE_SEEDS[0], prefix)
    again, _, _ = chains.measure(cfg, folder, device, SAMPLE_SEEDS[1], prefix, eval_seed=1)
    total = row['step']
    path = []
    for k, step in window(total, tenths):
        if step == total:
            path.append(path_point(row, k))
        elif os.path.exists(os.path.join(folder, f'iter-{step}-model-ema.th')):   # (older runs
            path.append(path_point(chains.measure(cfg, folder, device, SAMPLE_SEEDS[0],  # lack some)
                                                  f'iter-{step}')[0], k))
    if grid_path:
        chains.sample_grid(outputs, 8, 3, grid_path)
    before = next((p for p in path if p['tenth'] == 8), path[0])
    row.update(run=name if not steps else f'{name}@{steps}', path=path,
               elbo_draws=[row['elbo'], again['elbo']], elbo=(row['elbo'] + again['elbo']) / 2,
               sample_metric_draws=[row['sample_metric'], again['sample_metric']],
               sample_metric=(row['sample_metric'] + again['sample_metric']) / 2,
               elbo_before=before['elbo'], sample_metric_before=before['sample_metric'],
               stage2_share=row['rate_stage2'] / (row['rate_stage1'] + row['rate_stage2']))
    say(f"table2: {row['run']}: -ELBO {row['elbo']:.4f} nats/dim, rates {row['rate_stage1']:.4f} "
        f"+ {row['rate_stage2']:.4f}, {row['metric']} {row['sample_metric']:.2f}")
    checks.append(cv.long_enough(row['run'], total))
    return row


def trajectory(pairs, key, sign, noise):
    """The mean paired difference over the seeds at each tenth of WINDOW (as fractions of the
    runs), with the noise of one such value."""
    def at(row, k):
        return next(p[key] for p in row['path'] if p['tenth'] == k)
    tenths = sorted(set(WINDOW).intersection(*[{p['tenth'] for p in r['path']}
                                               for pair in pairs for r in pair]))
    values = [float(np.mean([sign * (at(b, k) - at(a, k)) for a, b in pairs])) for k in tenths]
    return Trajectory([k / 10 for k in tenths], values,
                      math.sqrt(2) * noise.sd / math.sqrt(len(pairs)), 1.0)


def compare(cfg, comparison, pairs, noise, untestable=None, failed=()):
    """Both claims of Table 2 over (progressive, baseline) row pairs, one per seed."""
    out = {}
    for key, sign in CLAIMS:
        spread = measured_spread(cfg.hps, cfg.steps, f'table2/{comparison}/{key}',
                                 f'table2/conventional/{key}')
        out[key] = claim_verdict(differences(pairs, key, sign), mean_noise(noise[key]),
                                 trajectory(pairs, key, sign, noise[key]), failed, untestable,
                                 spread)
    return out


def untestable_reason(rows, rule=None):
    share = float(np.mean([r['stage2_share'] for r in rows]))
    if share < MIN_STAGE2_SHARE:
        return (f'stage 2 has nothing to code (it holds {share:.1%} of the two-stage rate, '
                f'< {MIN_STAGE2_SHARE:.0%})')
    if rule is not None and not rule['met']:
        return (f"stage 1 spends more than half the VDVAE's rate (R_1 "
                f"{rule['stage1_rates'][format(rule['headline'], 'g')]:.4f} > "
                f"{rule['limit']:.4f}): no lambda of the family meets the rule")
    return None


def strongest_baseline(models):
    """The rule fixed before any result: the conventional-objective model with the lowest mean
    -ELBO over the seeds (no sample is looked at)."""
    return min((k for k in BASELINES if k in models),
               key=lambda k: float(np.mean([r['elbo'] for r in models[k].values()])))


def report(cfg, headline=None, rule=None):
    device = default_device(cfg)
    if headline is None:
        headline, rule = choose_headline(cfg, device)
    folder = os.path.join(cfg.out, 'table2')
    os.makedirs(folder, exist_ok=True)
    first = cfg.seeds[0]
    checks = []

    def measured(name, seed, samples=None, **kwargs):   # (Figure 3 draws the first seed's)
        grid = os.path.join(folder, f'samples-{samples}.png') if samples and seed == first else None
        return measure(cfg, device, name, checks, grid_path=grid, **kwargs)
    models = {'conventional': {}, 'compute_matched': {}}
    for s in cfg.seeds:
        models['conventional'][s] = measured(conventional_name(s), s, 'conventional',
                                             steps=cfg.steps)
        models['compute_matched'][s] = measured(conventional_name(s), s, 'compute-matched')
    progressive = {}                       # (lambda, seed) -> row
    for target in stage2_targets(cfg, headline):
        for seed in (cfg.seeds if target == headline else [first]):
            stage1 = stage1_name(target, seed)
            stats1 = evaluate_run(cfg, run_dir(cfg, stage1), device)
            checks.append(cv.reaches_target(stage1, 'D', stats1['mse'], target))
            progressive[target, seed] = measured(stage2_name(target, seed), seed,
                                                 f'progressive-{target:g}')
    models['progressive'] = {s: progressive[headline, s] for s in cfg.seeds}
    for control, key, name, tenths in (
            ('continued', 'continued_elbo', lambda s: continued_name('elbo', headline, s), ALONG),
            ('continued', 'continued_progressive',
             lambda s: continued_name('progressive', headline, s), ALONG),
            ('warmup', 'warmup', warmup_name, WINDOW),
            ('vdvae_wide', 'vdvae_wide', wide_name, WINDOW)):
        if control in controls(cfg):
            models[key] = {s: measured(name(s), s, key.replace('_', '-'), tenths=tenths)
                           for s in cfg.seeds}
    rows = [r for by_seed in models.values() for r in by_seed.values()] + \
        [progressive[t, first] for t in stage2_targets(cfg, headline) if t != headline]
    noise = {key: pooled_noise_sd([r[f'{key}_draws'] for r in rows]) for key, _ in CLAIMS}

    def verdicts(comparison, reference, baseline, seeds=cfg.seeds, reason=None):
        pairs = [(reference[s], baseline[s]) for s in seeds]
        runs = [r['run'] for pair in pairs for r in pair]
        stage1s = [stage1_name(headline, s) for s in seeds]
        return compare(cfg, comparison, pairs, noise,
                       reason if reason is not None else
                       untestable_reason([p for p, _ in pairs], rule),
                       cv.failure_lines(checks, runs + stage1s))
    per_lambda = []
    baseline = models['conventional'][first]
    for target in stage2_targets(cfg, headline):
        p = progressive[target, first]
        failed = cv.failure_lines(checks, (p['run'], baseline['run'], stage1_name(target, first)))
        per_lambda.append(dict(target=target, headline=target == headline, progressive=p,
                               verdicts=compare(cfg, 'conventional', [(p, baseline)], noise,
                                                untestable_reason([p]), failed)))
    comparisons = {}
    for key in BASELINES:
        if key in models:
            comparisons[key] = verdicts(key, models[BASELINES[key][0]], models[key])
    strongest = strongest_baseline(models)
    comparisons['strongest'] = comparisons[strongest]
    assert models['conventional'][first]['parameters'] == \
        models['progressive'][first]['parameters'], 'the two trainings must have the same networks'
    result = dict(dataset=cfg.hps, seeds=cfg.seeds, metric=models['conventional'][first]['metric'],
                  headline=headline, rule=rule, per_lambda=per_lambda,
                  conventional=[models['conventional'][s] for s in cfg.seeds],
                  headline_progressive=[models['progressive'][s] for s in cfg.seeds],
                  models={k: [v[s] for s in cfg.seeds] for k, v in models.items()},
                  comparisons=comparisons, strongest=strongest,
                  verdicts=comparisons['conventional'], noise={k: v.sd for k, v in noise.items()},
                  noise_df={k: v.df for k, v in noise.items()}, checks=checks,
                  parameters=models['conventional'][first]['parameters'],
                  min_stage2_share=MIN_STAGE2_SHARE, headline_rate_share=HEADLINE_RATE_SHARE,
                  controls=list(controls(cfg)),
                  spreads={f'table2/{name}/{key}': spread_of(v)
                           for name, by_key in comparisons.items() if name != 'strongest'
                           for key, v in by_key.items() if spread_of(v)})
    draw(cfg, result, folder)
    write_results(cfg.out, 'table2', result, report_lines(cfg, result))
    return result


def draw(cfg, result, folder):
    """The sample metric and the -ELBO against stage 1's rate R_1: the progressive family (first
    seed), the headline over its seeds, the conventional models as horizontal lines (mean over
    seeds; equal steps and compute-matched), the other controls as points, and the two
    continuations of the headline chain as paths from where they started."""
    per, models, n = result['per_lambda'], result['models'], len(result['seeds'])

    def mean(rows, key):
        return float(np.mean([r[key] for r in rows]))

    def panel(ax, key, label):
        for name, style in (('conventional', '-'), ('compute_matched', '--')):
            values = [r[key] for r in models[name]]
            ax.axhline(np.mean(values), color='tab:gray', ls=style, lw=1.5,
                       label=f"{BASELINES[name][1].split(' (')[0]} ({n} seed{'s' * (n > 1)})")
            if n > 1:
                sd = float(np.std(values, ddof=1))
                ax.axhspan(np.mean(values) - sd, np.mean(values) + sd, color='tab:gray',
                           alpha=0.1)
        rates = [x['progressive']['rate_stage1'] for x in per]
        ys = [x['progressive'][key] for x in per]
        ax.plot(rates, ys, 'o-', color='tab:blue', label=f"progressive (seed {result['seeds'][0]})")
        for x in per:           # hollow: a lambda that cannot test the claim
            p, verdict = x['progressive'], x['verdicts'][key].verdict
            why = ('untestable' if verdict.startswith('not testable') else
                   'inconclusive' if verdict == 'inconclusive' else '')
            ax.annotate(f"{x['target']:g}" + (f' ({why})' if why else ''),
                        (p['rate_stage1'], p[key]), textcoords='offset points', xytext=(4, 4),
                        fontsize=7)
            if why:
                ax.plot([p['rate_stage1']], [p[key]], 'o', mfc='white', color='tab:blue')
        heads = models['progressive']
        if n > 1:
            ax.errorbar([mean(heads, 'rate_stage1')], [mean(heads, key)],
                        yerr=[np.std([r[key] for r in heads], ddof=1)], fmt='s', color='tab:red',
                        capsize=5, label=f"headline lambda {result['headline']:g}, {n} seeds")
        for name, marker, color in (('warmup', 'D', 'tab:purple'), ('vdvae_wide', '^', 'tab:brown')):
            if name in models:
                ax.plot([mean(models[name], 'rate_stage1')], [mean(models[name], key)], marker,
                        color=color, label=BASELINES[name][1])
        for name, color, what in (('continued_progressive', 'tab:cyan', 'continued: progressive'),
                                  ('continued_elbo', 'tab:orange', 'continued: joint ELBO')):
            if name in models:
                start = [(mean(heads, 'rate_stage1'), mean(heads, key))]
                path = start + [(np.mean([r['path'][i]['rate_stage1'] for r in models[name]]),
                                 np.mean([r['path'][i][key] for r in models[name]]))
                                for i in range(len(models[name][0]['path']))]
                ax.plot(*zip(*path), '.-', color=color, lw=1, label=what + ' (from the headline)')
                ax.annotate('', path[-1], path[-2], arrowprops=dict(arrowstyle='->', color=color))
        ax.set_xlabel('stage-1 rate R_1 (nats/dim); labels: lambda')
        ax.set_ylabel(label)
        ax.legend(fontsize=6)
    plot(os.path.join(folder, 'table2.png'), lambda axes: (
        panel(axes[0], 'sample_metric', f"{result['metric']} at t = 1 (lower is better)"),
        panel(axes[1], 'elbo', '-ELBO, nats/dim (lower is better)')), panels=2)


def verdict_text(v, key):
    return f'**{stated(v, *WORDS[key])}** ({v.detail})'


def across_lambda_table(result):
    """Markdown rows: per lambda of the family, the rates, -ELBO, sample metric and verdicts
    against the paper's baseline, then every conventional-objective model (mean over seeds)."""
    metric, per, models = result['metric'], result['per_lambda'], result['models']

    def row(name, rows, verdicts=()):
        def m(key, digits):
            return mean_std([r[key] for r in rows], digits)
        return (f"| {name} | {m('rate_stage1', 4)} | {m('rate_stage2', 4)} | "
                f"{np.mean([r['stage2_share'] for r in rows]):.1%} | {m('elbo', 4)} | "
                f"{m('sample_metric', 2)} | "
                + (' | '.join(verdicts) + ' |' if verdicts else '| |'))
    lines = table_head('model', 'R_1', 'R_2', 'stage-2 share', '-ELBO', metric,
                       'samples: progressive better?', 'ELBO: conventional better?')
    for x in per:       # the headline over every seed, with its verdicts over them
        rows, verdicts = (models['progressive'], result['comparisons']['conventional']) \
            if x['headline'] else ([x['progressive']], x['verdicts'])
        lines.append(row(f"progressive, lambda {x['target']:g}" + ' (headline)' * x['headline'],
                         rows, [stated(verdicts[k], *WORDS[k]) for k, _ in CLAIMS]))
    for key in ('continued_progressive', *BASELINES):
        if key in models:
            label = ('the progressive chain continued by its own objective' if key == 
                     'continued_progressive' else BASELINES[key][1])
            lines.append(row(label + ' (the strongest baseline)' * (key == result['strongest']),
                             models[key]))
    return lines


def comparison_table(result):
    """Markdown rows: each conventional-objective model against its progressive reference, both
    claims, over the seeds."""
    lines = table_head('baseline', 'judged against', 'samples: progressive better?',
                       'ELBO: baseline better?')
    for key, verdicts in result['comparisons'].items():
        if key == 'strongest':
            continue
        ref = BASELINES[key][0].replace('_', ' ')
        lines.append(f"| {BASELINES[key][1]}{' **(strongest)**' * (key == result['strongest'])} "
                     f"| {ref} | {stated(verdicts['sample_metric'], *WORDS['sample_metric'])} | "
                     f"{stated(verdicts['elbo'], *WORDS['elbo'])} |")
    return lines


def path_table(result):
    """Markdown rows: the two continuations along the way (mean over seeds)."""
    models, metric = result['models'], result['metric']
    if 'continued_elbo' not in models:
        return []
    heads = models['progressive']
    lines = [*table_head('continued by', 'step', 'R_1', 'R_2', '-ELBO', metric),
             "| (start: the headline chain) | 0 | "
             + ' | '.join(mean_std([r[k] for r in heads], d) for k, d in
                          (('rate_stage1', 4), ('rate_stage2', 4), ('elbo', 4),
                           ('sample_metric', 2))) + ' |']
    for key, label in (('continued_elbo', 'the joint ELBO'),
                       ('continued_progressive', 'its own objective')):
        for i, point in enumerate(models[key][0]['path']):
            vals = [[r['path'][i][k] for r in models[key]] for k in
                    ('rate_stage1', 'rate_stage2', 'elbo', 'sample_metric')]
            lines.append(f"| {label} | {point['step']} | " + ' | '.join(
                mean_std(v, d) for v, d in zip(vals, (4, 4, 4, 2))) + ' |')
    return lines


def report_lines(cfg, result):
    metric, models, per = result['metric'], result['models'], result['per_lambda']
    conv = models['conventional']
    n = len(conv)
    rule, noise = result['rule'], result['noise']
    strongest = result['strongest']
    lines = [f'# Table 2 across the rate-distortion family on {cfg.hps}, with controls', '',
             'Negative ELBO per dimension on the validation split (EMA weights; nats; the paper '
             'reports ELBO with the opposite sign), the mean of two independent posterior draws. '
             + chains.metric_sentence(metric, conv[0]['n_samples'])
             + f', the mean of two independent draws. Both trainings have '
             f'{result["parameters"]:,} parameters; each stage trains {cfg.steps} steps.', '',
             '## The headline lambda, fixed before any Table 2 result', '',
             f"Rule: the smallest lambda whose stage 1 spends at most {HEADLINE_RATE_SHARE:.0%} of "
             f"the rate of the VDVAE of the same protocol (Table 1's, seed {cfg.seeds[0]}: "
             f"{rule['vdvae_rate']:.4f} nats/dim, so R_1 <= {rule['limit']:.4f}), so that stage 2 is "
             'left information to code. Stage-1 rates: '
             + ', '.join(f'lambda {t}: {r:.4f}' for t, r in rule['stage1_rates'].items())
             + f". Headline: **lambda = {result['headline']:g}**"
             + (' (given by --distortion_target)' if rule['given'] else '')
             + ('' if rule['met'] else ' — **no lambda meets the rule**') + '.', '',
             f"A lambda whose progressive stage 2 holds less than {MIN_STAGE2_SHARE:.0%} of the "
             'two-stage rate is "not testable here: stage 2 has nothing to code".', '',
             '## The strongest conventional baseline, by a rule fixed before any result', '',
             'Of the models trained to the conventional objective (the ELBO), the one with the '
             'lowest mean -ELBO over the seeds, chosen without looking at samples: '
             f'**{BASELINES[strongest][1]}** (-ELBO '
             f"{mean_std([r['elbo'] for r in models[strongest]], 4)}), judged against "
             f"{BASELINES[strongest][0].replace('_', ' ')}.", '',
             f"Claim: progressive better than the strongest baseline on {metric}: "
             + verdict_text(result['comparisons']['strongest']['sample_metric'], 'sample_metric')
             + '.', '',
             'Claim: the strongest baseline has the better ELBO (the paper: slightly): '
             + verdict_text(result['comparisons']['strongest']['elbo'], 'elbo') + '.', '',
             "## Every model (mean ± std over the seeds; the family's other lambdas: seed "
             f'{cfg.seeds[0]}; verdicts against the paper\'s baseline)', '']
    lines += across_lambda_table(result)
    lines += ['', f"## Each baseline against its progressive reference ({n} "
              f"seed{'s' * (n > 1)})", ''] + comparison_table(result)
    v = result['comparisons']['conventional']
    lines += ['', "Against the paper's baseline, in full: samples "
              + verdict_text(v['sample_metric'], 'sample_metric') + '; ELBO '
              + verdict_text(v['elbo'], 'elbo') + '.']
    if n > 1:
        lines += [''] + chains.seed_table(
            cfg.seeds, zip(conv, models['progressive']), ('conventional', 'progressive'),
            (('elbo', '-ELBO', 4), ('sample_metric', metric, 2)))
    path = path_table(result)
    if path:
        lines += ['', '## The headline chain continued by either objective (equal compute from '
                  'the same point; mean over the seeds)', '',
                  "The paper's thesis predicts that the joint ELBO improves the -ELBO and makes "
                  'the samples worse, by moving bits out of stage 1.', ''] + path
    lines += ['', "## The metrics' own noise", '',
              f"Every model scored twice, independently: one {metric} draw has a standard "
              f"deviation of {noise['sample_metric']:.2f}, one -ELBO draw {noise['elbo']:.5f} "
              f"nats/dim (pooled over {result['noise_df']['elbo']} models); a score is the mean "
              'of two. ' + RULE, '',
              'How much each model still moved over its last fifth (its checkpoint at 4/5 of the '
              'run against its end; at 4/5 from one draw):', '',
              *table_head('run', '-ELBO at 4/5 -> end', f'{metric} at 4/5 -> end')]
    seen = set()
    for rows in [*models.values(), [x['progressive'] for x in per]]:
        for r in rows:
            if r['run'] not in seen:
                seen.add(r['run'])
                lines.append(f"| {r['run']} | {r['elbo_before']:.4f} -> {r['elbo']:.4f} "
                             f"({r['elbo'] / r['elbo_before'] - 1:+.2%}) | "
                             f"{r['sample_metric_before']:.2f} -> {r['sample_metric']:.2f} |")
    lines += ['', 'Convergence checks:', ''] + check_table(result['checks'])
    lines += ['', 'Paper (FID, conventional vs progressive): SVHN 18.92 vs 10.07, CelebA 13.33 vs '
              '8.54, LSUN 40.71 vs 36.87.', '', '![](table2.png)', '',
              f'Samples (Figure 3, seed {cfg.seeds[0]}): rows of stage-1 x_hat, each followed by '
              'the row of stage-2 samples drawn given it (one row: a single VDVAE).']
    grids = [('conventional', 'conventional', 'conventional'),
             ('compute-matched', 'compute_matched', 'compute_matched')]
    grids += [(k.replace('_', '-'), k, k) for k in ('continued_elbo', 'continued_progressive',
                                                     'warmup', 'vdvae_wide') if k in models]
    for file, key, _ in grids:
        label = ('continued by its own objective' if key == 'continued_progressive'
                 else BASELINES[key][1])
        lines += ['', f"{label[0].upper() + label[1:]} (stage-1 rate "
                  f"{models[key][0]['rate_stage1']:.4f}):", '', f'![](samples-{file}.png)']
    for x in per:
        lines += ['', f"Progressive at lambda = {x['target']:g} (stage-1 rate "
                  f"{x['progressive']['rate_stage1']:.4f}):", '',
                  f"![](samples-progressive-{x['target']:g}.png)"]
    return lines


def train(cfg, other_runs=()):
    """Train everything in one pass (with `other_runs`, e.g. the other experiments' in the demo,
    side by side): the headline is chosen as soon as the runs its rule reads have finished, and
    what depends on it joins the runs still training. Returns (headline, rule)."""
    chosen = []

    def headline_runs():
        chosen.extend(choose_headline(cfg, default_device(cfg)))
        return plan(cfg, chosen[0])
    run_all(cfg, list(other_runs) + plan(cfg), ([r.name for r in rule_runs(cfg)], headline_runs))
    return tuple(chosen) if chosen else choose_headline(cfg, default_device(cfg))


def run(cfg):
    family(cfg)
    check_sample_metric(cfg, check_inputs(cfg))
    return report(cfg, *train(cfg))


main = command(run, __doc__, add_arguments, ('sample',))


if __name__ == '__main__':
    raise SystemExit(main())
