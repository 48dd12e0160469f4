"""Figure 2: stage-1 VDVAEs trained lambda-optimally for a series of distortion targets -> rate
against distortion, with reconstructions per target.
Writes OUT/rd_curve/{results.json, report.md, rd_curve.png, reconstructions.png}.

    python -m progcode_ext.experiments.rd_curve --hps svhn --targets 0.0512,0.0256,0.0128,0.0064,0.0032,0.0016,0.0008
"""
import os

from .common import (as_uint8, default_device, eval_images, evaluate_run, grid, load_run, parse,
                     plot, reconstructions, run_main, train_stage, write_results)
from .figures import log_axis

PAPER_TARGETS = '0.0512,0.0256,0.0128,0.0064,0.0032,0.0016,0.0008'


def add_arguments(parser):
    parser.add_argument('--targets', default=PAPER_TARGETS,
                        help='distortion targets lambda (MSE, [-1,1] scale) (default: %(default)s)')


def parse_targets(text):
    try:
        targets = sorted({float(t) for t in text.split(',')}, reverse=True)
    except ValueError:
        raise ValueError(f'--targets {text!r}: expected comma-separated numbers') from None
    if any(not t > 0 for t in targets):
        raise ValueError(f'--targets {text!r}: every distortion target must be > 0')
    return targets


def stage1_runs(cfg, targets):
    """One trained stage-1 run per target (shared with lpips_vs_mse)."""
    return {t: train_stage(cfg, f'stage1-{t:g}', f'{cfg.hps}_stage1', ['--distortion_target', str(t)])
            for t in targets}


def run(cfg):
    device = default_device(cfg)
    targets = parse_targets(cfg.targets)
    runs = stage1_runs(cfg, targets)
    rows = []
    for t, run_dir in runs.items():
        stats = evaluate_run(cfg, run_dir, device)
        _, model, _, _ = load_run(run_dir, device)
        rows.append(dict(target=t, rate=stats['rate'], distortion=stats['distortion'],
                         psnr=stats.get('psnr'), eta=float(model.objective.multiplier.eta),
                         steps=stats['step']))
    folder = os.path.join(cfg.out, 'rd_curve')
    os.makedirs(folder, exist_ok=True)
    images, x_in, x_target = eval_images(next(iter(runs.values())), device, 8)
    recon_rows = [images]
    for t, run_dir in runs.items():
        _, model, _, _ = load_run(run_dir, device)
        recon_rows.append(as_uint8(reconstructions(model, x_in, x_target)))
    grid(recon_rows, os.path.join(folder, 'reconstructions.png'))

    def draw(ax):
        ax.plot([r['distortion'] for r in rows], [r['rate'] for r in rows], 'o-', label='reached')
        for r in rows:
            ax.axvline(r['target'], color='gray', lw=0.5, ls=':')
        log_axis(ax, 'x', [r['target'] for r in rows])
        ax.set_xlabel('distortion: MSE per dim ([-1,1] scale)')
        ax.set_ylabel('rate (nats/dim)')
        ax.set_title(f'{cfg.hps}: stage-1 rate vs distortion')
    plot(os.path.join(folder, 'rd_curve.png'), draw)

    report = [f'# Rate-distortion of lambda-optimal stage 1 on {cfg.hps} (Figure 2)', '',
              'Validation split, EMA weights; distortion = MSE on the [-1, 1] scale; rate in nats/dim.',
              '', '| target lambda | distortion | within 5%? | PSNR (dB) | rate | eta | steps |',
              '|---|---|---|---|---|---|---|']
    for r in rows:
        ok = abs(r['distortion'] - r['target']) <= 0.05 * r['target']
        r['within_5_percent'] = ok
        report.append(f"| {r['target']:g} | {r['distortion']:.5f} | {'yes' if ok else 'no'} | "
                      f"{r['psnr']:.2f} | {r['rate']:.4f} | {r['eta']:.4f} | {r['steps']} |")
    monotone = all(a['rate'] <= b['rate'] for a, b in zip(rows, rows[1:]))
    report += ['', f"Rate grows as the target shrinks: **{'yes' if monotone else 'no'}**.", '',
               '![](rd_curve.png)', '',
               'Reconstructions: originals, then one row per target from the largest to the smallest.',
               '', '![](reconstructions.png)']
    write_results(cfg.out, 'rd_curve', dict(dataset=cfg.hps, rows=rows, rate_monotone=monotone), report)
    return rows


def main(argv=None):
    return run_main(lambda a: run(parse(a, __doc__.split('\n')[0], add_arguments)), argv)


if __name__ == '__main__':
    raise SystemExit(main())
