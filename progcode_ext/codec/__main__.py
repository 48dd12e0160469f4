"""The progressive codec's command line.

  python -m progcode_ext.codec compress --run RUN [--checkpoint FILE] IMAGES... -o FILE
  python -m progcode_ext.codec decompress FILE --run RUN [--checkpoint FILE] [--stages K] -o DIR
  (either with --device cuda: the same bytes and pictures as on the CPU)

RUN: the folder of a finished training run: a progressive chain's last stage (two or N stages),
or a plain VDVAE (one chunk, lossless). IMAGES: PNG files and/or .npy arrays of uint8 NHWC, of the
model's shape. decompress writes DIR/xhat{k}-{i:05d}.png (x_hat_k of image i, for each decoded
stage with a mean head) and, when every chunk is decoded, DIR/{i:05d}.png (the images, bit for
bit). A file cut after its k-th chunk decodes to x_hat_k; --stages K decodes only the first K.
Errors for bad input: one `error:` line and exit status 2.
"""
import argparse
import os
import sys
import time

from vdvae.checkpoint import atomic_write, check_can_write
from vdvae.errors import exit_status
from vdvae.hps import number

from .coder import ACTIVE_KL, DEFAULT_BIN_WIDTH
from .container import CodecError
from .files import FileCodec
from .image_files import read_images, write_outputs
from .model import load_model


def positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a whole number') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
    return value


def parser():
    p = argparse.ArgumentParser(prog='python -m progcode_ext.codec',
                                description=__doc__.split('\n')[0])
    commands = p.add_subparsers(dest='command', metavar='{compress,decompress}')
    c = commands.add_parser('compress', help='images to one progressive file')
    c.add_argument('images', nargs='+', help='PNG files and/or .npy arrays of uint8 NHWC')
    c.add_argument('--bin_width', type=number(0, float, strict=True), default=DEFAULT_BIN_WIDTH,
                   help="the latents' bins, in prior standard deviations (default: %(default)s; "
                        'docs/codec.md says how it was chosen)')
    c.add_argument('--active_kl', type=number(0, float), default=ACTIVE_KL,
                   help='code only latent channels whose mean KL per element exceeds this, in '
                        'nats (default: %(default)s)')
    d = commands.add_parser('decompress', help='a file (or a prefix of it) back to PNGs')
    d.add_argument('file', help='a file written by compress (possibly cut after a whole chunk)')
    d.add_argument('--stages', type=positive, default=None,
                   help='decode only the first K chunks (default: all the file holds)')
    for sub, out in ((c, 'the compressed file to write'), (d, 'folder for the PNGs')):
        sub.add_argument('--run', required=True, help='the folder of the trained run')
        sub.add_argument('--checkpoint', default=None,
                         help="its weights (default: RUN/latest-model-ema.th)")
        sub.add_argument('-o', '--out', required=True, help=out)
        sub.add_argument('--device', default='cpu', type=device,
                         help='where the networks run: cpu or cuda (the bytes and pictures are the '
                              'same either way; default: %(default)s)')
    return p


def device(text):
    import torch
    if text not in ('cpu', 'cuda') and not text.startswith('cuda:'):
        raise argparse.ArgumentTypeError(f'{text!r} is not cpu or cuda')
    if text != 'cpu' and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f'{text}: this torch build sees no CUDA device; use cpu')
    return text


def compress(args):
    if os.path.isdir(args.out):
        raise CodecError(f'-o {args.out!r} is a folder; name the file to write')
    check_can_write(args.out, f'-o {args.out!r}')
    _, model = load_model(args.run, args.checkpoint)
    codec = FileCodec(model, bin_width=args.bin_width, active_kl=args.active_kl,
                      device=args.device)
    images = read_images(args.images, codec.image_shape)
    start = time.perf_counter()
    data, info = codec.compress(images)
    seconds = time.perf_counter() - start
    atomic_write(args.out, lambda f: f.write(data))
    dims = images.size
    ideal = sum(info['ideal_bits'])
    print(f'{len(images)} images -> {args.out}: {len(data):,} bytes ({8 * len(data) / dims:.4f} '
          f'bits/dim; the model\'s -log2 P: {ideal / dims:.4f}, overhead '
          f'{8 * (len(data) - info["header_bytes"]) / ideal - 1:+.2%} beside a '
          f'{info["header_bytes"]}-byte header); chunks: '
          + ', '.join(f'{b:,}' for b in info['chunk_bytes']) + f' bytes; {seconds:.1f} s')


def decompress(args):
    if os.path.isfile(args.out):
        raise CodecError(f'-o {args.out!r} is a file; name a folder for the PNGs')
    check_can_write(os.path.join(args.out, 'x.png'), f'-o {args.out!r}')
    try:
        with open(args.file, 'rb') as f:
            data = f.read()
    except FileNotFoundError:
        raise CodecError(f'compressed file not found: {args.file}; check the path') from None
    except IsADirectoryError:
        raise CodecError(f'{args.file} is a folder; give a file written by compress') from None
    _, model = load_model(args.run, args.checkpoint)
    codec = FileCodec(model, device=args.device)
    start = time.perf_counter()
    decoded = codec.decompress(data, args.stages, name=args.file)
    seconds = time.perf_counter() - start
    paths = write_outputs(args.out, decoded)
    total = decoded['header']['n_chunks']
    what = ('the images, lossless' if decoded['images'] is not None else
            f"x_hat_{decoded['chunks']} (a prefix)")
    print(f"{args.file}: {decoded['chunks']} of {total} chunks decoded ({what}): {len(paths)} PNGs "
          f'in {args.out}; {seconds:.1f} s')


def run(argv):
    args = parser().parse_args(argv)
    if args.command is None:
        raise CodecError('give a command: compress or decompress (see --help)')
    (compress if args.command == 'compress' else decompress)(args)


def main(argv=None):
    return exit_status(run, sys.argv[1:] if argv is None else argv)


if __name__ == '__main__':
    raise SystemExit(main())
