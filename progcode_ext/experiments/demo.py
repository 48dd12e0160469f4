"""The main job: the paper's whole protocol at toy scale on mnist5k, on CPU, offline.

    scripts/demo.sh [--quick] [--out DIR]

Runs table1, rd_curve (4+ distortion targets), lpips_vs_mse and table2 with a small VDVAE and
short runs (--quick: about 1 minute on 2 cores; default: about 7), then writes DIR/report.md,
which says plainly, with the numbers, whether each of the paper's claims held at this scale. The
perceptual and sample metrics are stand-ins in the features of a classifier trained on mnist5k
(PD-mnist5k, FD-mnist5k), never LPIPS or FID. Re-running resumes: finished stages are not re-run.
"""
import argparse
import os
import time

from . import lpips_vs_mse, rd_curve, table1, table2
from .common import run_main, say

ARCH = ('--width 32 --zdim 8 --num_mixtures 5 --n_batch 32 --ema_rate 0.95 '
        '--enc_blocks 32x1,32d2,16x1,16d2,8x1,8d2,4x1,4d4,1x1 '
        '--dec_blocks 1x1,4m1,4x1,8m4,8x1,16m8,16x1,32m16,32x1')
# Short runs: eta's Adam gets a larger step than the paper's 2e-4 so that it can move at all in a
# few hundred steps; periodic images, evaluations and checkpoints off (stages save when done).
SHORT_RUNS = ('--eta_lr 0.01 --lr 0.002 --warmup_iters 20 --iters_per_print 50 --epochs_per_eval 1000 '
              '--iters_per_images 10000000 --iters_per_save 10000000 --iters_per_ckpt 10000000')
SCALES = {
    'quick': dict(steps=40, probe_steps=40, targets='0.0512,0.0256,0.0128,0.0064', n_eval=200,
                  n_images=64, n_samples=200),
    'full': dict(steps=250, probe_steps=200, targets='0.0512,0.0256,0.0128,0.0064,0.0032',
                 n_eval=500, n_images=256, n_samples=500),
}


def config(out, scale):
    return argparse.Namespace(hps='mnist5k', out=out, train_flags=f'{ARCH} {SHORT_RUNS}', device='cpu',
                              checkpoint=None, distortion_target=None, sample_batch=100,
                              fid_weights=None, lpips_weights=None, lpips_net='alex',
                              allow_standin=True, metrics_cache=None, **SCALES[scale])


def run(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='about 1 minute instead of 7')
    parser.add_argument('--out', default='demo-out', help='output folder (default: %(default)s)')
    args = parser.parse_args(argv)
    scale = 'quick' if args.quick else 'full'
    cfg = config(args.out, scale)
    os.makedirs(cfg.out, exist_ok=True)
    start = time.time()
    say(f'demo ({scale}): mnist5k, {cfg.steps} steps per stage, output in {cfg.out}')
    t1 = table1.run(cfg)
    rd = rd_curve.run(cfg)
    lp = lpips_vs_mse.run(cfg)
    t2 = table2.run(cfg)
    minutes = (time.time() - start) / 60
    prog, conv = t2['progressive'], t2['conventional']
    lines = [
        f'# progcode demo ({scale}): the paper\'s claims at toy scale on mnist5k', '',
        f'{cfg.steps} training steps per stage ({cfg.probe_steps} for the probe and gamma-optimal '
        f'runs), a VDVAE of width 32 with one block per resolution, CPU; {minutes:.1f} minutes in all '
        '(re-runs reuse finished stages). The paper trains 800K steps on SVHN, CelebA and LSUN: '
        'nothing here is tuned to agree with it; this is what it measures.', '',
        '| claim (paper) | held here? | numbers |', '|---|---|---|',
        f"| gamma-optimal distortion below conventional D_K at matched rate (Table 1) | "
        f"{'yes' if t1['claim_held'] else 'no'} | lambda* <= {t1['lambda_star_upper_bound']:.5f} "
        f"vs D_K {t1['D_K']:.5f}; R'_K {t1['R_K_gamma_optimal']:.5f} vs R_K {t1['R_K']:.5f} nats/dim |",
        f"| progressive better than conventional on the sample metric (Table 2) | "
        f"{'yes' if t2['claim_held'] else 'no'} | {t2['metric']} {prog['sample_metric']:.3f} vs "
        f"{conv['sample_metric']:.3f} (lower is better) |",
        f"| conventional has the better ELBO (Table 2) | "
        f"{'yes' if conv['elbo'] < prog['elbo'] else 'no'} | -ELBO {conv['elbo']:.4f} vs "
        f"{prog['elbo']:.4f} nats/dim |",
        f"| perceptual distance monotone in MSE (Figure 4) | {'yes' if lp['monotone'] else 'no'} | "
        f"{lp['metric']}: Spearman {lp['spearman']:.3f} over {len(lp['rows'])} models; "
        + ', '.join(f"MSE {r['mse']:.4f} -> {r['perceptual']:.4f}" for r in lp['rows']) + ' |',
        f"| stage 1 reaches its distortion target (Figure 2) | "
        f"{sum(r['within_5_percent'] for r in rd)} of {len(rd)} within 5% | "
        + ', '.join(f"{r['target']:g}: {r['distortion']:.4f}" for r in rd) + ' |', '',
        'Stand-in metrics: the perceptual distance and the sample metric are computed in the features '
        'of a small classifier trained on mnist5k by this project (PD-mnist5k, FD-mnist5k); they are '
        'not LPIPS or FID.', '',
        'Details: [table1](table1/report.md), [rd_curve](rd_curve/report.md), '
        '[lpips_vs_mse](lpips_vs_mse/report.md), [table2](table2/report.md).']
    with open(os.path.join(cfg.out, 'report.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    say(f'demo finished in {minutes:.1f} min; report: {os.path.join(cfg.out, "report.md")}')


def main(argv=None):
    return run_main(run, argv)


if __name__ == '__main__':
    raise SystemExit(main())
