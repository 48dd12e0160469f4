"""Command line of the VDVAE core.

  python -m vdvae sample --hps cifar10 --restore_ema_path CKPT --n 16 --t 0.9 --out grid.png
  python -m vdvae summary --hps cifar10
"""
import argparse
import math
import os
import sys

import numpy as np
import torch

from .block_strings import check_architecture
from .checkpoint import check_can_write, restore_params
from .data import resolve_geometry
from .errors import ConfigError, exit_status
from .hps import Hyperparams, add_vae_arguments, parse_args_and_update_hparams
from .images import label_rows, write_image
from .models import build_model
from .vae import VAE, check_temperatures


def parse_temperature(text):
    """'0.9' -> 0.9; '0.1,0.5,0.9' -> one temperature per decoder block; 'none' -> None."""
    if text.lower() == 'none':
        return None
    try:
        values = [float(v) for v in text.split(',')]
    except ValueError:
        raise argparse.ArgumentTypeError(f'temperature {text!r} is not a number or a comma list '
                                         'of numbers') from None
    if any(not v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f'temperatures must be >= 0, got {text!r}')
    return values[0] if len(values) == 1 else values


def load_model(H, device):
    """The model of `H` (`--model`, default VDVAE) on `device`, with weights from
    --restore_ema_path or --restore_path."""
    model = build_model(H)
    path = H.restore_ema_path or H.restore_path
    if path:
        restore_params(model, path)
    else:
        print('no checkpoint given (--restore_ema_path / --restore_path): using a RANDOMLY '
              'INITIALISED model', file=sys.stderr)
    return model.to(device).eval()


def check_sample_flags(H):
    if H.n < 1:
        raise ConfigError(f'--n must be at least 1, got {H.n}')
    if H.ncol < 0:
        raise ConfigError(f'--ncol must be at least 1 (or 0: about sqrt(n)), got {H.ncol}')
    if os.path.isdir(H.out):
        raise ConfigError(f'--out {H.out!r} is a folder; name a PNG file in it')
    check_can_write(H.out, f'--out {H.out!r}')       # (the folders it needs are made)


def temperature_caption(ts):
    """The caption of a sample grid drawn at `ts` (one entry per stage: a number, None for 1, or
    a list per decoder block)."""
    def text(t):
        if t is None:
            return '1'
        return ', '.join(f'{v:g}' for v in t) + ' (per block)' if isinstance(t, (list, tuple)) \
            else f'{t:g}'
    texts = [text(t) for t in ts]
    if len(set(texts)) == 1:
        return f'temperature {texts[0]}'
    return 'temperatures ' + '; '.join(f'stage {k}: {t}' for k, t in enumerate(texts, 1))


def sample(H):
    try:                                        # before any weights are read
        check_temperatures(H.t, len(check_architecture(H)[1]))
    except ConfigError as e:
        raise ConfigError(f'--t: {e}') from None        # (the same message, named by its flag)
    model = load_model(H, H.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    torch.manual_seed(H.seed)           # after init, so a seed gives the same draws as upstream
    with torch.no_grad():
        if hasattr(model, 'sample_stages'):     # a chain: what each stage puts out, same draws
            ts = model.temperatures(H.t)
            outputs, titles = model.sample_stages(H.n, ts), model.stage_output_titles()
        else:
            ts, outputs, titles = [H.t], [model.sample(H.n, t=H.t)], ['sample']
    ncol = H.ncol or math.ceil(math.sqrt(H.n))
    rows = []
    for start in range(0, H.n, ncol):           # per ncol draws, a row per stage output
        for images in outputs:
            row = images[start:start + ncol]
            blank = np.zeros((ncol - len(row),) + row.shape[1:], np.uint8)
            rows.append(np.concatenate([row, blank]))
    write_image(H.out, label_rows(rows, titles * (len(rows) // len(titles)),
                                  temperature_caption(ts)))
    print(f'wrote {H.n} samples ({H.image_size}x{H.image_size}, t={H.t}) to {H.out}')


def summary(H):
    with torch.device('meta'):
        model = VAE(H)
    count = lambda m: sum(p.numel() for p in m.parameters())
    blocks = model.decoder.dec_blocks
    print(f'preset(s) {H.hparam_sets or "(defaults)"}: {count(model):,} parameters '
          f'(encoder {count(model.encoder):,}, decoder {count(model.decoder):,})')
    print(f'{len(model.encoder.enc_blocks)} encoder blocks, {len(blocks)} decoder blocks '
          f'(= latent layers), image {H.image_size}x{H.image_size}x{H.image_channels}')
    for res in model.decoder.resolutions:
        n = sum(b.base == res for b in blocks)
        print(f'  {res:>4}x{res:<4} {n:>3} latent layers x {H.zdim} channels '
              f'= {n * H.zdim * res * res:,} latent dims')


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m vdvae', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', required=True)
    p = add_vae_arguments(commands.add_parser('sample', help='write a PNG grid of prior samples'))
    p.add_argument('--n', type=int, default=16, help='number of samples (default: %(default)s)')
    p.add_argument('--t', type=parse_temperature, default=1.0,
                   help='temperature: a number, one per decoder block (comma list), or none '
                        '(default: %(default)s)')
    p.add_argument('--out', default='samples.png', help='PNG file (default: %(default)s)')
    p.add_argument('--ncol', type=int, default=0, help='grid columns (default: about sqrt(n))')
    add_vae_arguments(commands.add_parser('summary', help='parameter counts and latent layout'))

    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and not argv[0].startswith('-') else None

    def run():
        H = Hyperparams()
        if command in commands.choices:
            resolve_geometry(parse_args_and_update_hparams(H, commands.choices[command], argv[1:]))
            H.command = command
        else:
            H.update(vars(parser.parse_args(argv)))
        if H.command == 'sample':
            check_sample_flags(H)
            sample(H)
        else:
            summary(H)
    return exit_status(run)


if __name__ == '__main__':
    sys.exit(main())
