"""Figure 2: stage-1 VDVAEs trained lambda-optimally for a series of distortion targets -> rate
against distortion, with reconstructions per target (one seed: the first of --seeds). Each model
must end within 10% of its target (validation MSE); the report names those that do not.
Writes OUT/rd_curve/{results.json, report.md, rd_curve.png, reconstructions.png}.

    python -m progcode_ext.experiments.rd_curve --hps svhn --targets 0.0512,0.0256,0.0128,0.0064,0.0032,0.0016,0.0008
"""
import os

from vdvae.errors import ConfigError
from vdvae.hps import comma_list

from . import convergence as cv
from .cli import command, train_then_report
from .evaluate import default_device, evaluate_run, load_run, reconstruction_grid
from .figures import log_axis, plot
from .report import table_head, write_results
from .runs import COST, Run, run_dir, seeded

PAPER_TARGETS = '0.0512,0.0256,0.0128,0.0064,0.0032,0.0016,0.0008'


def add_arguments(parser):
    parser.add_argument('--targets', type=comma_list(float), default=PAPER_TARGETS,
                        help='distortion targets lambda (MSE, [-1,1] scale) (default: %(default)s)')


def lambdas(cfg):
    """The distortion targets of --targets (a list, or its text), largest first."""
    targets = sorted(set(comma_list(float)(cfg.targets)), reverse=True)
    if not targets or targets[-1] <= 0:
        raise ConfigError(f'--targets {cfg.targets}: give distortion targets, each > 0')
    return targets


def stage1_name(target, seed):
    return seeded(f'stage1-{target:g}', seed)


def stage1_run(cfg, target, seed):
    """The lambda-optimal stage 1 for `target` (shared by rd_curve, lpips_vs_mse and table2)."""
    return Run(stage1_name(target, seed), f'{cfg.hps}_stage1', cfg.steps,
               ('--seed', str(seed), '--distortion_target', str(target)), cost=COST['stage1'])


def plan(cfg):
    return [stage1_run(cfg, t, cfg.seeds[0]) for t in lambdas(cfg)]


def stage1_runs(cfg):
    """{target: run folder} of the finished stage-1 family."""
    return {t: run_dir(cfg, stage1_name(t, cfg.seeds[0])) for t in lambdas(cfg)}


def report(cfg):
    device = default_device(cfg)
    runs = stage1_runs(cfg)
    rows, checks = [], []
    for t, folder in runs.items():
        stats = evaluate_run(cfg, folder, device)
        _, model, _, _ = load_run(folder, device)
        check = cv.reaches_target(os.path.basename(folder), 'D', stats['mse'], t)
        checks.append(check)
        rows.append(dict(target=t, rate=stats['rate'], distortion=stats['mse'],
                         psnr=stats.get('psnr'), eta=float(model.objective.multiplier.eta),
                         steps=stats['step'], reached=check.passed))
    folder = os.path.join(cfg.out, 'rd_curve')
    os.makedirs(folder, exist_ok=True)
    reconstruction_grid(list(runs.values()), device, os.path.join(folder, 'reconstructions.png'))

    def draw(ax):
        ax.plot([r['distortion'] for r in rows], [r['rate'] for r in rows], 'o-', label='reached')
        for r in rows:
            ax.axvline(r['target'], color='gray', lw=0.5, ls=':')
        log_axis(ax, 'x', [r['target'] for r in rows])
        ax.set_xlabel('distortion: MSE per dim ([-1,1] scale); dotted: targets')
        ax.set_ylabel('rate (nats/dim)')
        ax.set_title(f'{cfg.hps}: stage-1 rate vs distortion (seed {cfg.seeds[0]})')
    plot(os.path.join(folder, 'rd_curve.png'), draw)

    monotone = all(a['rate'] <= b['rate'] for a, b in zip(rows, rows[1:]))
    report_lines = [
        f'# Rate-distortion of lambda-optimal stage 1 on {cfg.hps} (Figure 2)', '',
        f'Validation split, EMA weights, seed {cfg.seeds[0]}; distortion = MSE on the [-1, 1] scale; '
        'rate in nats/dim.', '',
        *table_head('target lambda', 'distortion', 'within 10%?', 'PSNR (dB)', 'rate', 'eta',
                    'steps')]
    for r in rows:
        report_lines.append(
            f"| {r['target']:g} | {r['distortion']:.5f} ({r['distortion'] / r['target'] - 1:+.1%}) | "
            f"{'yes' if r['reached'] else '**no**'} | {r['psnr']:.2f} | {r['rate']:.4f} | "
            f"{r['eta']:.4f} | {r['steps']} |")
    rate_claim = ('inconclusive — ' + cv.describe_failures(checks) if cv.failures(checks)
                  else 'held' if monotone else 'did not hold')
    report_lines += ['', f"Rate grows as the target shrinks: **{rate_claim}**.", '',
                     '![](rd_curve.png)', '',
                     'Reconstructions: originals, then one row per target from the largest to the '
                     'smallest.', '', '![](reconstructions.png)']
    result = dict(dataset=cfg.hps, seed=cfg.seeds[0], rows=rows, rate_monotone=monotone,
                  checks=checks, verdict=rate_claim.split(' —')[0])
    write_results(cfg.out, 'rd_curve', result, report_lines)
    return result


run = train_then_report(plan, report)


main = command(run, __doc__, add_arguments)


if __name__ == '__main__':
    raise SystemExit(main())
