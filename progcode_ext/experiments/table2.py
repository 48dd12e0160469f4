"""Table 2 across the rate-distortion family, and Figure 3: progressive coding against conventional
training of the same two-stage HVAE, at equal steps and parameters, for every lambda-optimal stage 1
of the family (`--targets`, the one Figure 2 trains). One plan of the comparison of chains of
`chains.py` (its chains, its runs), with its own report:

progressive:  stage 1 lambda-optimal (`X_stage1`, `--steps`), frozen; stage 2 (`X_stage2`, `--steps`)
              on it, for every lambda of the family (first seed), and for every seed at the
              headline lambda;
conventional: both stages jointly by the ELBO (`X_conventional`, `--steps`, every seed). It does not
              depend on lambda: one model per seed, compared with every lambda. Every parameter is
              updated `--steps` times in both, as in A.4;
conventional from stage 1 (not the paper's baseline; first seed): the same, with stage 1 started
              from the headline lambda-optimal stage 1 (`--stage1_init`): is the baseline's
              unused stage 1 a local optimum?

The headline lambda is fixed by a rule before any Table 2 result: the smallest lambda of the
family whose stage 1 spends at most half the rate of the VDVAE of the same protocol (Table 1's,
first seed), so that stage 2 is left information to code (`--distortion_target` overrides it).
Wherever progressive stage 2 codes less than 10% of the two-stage rate, that lambda's claims are
"not testable here: stage 2 has nothing to code".

Measured with EMA weights: the -ELBO on the validation split (exact, twice with independent
posterior draws: its own noise), the rate of each stage, and the sample metric at t = 1 (FID with
Inception weights, `--fid_weights`, else - only with `--allow_standin` - FD-<dataset> in the
features of a classifier trained once and cached), each model scored twice with independent
samples (their mean is its score; their spread the metric's noise) and once at 4/5 of its run.
Verdicts follow `verdicts.py`: a paired t-test over >= 3 seeds at the headline lambda, the
metric's noise for one seed, and the difference settled: over the last fifth of the runs it
shrank toward zero by less than half itself (how much each model moved is reported beside it).
Writes OUT/table2/{results.json, report.md, table2.png, samples-*.png}.
"""
import math
import os

import numpy as np

from vdvae.hps import comma_list

from . import chains
from . import convergence as cv
from .chains import check_sample_metric, differences
from .cli import check_inputs, command, number
from .evaluate import default_device, evaluate_run
from .figures import plot
from .rd_curve import PAPER_TARGETS, lambdas, stage1_name, stage1_run
from .report import check_table, mean_std, write_results
from .runs import COST, Run, last_fifth_step, run_all, run_dir, say, seeded
from .table1 import vdvae_run
from .verdicts import RULE, claim_verdict, pooled_noise_sd

HEADLINE_RATE_SHARE = 0.5      # the headline's stage 1: R_1 <= this x the VDVAE's total rate
MIN_STAGE2_SHARE = 0.10        # below this share of the two-stage rate, stage 2 codes nothing
# The claims: progressive has the lower sample metric, conventional the lower -ELBO (key, sign)
CLAIMS = (('sample_metric', 1), ('elbo', -1))
SAMPLE_SEEDS = (1, 10_008)     # of the two independent sample draws (the first also at 4/5)


def add_arguments(parser):
    parser.add_argument('--targets', type=comma_list(float), default=PAPER_TARGETS,
                        help='the lambda family: progressive stage 2 on the lambda-optimal stage 1 '
                             'of each (default: %(default)s)')
    parser.add_argument('--distortion_target', type=number(0.0, float, strict=True), default=None,
                        help='the headline lambda, for the seeds after the first (default: chosen '
                             'by the rule: the smallest lambda whose stage 1 spends at most half '
                             "the VDVAE's rate)")


def family(cfg):
    """The lambdas of the family, largest first (with --distortion_target, when given)."""
    targets = set(lambdas(cfg))
    if getattr(cfg, 'distortion_target', None):
        targets.add(cfg.distortion_target)
    return sorted(targets, reverse=True)


def stage2_name(target, seed):
    return seeded(f'table2-stage2-{target:g}', seed)


def conventional_name(seed):
    return seeded('table2-conventional', seed)


def initialised_name(target, seed):
    return seeded(f'table2-conventional-init{target:g}', seed)


def progressive_chain(cfg, target, seed):
    """Stage 1 lambda-optimal for `target` (rd_curve's run), then stage 2 on it, frozen."""
    stage2 = Run(stage2_name(target, seed), f'{cfg.hps}_stage2', cfg.steps,
                 ('--seed', str(seed), '--distortion_target', str(target)), cost=COST['stage2'])
    return chains.progressive(cfg, [stage1_run(cfg, target, seed), stage2], '--stage1_path')


def rule_runs(cfg):
    """What the headline rule reads: the VDVAE (Table 1's run) and the stage-1 family, first seed."""
    first = cfg.seeds[0]
    return [vdvae_run(cfg, first)] + [stage1_run(cfg, t, first) for t in family(cfg)]


def plan(cfg, headline=None):
    """Everything but what depends on the headline lambda; with `headline`, that too."""
    first = cfg.seeds[0]
    runs = rule_runs(cfg)
    runs += [progressive_chain(cfg, target, first)[-1] for target in family(cfg)]
    runs += [Run(conventional_name(seed), f'{cfg.hps}_conventional', cfg.steps,
                 ('--seed', str(seed)), cost=COST['conventional']) for seed in cfg.seeds]
    if headline is not None:
        for seed in cfg.seeds[1:]:
            runs += progressive_chain(cfg, headline, seed)
        stage1 = stage1_name(headline, first)
        runs.append(Run(initialised_name(headline, first), f'{cfg.hps}_conventional', cfg.steps,
                        ('--seed', str(first), f'--stage1_init={run_dir(cfg, stage1)}'),
                        (stage1,), cost=COST['conventional']))
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


def measure(cfg, device, name, checks, grid_path=None):
    """Everything Table 2 reads of one two-stage chain (its last run), its convergence check added
    to `checks`: each number measured twice, independently (the metric's own noise), and at 4/5
    of the run."""
    folder = run_dir(cfg, name)
    row, _, outputs = chains.measure(cfg, folder, device, SAMPLE_SEEDS[0])
    again, _, _ = chains.measure(cfg, folder, device, SAMPLE_SEEDS[1], eval_seed=1)
    before, _, _ = chains.measure(cfg, folder, device, SAMPLE_SEEDS[0],
                                  f'iter-{last_fifth_step(row["step"])}')
    if grid_path:
        chains.sample_grid(outputs, 8, 3, grid_path)
    first, second = row['sample_metric'], again['sample_metric']
    row.update(elbo_draws=[row['elbo'], again['elbo']], elbo_before=before['elbo'],
               sample_metric=(first + second) / 2, sample_metric_draws=[first, second],
               sample_metric_before=before['sample_metric'],
               stage2_share=row['rate_stage2'] / (row['rate_stage1'] + row['rate_stage2']))
    say(f"table2: {name}: -ELBO {row['elbo']:.4f} nats/dim, rates {row['rate_stage1']:.4f} + "
        f"{row['rate_stage2']:.4f}, {row['metric']} {row['sample_metric']:.2f} ({first:.2f}, "
        f"{second:.2f})")
    checks.append(cv.long_enough(name, row['step']))
    return row


def compare(pairs, noise, untestable=None, failed=()):
    """Both claims of Table 2 over (progressive, conventional) row pairs, one per seed."""
    return {key: claim_verdict(differences(pairs, key, sign), noise[key],
                               differences(pairs, key + '_before', sign), failed, untestable)
            for key, sign in CLAIMS}


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


def report(cfg, headline=None, rule=None):
    device = default_device(cfg)
    if headline is None:
        headline, rule = choose_headline(cfg, device)
    folder = os.path.join(cfg.out, 'table2')
    os.makedirs(folder, exist_ok=True)
    first = cfg.seeds[0]
    checks = []

    def measured(name, seed, samples):        # (Figure 3 draws the first seed's samples)
        grid_path = os.path.join(folder, f'samples-{samples}.png') if seed == first else None
        return measure(cfg, device, name, checks, grid_path)
    conventional = {s: measured(conventional_name(s), s, 'conventional') for s in cfg.seeds}
    progressive = {}                       # (lambda, seed) -> row
    for target in family(cfg):
        for seed in (cfg.seeds if target == headline else [first]):
            stage1 = stage1_name(target, seed)
            stats1 = evaluate_run(cfg, run_dir(cfg, stage1), device)
            checks.append(cv.reaches_target(stage1, 'D', stats1['mse'], target))
            progressive[target, seed] = measured(stage2_name(target, seed), seed,
                                                 f'progressive-{target:g}')
    initialised = measured(initialised_name(headline, first), first, 'conventional-init')
    rows = [r for r in conventional.values()] + list(progressive.values()) + [initialised]
    noise = {key: pooled_noise_sd([r[f'{key}_draws'] for r in rows]) for key, _ in CLAIMS}
    # A score is the mean of two draws: its noise is the single draw's / sqrt(2).
    noise_of_mean = {key: sd / math.sqrt(2) for key, sd in noise.items()}
    per_lambda = []
    for target in family(cfg):
        p, c = progressive[target, first], conventional[first]
        failed = cv.failure_lines(checks, (p['run'], c['run'], stage1_name(target, first)))
        verdicts = compare([(p, c)], noise_of_mean, untestable_reason([p]), failed)
        per_lambda.append(dict(target=target, headline=target == headline, progressive=p,
                               verdicts=verdicts))
    pairs = [(progressive[headline, s], conventional[s]) for s in cfg.seeds]
    failed = cv.failure_lines(checks, [r['run'] for pair in pairs for r in pair]
                              + [stage1_name(headline, s) for s in cfg.seeds])
    headline_verdicts = compare(pairs, noise_of_mean,
                                untestable_reason([p for p, _ in pairs], rule), failed)
    metric = conventional[first]['metric']
    assert conventional[first]['parameters'] == progressive[headline, first]['parameters'], \
        'the two trainings must have the same networks'
    result = dict(dataset=cfg.hps, seeds=cfg.seeds, metric=metric, headline=headline, rule=rule,
                  per_lambda=per_lambda, conventional=[conventional[s] for s in cfg.seeds],
                  headline_progressive=[progressive[headline, s] for s in cfg.seeds],
                  conventional_from_stage1=initialised, verdicts=headline_verdicts,
                  noise=noise, checks=checks, parameters=conventional[first]['parameters'],
                  min_stage2_share=MIN_STAGE2_SHARE, headline_rate_share=HEADLINE_RATE_SHARE)
    draw(cfg, result, folder)
    write_results(cfg.out, 'table2', result, report_lines(cfg, result))
    return result


def draw(cfg, result, folder):
    """The sample metric and the -ELBO against stage 1's rate R_1 across the family, with the
    conventional model as a horizontal line (its mean over seeds, +- its standard deviation)."""
    conv = result['conventional']
    per = result['per_lambda']
    n = len(conv)

    def panel(ax, key, label):
        values = [r[key] for r in conv]
        mean = float(np.mean(values))
        ax.axhline(mean, color='tab:gray', lw=1.5,
                   label=f'conventional ({n} seed{"s" * (n > 1)})')
        if n > 1:
            sd = float(np.std(values, ddof=1))
            ax.axhspan(mean - sd, mean + sd, color='tab:gray', alpha=0.15)
        rates = [x['progressive']['rate_stage1'] for x in per]
        ys = [x['progressive'][key] for x in per]
        ax.plot(rates, ys, 'o-', color='tab:blue', label=f'progressive (seed {cfg.seeds[0]})')
        for x in per:           # hollow: a lambda that cannot test the claim
            p, verdict = x['progressive'], x['verdicts'][key].verdict
            why = ('untestable' if verdict.startswith('not testable') else
                   'inconclusive' if verdict == 'inconclusive' else '')
            ax.annotate(f"{x['target']:g}" + (f' ({why})' if why else ''),
                        (p['rate_stage1'], p[key]), textcoords='offset points', xytext=(4, 4),
                        fontsize=7)
            if why:
                ax.plot([p['rate_stage1']], [p[key]], 'o', mfc='white', color='tab:blue')
        heads = result['headline_progressive']
        if len(heads) > 1:
            hx = [r['rate_stage1'] for r in heads]
            hy = [r[key] for r in heads]
            ax.errorbar([np.mean(hx)], [np.mean(hy)], yerr=[np.std(hy, ddof=1)], fmt='s',
                        color='tab:red', capsize=5,
                        label=f"headline lambda {result['headline']:g}, {len(heads)} seeds")
        ax.set_xlabel('stage-1 rate R_1 (nats/dim); labels: lambda')
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    plot(os.path.join(folder, 'table2.png'), lambda axes: (
        panel(axes[0], 'sample_metric', f"{result['metric']} at t = 1 (lower is better)"),
        panel(axes[1], 'elbo', '-ELBO, nats/dim (lower is better)')), panels=2)


def verdict_text(v):
    return f'**{v.verdict}** ({v.detail})'


def across_lambda_table(result):
    """Markdown rows: per lambda of the family, the rates, -ELBO, sample metric and verdicts,
    then the conventional model and the one started from stage 1."""
    metric, per, conv = result['metric'], result['per_lambda'], result['conventional']

    def row(name, r, verdicts=()):
        return (f"| {name} | {r['rate_stage1']:.4f} | {r['rate_stage2']:.4f} | "
                f"{r['stage2_share']:.1%} | {r['elbo']:.4f} | {r['sample_metric']:.2f} | "
                + (' | '.join(verdicts) + ' |' if verdicts else '| |'))
    return ([f'| lambda | R_1 | R_2 | stage-2 share | -ELBO | {metric} | samples: progressive '
             'better? | ELBO: conventional better? |', '|---|---|---|---|---|---|---|---|']
            + [row(f"{x['target']:g}" + ' (headline)' * x['headline'], x['progressive'],
                   [x['verdicts'][k].verdict for k in ('sample_metric', 'elbo')]) for x in per]
            + [row('conventional', conv[0]),
               row(f"conventional from stage 1 at {result['headline']:g} (not the paper's "
                   'baseline)', result['conventional_from_stage1'])])


def report_lines(cfg, result):
    metric, conv, per = result['metric'], result['conventional'], result['per_lambda']
    n = len(conv)
    rule, noise = result['rule'], result['noise']
    lines = [f'# Table 2 across the rate-distortion family on {cfg.hps}', '',
             'Negative ELBO per dimension on the validation split (EMA weights; nats; the paper '
             'reports ELBO with the opposite sign). '
             + chains.metric_sentence(metric, conv[0]['n_samples'])
             + f', the mean of two independent draws. Both trainings have '
             f'{result["parameters"]:,} parameters and {conv[0]["step"]} steps.', '',
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
             '## Across lambda (progressive: seed ' f'{cfg.seeds[0]}; conventional: the same seed)',
             ''] + across_lambda_table(result) + ['',
              'One seed per lambda: a verdict rests on the metric\'s measurement noise, not on '
              'the spread between seeds (see below).', '',
              f"## At the headline lambda = {result['headline']:g} ({n} seed{'s' * (n > 1)})", '',
              f'| training | -ELBO | {metric} | stage-1 rate | stage-2 rate | stage-1 MSE |',
              '|---|---|---|---|---|---|']
    for name, rows in (('conventional', conv), ('progressive', result['headline_progressive'])):
        lines.append(f"| {name} | {mean_std([r['elbo'] for r in rows], 4)} | "
                     f"{mean_std([r['sample_metric'] for r in rows], 2)} | "
                     f"{mean_std([r['rate_stage1'] for r in rows], 4)} | "
                     f"{mean_std([r['rate_stage2'] for r in rows], 4)} | "
                     f"{mean_std([r['mse_stage1'] for r in rows], 5)} |")
    if n > 1:
        lines += [''] + chains.seed_table(cfg.seeds, zip(conv, result['headline_progressive']),
                                          ('conventional', 'progressive'),
                                          (('elbo', '-ELBO', 4), ('sample_metric', metric, 2)))
    v = result['verdicts']
    lines += ['', f"Claim: progressive better than conventional on {metric}: "
              + verdict_text(v['sample_metric']) + '.',
              'Claim: conventional has the better ELBO (the paper: slightly): '
              + verdict_text(v['elbo']) + '.', '',
              '## The metric\'s own noise', '',
              f"Every model scored twice with independent samples: one {metric} score has a "
              f"standard deviation of {noise['sample_metric']:.2f}; the -ELBO evaluated twice with "
              f"independent posterior draws: {noise['elbo']:.5f} nats/dim (pooled over "
              f"{len(conv) + len(result['headline_progressive']) + len(per)} models). " + RULE,
              '',
              'How much each model still moved over its last fifth (its checkpoint at 4/5 of the '
              'run against its end; the sample metric at 4/5 from one draw):', '',
              f'| run | -ELBO at 4/5 -> end | {metric} at 4/5 -> end |', '|---|---|---|']
    for r in [*conv, *[x['progressive'] for x in per], *result['headline_progressive'][1:],
              result['conventional_from_stage1']]:
        lines.append(f"| {r['run']} | {r['elbo_before']:.4f} -> {r['elbo']:.4f} "
                     f"({r['elbo'] / r['elbo_before'] - 1:+.2%}) | {r['sample_metric_before']:.2f} "
                     f"-> {r['sample_metric']:.2f} |")
    lines += ['', 'Convergence checks:', ''] + check_table(result['checks'])
    c0, i0 = conv[0], result['conventional_from_stage1']
    lines += ['', 'Paper (FID, conventional vs progressive): SVHN 18.92 vs 10.07, CelebA 13.33 vs '
              '8.54, LSUN 40.71 vs 36.87.', '', '![](table2.png)', '',
              f'Samples (Figure 3, seed {cfg.seeds[0]}): rows of stage-1 x_hat, each followed by '
              'the row of stage-2 samples drawn given it.', '',
              f"Conventional (stage-1 rate {c0['rate_stage1']:.4f} nats/dim: its x_hat is what "
              'stage 1 passes on):', '', '![](samples-conventional.png)', '',
              f"Conventional started from the lambda-optimal stage 1 at {result['headline']:g} "
              f"(stage-1 rate {i0['rate_stage1']:.4f}):", '', '![](samples-conventional-init.png)']
    for x in per:
        lines += ['', f"Progressive at lambda = {x['target']:g} (stage-1 rate "
                  f"{x['progressive']['rate_stage1']:.4f}):", '',
                  f"![](samples-progressive-{x['target']:g}.png)"]
    return lines


def train(cfg, other_runs=()):
    """Train in two rounds: what the headline rule reads, then everything else (with `other_runs`,
    e.g. the other experiments' in the demo, side by side). Returns (headline, rule)."""
    run_all(cfg, rule_runs(cfg))
    headline, rule = choose_headline(cfg, default_device(cfg))
    run_all(cfg, list(other_runs) + plan(cfg, headline))
    return headline, rule


def run(cfg):
    family(cfg)
    check_sample_metric(cfg, check_inputs(cfg))
    return report(cfg, *train(cfg))


main = command(run, __doc__, add_arguments, ('sample',))


if __name__ == '__main__':
    raise SystemExit(main())
