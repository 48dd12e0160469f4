"""Figure 4: perceptual distance against MSE for the lambda-optimal stage-1 family of rd_curve
(the same runs: trained once, shared), with the Spearman rank correlation.
The perceptual distance is LPIPS when its weights are available (`--lpips_weights`), else - only
with `--allow_standin` - PD-<dataset>, the stand-in in a classifier's features; the report names it.
Writes OUT/lpips_vs_mse/{results.json, report.md, lpips_vs_mse.png}.
"""
import os

import numpy as np
import torch
from scipy.stats import spearmanr

from ..mean_head import mse_per_example
from ..metrics import PERCEPTUAL, choose_metric, perceptual_distance
from . import convergence as cv
from .cli import check_inputs, command, number
from .evaluate import default_device, eval_images, evaluate_run, load_run, metrics_cache
from .figures import as_uint8, log_axis, plot
from .rd_curve import add_arguments as add_rd_arguments
from .rd_curve import plan, stage1_runs  # (the same stage-1 runs as rd_curve's)
from .report import table_head, write_results
from .runs import run_all, say


def add_arguments(parser):
    add_rd_arguments(parser)
    parser.add_argument('--n_images', type=number(1), default=256,
                        help='validation images per model')


def report(cfg):
    device = default_device(cfg)
    runs = stage1_runs(cfg)
    rows, name, checks = [], None, []
    images = None
    for t, run_dir in runs.items():
        if images is None:
            images, x_in, x_target = eval_images(run_dir, device, cfg.n_images)
        checks.append(cv.reaches_target(os.path.basename(run_dir), 'D',
                                        evaluate_run(cfg, run_dir, device)['mse'], t))
        H, model, _, _ = load_run(run_dir, device)
        torch.manual_seed(0)
        recon = model.reconstruct(x_in)
        mse = mse_per_example(recon, x_target).cpu().numpy()
        name, dist = perceptual_distance(as_uint8(recon), images, H.dataset,
                                         lpips_weights=cfg.lpips_weights, lpips_net=cfg.lpips_net,
                                         allow_standin=cfg.allow_standin, device=device,
                                         data_root=H.data_root, logprint=say,
                                         cache_dir=metrics_cache(cfg))
        rows.append(dict(target=t, mse=float(mse.mean()), perceptual=float(np.mean(dist))))
        say(f"lpips_vs_mse: target {t:g}: MSE {rows[-1]['mse']:.5f}, {name} {rows[-1]['perceptual']:.4f}")
    mse, perceptual = [r['mse'] for r in rows], [r['perceptual'] for r in rows]
    rho = float(spearmanr(mse, perceptual).correlation) \
        if len(set(mse)) > 1 and len(set(perceptual)) > 1 else float('nan')
    by_mse = sorted(rows, key=lambda r: r['mse'])
    monotone = all(a['perceptual'] <= b['perceptual'] for a, b in zip(by_mse, by_mse[1:]))
    folder = os.path.join(cfg.out, 'lpips_vs_mse')
    os.makedirs(folder, exist_ok=True)

    def draw(ax):
        ax.plot([r['mse'] for r in by_mse], [r['perceptual'] for r in by_mse], 'o-')
        for r in rows:
            ax.annotate(f"lambda {r['target']:g}", (r['mse'], r['perceptual']), fontsize=7,
                        xytext=(6, 4), textcoords='offset points')
        ax.margins(x=0.15, y=0.1)                       # room for the labels inside the axes
        log_axis(ax, 'x', [r['target'] for r in rows])
        ax.set_xlabel('MSE per dim ([-1,1] scale)')
        ax.set_ylabel(name)
        ax.set_title(f'{cfg.hps}: {name} vs MSE (Spearman {rho:.2f})')
    plot(os.path.join(folder, 'lpips_vs_mse.png'), draw)
    lines = [f'# {name} against MSE on {cfg.hps} (Figure 4)', '',
              f'Perceptual metric: **{name}**' + ('' if name.startswith('LPIPS') else
              ' (a stand-in in the features of a classifier trained here; not LPIPS)') + '.',
              f'{cfg.n_images} validation images per lambda-optimal stage-1 model.', '',
              *table_head('target', 'MSE', name)]
    lines += [f"| {r['target']:g} | {r['mse']:.5f} | {r['perceptual']:.4f} |" for r in rows]
    verdict = cv.verdict([monotone], checks)
    rho_text = (f'{rho:.3f}' if rho == rho else
                'undefined (the MSEs or the distances are all equal)')
    lines += ['', f'Spearman rank correlation over models: {rho_text}. {name} monotone in MSE: '
               f"**{verdict}**" + (f' — {cv.describe_failures(checks)}' if cv.failures(checks) else '')
               + '.', '', '![](lpips_vs_mse.png)']
    results = dict(dataset=cfg.hps, seed=cfg.seeds[0], metric=name, rows=rows, spearman=rho,
                   monotone=monotone, checks=checks, verdict=verdict)
    write_results(cfg.out, 'lpips_vs_mse', results, lines)
    return results


def run(cfg):
    H = check_inputs(cfg)
    runs = plan(cfg)
    choose_metric(PERCEPTUAL, H.dataset, cfg.lpips_weights, lpips_net=cfg.lpips_net,
                  allow_standin=cfg.allow_standin, cache_dir=metrics_cache(cfg),
                  data_root=H.data_root, device=default_device(cfg),
                  logprint=say)                         # its weights, before training
    run_all(cfg, runs)
    return report(cfg)


main = command(run, __doc__, add_arguments, ('perceptual',))


if __name__ == '__main__':
    raise SystemExit(main())
