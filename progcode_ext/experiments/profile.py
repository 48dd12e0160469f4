"""The (R_k, D_k) profile of a trained VDVAE at every resolution of its decoder (Section 3.1's
progressive coder, one point per resolution r: z_1..z_k = all blocks at resolution <= r).

R_k comes from the model's posterior over the validation split (one posterior sample per image,
seed 0: the same weights give the same rates); D_k from a masked-decoder probe (A.2) trained for
each r (`--probe_steps`; 0 reports the rates only). Table 1's (R_K, D_K) is the row at the
progressive split (`--progressive_res` in `--train_flags`, default image size / 8): marked
`table1: true` in the rows of results.json, copied to its top-level `table1`, and marked in
report.md. Works on our checkpoints and on upstream's official files (`--checkpoint`, `*-model.th`
or `*-model-ema.th`, with the matching `--hps`).
Writes OUT/profile/{results.json, report.md, profile.png}.

    python -m progcode_ext.experiments.profile --hps cifar10 --checkpoint cifar10-seed0-iter-900000-model-ema.th \\
        --out exp --probe_steps 0 --train_flags="--data_root D"
"""
import os

from vdvae.block_strings import parse_dec_blocks

from ..latent_groups import progressive_blocks
from ..metrics.rd_profile import rate_profile
from .cli import command, number, train_then_report
from .evaluate import default_device, evaluate_run, restore_vdvae, vdvae_rates
from .figures import plot
from .report import table_head, write_results
from .runs import COST, Run, run_dir, say


def add_arguments(parser):
    parser.add_argument('--checkpoint', required=True, help='the trained VDVAE (ours or upstream)')
    parser.add_argument('--probe_steps', type=number(0), default=0,
                        help='steps of the D_k probe per resolution; 0: rates only')


def probe_resolutions(cfg, H):
    """Those of the decoder's resolutions that get a D_k probe: all below the image's."""
    layers = parse_dec_blocks(H.dec_blocks, H.image_size) if cfg.probe_steps else []
    return sorted({r for r, _ in layers if r < H.image_size})


def plan(cfg):
    """A D_k probe on the checkpoint's frozen encoder at each probed resolution."""
    H, _ = restore_vdvae(cfg, cfg.checkpoint)          # a wrong file: its one clear error, now
    return [Run(f'profile-probe-{res}', cfg.hps, cfg.probe_steps,
                ('--model', 'masked', f'--encoder_path={cfg.checkpoint}', '--mode', 'probe',
                 '--progressive_res', str(res)), cost=COST['probe'])
            for res in probe_resolutions(cfg, H)]


def report(cfg):
    device = default_device(cfg)
    H, rates = vdvae_rates(cfg, cfg.checkpoint, device)
    K = progressive_blocks(H)                   # Table 1's z_1..z_K
    rows = []
    for res, k, rate in rate_profile(rates):
        row = dict(res=res, k=k, rate=rate, distortion=None, table1=k == K)
        if res in probe_resolutions(cfg, H):
            probe = run_dir(cfg, f'profile-probe-{res}')
            row['distortion'] = evaluate_run(cfg, probe, device)['mse']
        rows.append(row)
        say(f"profile: res <= {res}: k = {k}, R_k {rate:.5f} nats/dim"
            + (f", D_k {row['distortion']:.5f}" if row['distortion'] is not None else '')
            + (" <- Table 1's (R_K, D_K)" if row['table1'] else ''))
    table1 = next(dict(res=r['res'], K=r['k'], R_K=r['rate'], D_K=r['distortion'])
                  for r in rows if r['table1'])
    folder = os.path.join(cfg.out, 'profile')
    os.makedirs(folder, exist_ok=True)
    points = [r for r in rows if r['distortion'] is not None]

    def draw(ax):
        if points:
            ax.plot([r['rate'] for r in points], [r['distortion'] for r in points], 'o-')
            for r in points:
                ax.annotate(f"<= {r['res']}", (r['rate'], r['distortion']), fontsize=7)
            ax.set_ylabel('D_k: MSE per dim ([-1,1] scale)')
        else:
            ax.bar(range(len(rows)), [r['rate'] for r in rows])
            ax.set_xticks(range(len(rows)), [f"<= {r['res']}" for r in rows])
            ax.set_ylabel('R_k (nats/dim)')
        ax.set_xlabel('R_k (nats/dim)' if points else 'latent group: resolution')
        ax.set_title(f'{cfg.hps}: progressive coder profile')
    plot(os.path.join(folder, 'profile.png'), draw)
    lines = [f'# (R_k, D_k) profile of {cfg.checkpoint}', '',
             'R_k: KL of all latent layers at resolution <= r, nats/dim, validation split. '
             'D_k: MSE ([-1,1] scale) of a masked-decoder probe trained on z_1..z_k '
             f'({cfg.probe_steps} steps; blank: not trained). Table 1\'s (R_K, D_K): the row at '
             f"the progressive split, resolution <= {table1['res']} (K = {table1['K']}).", '',
             *table_head('resolution <=', 'k', 'R_k', 'D_k', '')]
    lines += [f"| {r['res']} | {r['k']} | {r['rate']:.5f} | "
              f"{'' if r['distortion'] is None else format(r['distortion'], '.5f')} | "
              f"{'**Table 1: (R_K, D_K)**' if r['table1'] else ''} |" for r in rows]
    write_results(cfg.out, 'profile', dict(checkpoint=cfg.checkpoint, rows=rows, table1=table1,
                                           per_block=rates['per_block']),
                  lines + ['', '![](profile.png)'])
    return rows


run = train_then_report(plan, report)         # (plan() checks --checkpoint first)


main = command(run, __doc__, add_arguments)


if __name__ == '__main__':
    raise SystemExit(main())
