"""How far the codec's float values sit from a rounding boundary, against how much they move
between the CPU's code paths.

    python bench/codec_margins.py --run demo-out/runs/table2-stage2-0.1024-seed0 --n 500

The coder's only floating-point inputs are the network's outputs that it rounds to the grid of
PARAM_GRID (2^-20): the priors' means and log-stds of every coded block, and the mixture's
parameters of every pixel (everything after is integer arithmetic: progcode_ext/codec/integer.py).
Two machines give the same bytes as long as no such value lands on the other side of a rounding
boundary. For the validation images of `--run`, this records every value the encoder rounds, in
this process (the default code paths) and in fresh processes with other instruction sets (as in
tests/test_codec_platforms.py), and reports each value's margin (its distance to the nearest
boundary, the half-way points between grid values), the largest difference between code paths,
and how many values lie closer to a boundary than that difference (each one a byte that could
differ). Writes `--json`.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {
    'aten-avx2': {'ATEN_CPU_CAPABILITY': 'avx2'},
    'aten-baseline': {'ATEN_CPU_CAPABILITY': 'default'},
    'numpy-no-simd-targets': {'NPY_DISABLE_CPU_FEATURES': 'X86_V3 X86_V4 AVX512_ICL AVX512_SPR'},
    'mkl-onednn-sse4': {'MKL_ENABLE_INSTRUCTIONS': 'SSE4_2', 'ONEDNN_MAX_CPU_ISA': 'SSE41'},
    'one-thread': {'OMP_NUM_THREADS': '1'},
}


def record(run, n, out):
    """Encode the first n validation images of `run`, saving every value the coder rounds."""
    import torch
    from progcode_ext.codec import coder
    from progcode_ext.codec.model import load_model
    from vdvae.data import load_splits
    H, model = load_model(run)
    images = np.asarray(load_splits(H.dataset, H.get('data_root') or './')['valid'][:n],
                        dtype=np.uint8)
    seen = []
    rounded = coder.on_grid

    def on_grid(t):
        seen.append(t.detach().reshape(-1).numpy().copy())
        return rounded(t)
    coder.on_grid = on_grid
    with torch.no_grad():
        coder.ProgressiveCodec(model).encode(images)
    np.save(out, np.concatenate(seen))


def margins(values, grid):
    """Each value's distance to the nearest rounding boundary of the grid."""
    return (0.5 - np.abs(values / grid - np.rint(values / grid))) * grid


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--run', required=True, help='a trained run folder (a chain or a VDVAE)')
    p.add_argument('--n', type=int, default=500, help='validation images')
    p.add_argument('--json', default=None)
    p.add_argument('--record', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.record:
        return record(args.run, args.n, args.record)
    from progcode_ext.codec.coder import PARAM_GRID
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, env in {'default': {}, **VARIANTS}.items():
            paths[name] = os.path.join(tmp, f'{name}.npy')
            subprocess.run([sys.executable, os.path.abspath(__file__), '--run', args.run, '--n',
                            str(args.n), '--record', paths[name]], check=True,
                           env=dict(os.environ, PYTHONPATH=REPO, PYTHONWARNINGS='ignore', **env))
        ref = np.load(paths['default'])
        m = margins(ref, PARAM_GRID)
        result = dict(run=args.run, n_images=args.n, n_values=int(ref.size), grid=PARAM_GRID,
                      margin_min=float(m.min()),
                      margin_quantiles={q: float(np.quantile(m, q)) for q in (1e-6, 1e-4, 1e-2)},
                      variants={})
        for name in VARIANTS:
            other = np.load(paths[name])
            if other.shape != ref.shape:
                result['variants'][name] = dict(error='another number of values (a boundary was '
                                                      'crossed early)')
                continue
            diff = np.abs(other - ref)
            result['variants'][name] = dict(
                max_difference=float(diff.max()), values_that_differ=int((diff > 0).sum()),
                closer_than_max_difference=int((m <= diff.max()).sum()),
                crossed=int((np.rint(other / PARAM_GRID) != np.rint(ref / PARAM_GRID)).sum()))
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
