"""Table 1 and Figure 1: is a conventionally trained VDVAE's (R_K, D_K) Pareto-optimal?

1. a conventional VDVAE (`--hps X`), or an existing checkpoint (`--checkpoint`): ours, or upstream's
   official `*-model.th` / `*-model-ema.th` files with X = cifar10, imagenet32, imagenet64,
   ffhq256 or ffhq1024 (a file of another architecture stops here, with the preset it fits);
2. the D_K probe (`X_masked --mode probe`): R_K of its frozen q(z_1..z_K | x), D_K of a fresh masked
   decoder;
3. gamma-optimal training (`X_masked --mode gamma_optimal`, gamma = R_K): R'_K and lambda*.
Writes OUT/table1/{results.json, report.md, table1.png, reconstructions.png}.

    python -m progcode_ext.experiments.table1 --hps svhn --out exp --train_flags "--data_root D"
    python -m progcode_ext.experiments.table1 --hps imagenet32 --checkpoint \\
        imagenet32-iter-1700000-model-ema.th --probe_steps 20000 --out exp --train_flags "--data_root D"
"""
import os

from .common import (as_uint8, default_device, eval_images, evaluate_run, grid, load_run, parse,
                     plot, reconstructions, restore_vdvae, run_main, say, train_stage,
                     write_results)


def add_arguments(parser):
    parser.add_argument('--checkpoint', default=None,
                        help='a trained VDVAE (ours or upstream official) instead of training one')
    parser.add_argument('--probe_steps', type=int, default=400000,
                        help='steps of the probe and of gamma-optimal training (paper: 400K)')


def run(cfg):
    device = default_device(cfg)
    ckpt = cfg.checkpoint
    if ckpt:
        restore_vdvae(cfg, ckpt)                # a wrong file: its one clear error, now
    else:
        ckpt = os.path.join(train_stage(cfg, 'vdvae', cfg.hps), 'latest-model-ema.th')
    masked = [f'--encoder_path={ckpt}']
    probe = train_stage(cfg, 'table1-probe', f'{cfg.hps}_masked', masked + ['--mode', 'probe'],
                        cfg.probe_steps)
    gamma = train_stage(cfg, 'table1-gamma', f'{cfg.hps}_masked', masked + ['--mode', 'gamma_optimal'],
                        cfg.probe_steps)
    p, g = evaluate_run(cfg, probe, device), evaluate_run(cfg, gamma, device)
    _, gamma_model, _, _ = load_run(gamma, device)
    row = dict(dataset=cfg.hps, K=gamma_model.k, R_K=p['rate'], D_K=p['distortion'],
               R_K_gamma_optimal=g['rate'], lambda_star_upper_bound=g['distortion'],
               gamma=float(gamma_model.objective.multiplier.target),
               eta_final=float(gamma_model.objective.multiplier.eta), checkpoint=ckpt)
    folder = os.path.join(cfg.out, 'table1')
    os.makedirs(folder, exist_ok=True)

    images, x_in, x_target = eval_images(probe, device, 8)
    _, probe_model, _, _ = load_run(probe, device)
    grid([images, as_uint8(reconstructions(probe_model, x_in, x_target)),
          as_uint8(reconstructions(gamma_model, x_in, x_target))],
         os.path.join(folder, 'reconstructions.png'))

    def draw(ax):
        ax.bar([0, 1], [row['D_K'], row['lambda_star_upper_bound']], color=['tab:gray', 'tab:blue'])
        ax.set_xticks([0, 1], [f"conventional\nR_K={row['R_K']:.4f}",
                               f"gamma-optimal\nR'_K={row['R_K_gamma_optimal']:.4f}"])
        ax.set_ylabel('MSE per dim ([-1,1] scale)')
        ax.set_title(f'{cfg.hps}: distortion from z_1..z_{row["K"]}')
    plot(os.path.join(folder, 'table1.png'), draw)

    held = row['lambda_star_upper_bound'] < row['D_K'] and row['R_K_gamma_optimal'] <= 1.05 * row['R_K']
    claim = (f"gamma-optimal D below conventional D_K at matched rate: **{'held' if held else 'did not hold'}** "
             f"(lambda* <= {row['lambda_star_upper_bound']:.5f} vs D_K = {row['D_K']:.5f}; "
             f"R'_K = {row['R_K_gamma_optimal']:.5f} vs R_K = {row['R_K']:.5f}, i.e. "
             f"{100 * (row['R_K_gamma_optimal'] / row['R_K'] - 1):+.1f}%)")
    report = [
        f'# Table 1 on {cfg.hps}', '',
        f'z_1..z_K: the first {row["K"]} decoder blocks. Rates and distortions per dimension; '
        'distortion = MSE on the [-1, 1] scale; validation split, EMA weights.', '',
        '| dataset | R_K | D_K | R\'_K | >= lambda* |', '|---|---|---|---|---|',
        f"| {cfg.hps} | {row['R_K']:.5f} | {row['D_K']:.5f} | {row['R_K_gamma_optimal']:.5f} | "
        f"{row['lambda_star_upper_bound']:.5f} |", '',
        f'Claim: {claim}.', '',
        'Paper (SVHN, CelebA, LSUN): D_K 0.0200 / 0.0274 / 0.0611 vs lambda* 0.0063 / 0.0128 / 0.0339.',
        '', '![](table1.png)', '',
        'Reconstructions (Figure 1): originals, conventional (probe), gamma-optimal.', '',
        '![](reconstructions.png)']
    row['claim_held'] = held
    write_results(cfg.out, 'table1', row, report)
    say(f"table1: R_K {row['R_K']:.5f}, D_K {row['D_K']:.5f}, R'_K {row['R_K_gamma_optimal']:.5f}, "
        f"lambda* <= {row['lambda_star_upper_bound']:.5f}")
    return row


def main(argv=None):
    return run_main(lambda a: run(parse(a, __doc__.split('\n')[0], add_arguments)), argv)


if __name__ == '__main__':
    raise SystemExit(main())
