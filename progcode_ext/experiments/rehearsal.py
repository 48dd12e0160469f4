"""Made-up source files for a rehearsal of the paper-scale protocol (scripts/rehearse.sh): each
dataset in the format its download comes in, so that its own setup script converts them exactly
as it converts the real thing.

    python -m progcode_ext.experiments.rehearsal svhn DIR       # DIR/{train,test}_32x32.mat
    python -m progcode_ext.experiments.rehearsal celeba64 DIR   # DIR/img_align_celeba/*.jpg and
                                                                # DIR/list_eval_partition.txt
    python -m progcode_ext.experiments.rehearsal lsun64 DIR     # DIR/{train,val}/*.jpg
    python -m progcode_ext.experiments.rehearsal weights DIR    # DIR/fid-random.pth and
                                                                # DIR/alexnet-random.pth

The images are smooth random colour fields (a few Gaussian blobs each), at the sources' real
sizes: SVHN 32x32 in MATLAB's (H, W, C, N) layout with labels 1..10; CelebA's aligned 178x218
JPEGs with the official partition file's format (0 train, 1 valid, 2 test); LSUN bedrooms as
JPEGs of varied sizes and aspect ratios. SVHN's and LSUN's validation splits are the last 5,000
training images (vdvae.data.VALID_COUNT), so those two get 5,000 more training images than the
few hundred a rehearsal trains on.

`weights` writes networks of random values in the layouts of pytorch-fid's Inception file and of
torchvision's AlexNet file, for rehearsing the real FID and LPIPS path (--fid_weights,
--lpips_weights) where the real weights cannot be downloaded: the numbers they give mean nothing,
the code they run is the real one. They need pytorch-fid, lpips and torchvision ('.[eval]').
"""
import argparse
import os
import sys

import numpy as np

from vdvae.data import VALID_COUNT
from vdvae.errors import ConfigError, exit_status

N_TRAIN, N_TEST = 256, 64


def blobs(rng, n, height, width, k=4):
    """n uint8 (height, width, 3) images, each a sum of k Gaussian blobs of random colours."""
    y = np.linspace(0, 1, height)[None, :, None, None]
    x = np.linspace(0, 1, width)[None, None, :, None]
    out = np.zeros((n, height, width, 3))
    for _ in range(k):
        cy, cx = rng.random((2, n, 1, 1, 1))
        size = 0.05 + 0.3 * rng.random((n, 1, 1, 1))
        colour = rng.uniform(-1, 1, (n, 1, 1, 3))
        out += colour * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * size ** 2))
    return np.clip(127.5 + 80 * out, 0, 255).astype(np.uint8)


def write_jpegs(folder, images, names):
    import imageio.v3 as iio
    os.makedirs(folder, exist_ok=True)
    for image, name in zip(images, names):
        iio.imwrite(os.path.join(folder, name), image, extension='.jpg', quality=95)


def make_svhn(out, rng):
    import scipy.io
    os.makedirs(out, exist_ok=True)
    for split, n in (('train', VALID_COUNT['svhn'] + N_TRAIN), ('test', N_TEST)):
        x = blobs(rng, n, 32, 32)
        scipy.io.savemat(os.path.join(out, f'{split}_32x32.mat'),
                         {'X': np.ascontiguousarray(x.transpose(1, 2, 3, 0)),
                          'y': rng.integers(1, 11, (n, 1)).astype(np.uint8)})


def make_celeba64(out, rng):
    counts = (N_TRAIN, N_TEST, N_TEST)
    names = [f'{i + 1:06d}.jpg' for i in range(sum(counts))]
    write_jpegs(os.path.join(out, 'img_align_celeba'), blobs(rng, len(names), 218, 178), names)
    codes = np.repeat([0, 1, 2], counts)
    with open(os.path.join(out, 'list_eval_partition.txt'), 'w') as f:
        f.writelines(f'{name} {code}\n' for name, code in zip(names, codes))


def make_lsun64(out, rng):
    shapes = [(64, 86), (96, 72), (80, 80), (120, 90)]
    for split, n in (('train', VALID_COUNT['lsun_bedroom64'] + N_TRAIN), ('val', N_TEST)):
        for k, (h, w) in enumerate(shapes):
            index = range(k, n, len(shapes))
            write_jpegs(os.path.join(out, split), blobs(rng, len(index), h, w),
                        [f'{i:07d}.jpg' for i in index])


def random_fid_weights(path, seed=0):
    """A random FID Inception in pytorch-fid's own layout, saved to `path`: the state dict of
    pytorch_fid.inception.fid_inception_v3() (torchvision's Inception v3 with FID's blocks and a
    1008-way fc), built by the package itself with its download replaced by the new network's
    own weights. Convolutions get He-scaled draws (the default initialisation shrinks the pool3
    features to ~1e-8) and batch norms random statistics, so that a loader that kept defaults
    anywhere would show."""
    import torch
    from pytorch_fid import inception as pfi
    built = []
    real, download = pfi._inception_v3, pfi.load_state_dict_from_url

    def recording(*args, **kwargs):
        built.append(real(*args, **kwargs))
        return built[-1]
    pfi._inception_v3 = recording
    pfi.load_state_dict_from_url = lambda url, *a, **k: built[-1].state_dict()
    try:
        torch.manual_seed(seed)
        state = pfi.fid_inception_v3().state_dict()
    finally:
        pfi._inception_v3, pfi.load_state_dict_from_url = real, download
    g = torch.Generator().manual_seed(seed + 1)
    for key, value in state.items():
        if value.dim() == 4:
            value.copy_(torch.randn(value.shape, generator=g) * (2 / value[0].numel()) ** 0.5)
        elif key.endswith('running_mean') or key.endswith('.bias'):
            value.copy_(torch.randn(value.shape, generator=g) * 0.1)
        elif key.endswith('running_var') or key.endswith('bn.weight'):
            value.copy_(torch.rand(value.shape, generator=g) + 0.5)
    torch.save(state, path)
    return path


def random_alexnet_weights(path, seed=2):
    """A random torchvision AlexNet, whole (features and classifier, as torchvision's file)."""
    import torch
    import torchvision
    torch.manual_seed(seed)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


def make_weights(out, rng):
    os.makedirs(out, exist_ok=True)
    random_fid_weights(os.path.join(out, 'fid-random.pth'))
    random_alexnet_weights(os.path.join(out, 'alexnet-random.pth'))


MAKERS = {'svhn': make_svhn, 'celeba64': make_celeba64, 'lsun64': make_lsun64,
          'weights': make_weights}


def run(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('dataset', choices=sorted(MAKERS))
    p.add_argument('out', help='folder to write the source files into')
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    if os.path.exists(args.out) and os.listdir(args.out):
        raise ConfigError(f'{args.out} is not empty; remove it or choose another folder')
    MAKERS[args.dataset](args.out, np.random.default_rng(args.seed))
    print(f'made-up {args.dataset} sources in {args.out}')


def main(argv=None):
    return exit_status(run, sys.argv[1:] if argv is None else argv)


if __name__ == '__main__':
    raise SystemExit(main())
