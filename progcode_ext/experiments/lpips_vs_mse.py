"""Figure 4: perceptual distance against MSE for the lambda-optimal stage-1 family of rd_curve
(the same runs: trained once, shared), with the Spearman rank correlation.
The perceptual distance is LPIPS when its weights are available (`--lpips_weights`), else - only
with `--allow_standin` - PD-<dataset>, the stand-in in a classifier's features; the report names it.
Writes OUT/lpips_vs_mse/{results.json, report.md, lpips_vs_mse.png}.
"""
import os

import numpy as np
from scipy.stats import spearmanr

from ..metrics import perceptual_distance
from .common import (metrics_cache, as_uint8, default_device, eval_images, load_run, parse, plot, reconstructions,
                     run_main, say, write_results)
from .figures import log_axis
from .rd_curve import add_arguments as add_rd_arguments
from .rd_curve import parse_targets, stage1_runs


def add_arguments(parser):
    add_rd_arguments(parser)
    parser.add_argument('--n_images', type=int, default=256, help='validation images per model')
    parser.add_argument('--lpips_weights', default=None, help='local LPIPS backbone weights')
    parser.add_argument('--lpips_net', default='alex', choices=('alex', 'vgg'))
    parser.add_argument('--allow_standin', action='store_true',
                        help='without LPIPS weights, use the clearly labelled stand-in PD-<dataset>')


def run(cfg):
    device = default_device(cfg)
    runs = stage1_runs(cfg, parse_targets(cfg.targets))
    rows, name = [], None
    images = None
    for t, run_dir in runs.items():
        if images is None:
            images, x_in, x_target = eval_images(run_dir, device, cfg.n_images)
        H, model, _, _ = load_run(run_dir, device)
        recon = reconstructions(model, x_in, x_target)
        mse = ((recon.float() - x_target) ** 2).flatten(1).mean(1).cpu().numpy()
        name, dist = perceptual_distance(as_uint8(recon), images, H.dataset,
                                         lpips_weights=cfg.lpips_weights, lpips_net=cfg.lpips_net,
                                         allow_standin=cfg.allow_standin, device=device,
                                         data_root=H.data_root, logprint=say,
                                         cache_dir=metrics_cache(cfg))
        rows.append(dict(target=t, mse=float(mse.mean()), perceptual=float(np.mean(dist))))
        say(f"lpips_vs_mse: target {t:g}: MSE {rows[-1]['mse']:.5f}, {name} {rows[-1]['perceptual']:.4f}")
    rho = float(spearmanr([r['mse'] for r in rows], [r['perceptual'] for r in rows]).correlation) \
        if len(rows) > 1 else float('nan')
    by_mse = sorted(rows, key=lambda r: r['mse'])
    monotone = all(a['perceptual'] <= b['perceptual'] for a, b in zip(by_mse, by_mse[1:]))
    folder = os.path.join(cfg.out, 'lpips_vs_mse')
    os.makedirs(folder, exist_ok=True)

    def draw(ax):
        ax.plot([r['mse'] for r in by_mse], [r['perceptual'] for r in by_mse], 'o-')
        for r in rows:
            ax.annotate(f"{r['target']:g}", (r['mse'], r['perceptual']), fontsize=7)
        log_axis(ax, 'x', [r['target'] for r in rows])
        ax.set_xlabel('MSE per dim ([-1,1] scale)')
        ax.set_ylabel(name)
        ax.set_title(f'{cfg.hps}: {name} vs MSE (Spearman {rho:.2f})')
    plot(os.path.join(folder, 'lpips_vs_mse.png'), draw)
    report = [f'# {name} against MSE on {cfg.hps} (Figure 4)', '',
              f'Perceptual metric: **{name}**' + ('' if name.startswith('LPIPS') else
              ' (a stand-in in the features of a classifier trained here; not LPIPS)') + '.',
              f'{cfg.n_images} validation images per lambda-optimal stage-1 model.', '',
              f'| target | MSE | {name} |', '|---|---|---|']
    report += [f"| {r['target']:g} | {r['mse']:.5f} | {r['perceptual']:.4f} |" for r in rows]
    report += ['', f'Spearman rank correlation over models: {rho:.3f}. {name} monotone in MSE: '
               f"**{'held' if monotone else 'did not hold'}**.", '', '![](lpips_vs_mse.png)']
    results = dict(dataset=cfg.hps, metric=name, rows=rows, spearman=rho, monotone=monotone)
    write_results(cfg.out, 'lpips_vs_mse', results, report)
    return results


def main(argv=None):
    return run_main(lambda a: run(parse(a, __doc__.split('\n')[0], add_arguments)), argv)


if __name__ == '__main__':
    raise SystemExit(main())
