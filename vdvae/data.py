"""Datasets, fixed splits and normalisations: upstream VDVAE's five, and a registry for more.

    H, data_train, data_eval, preprocess_fn = set_up_data(H)
    x = data_train[i]                      # uint8 (H, W, C) tensor, i an int
    batch = data_train[[i, j, k]]          # uint8 (N, H, W, C) tensor (also a tensor/array/slice)
    inp, target = preprocess_fn(batch, device)   # float32 NHWC on `device`

Items are plain uint8 HWC tensors (not upstream's 1-tuples from `TensorDataset`); a DataLoader's
default collate stacks them into an NHWC batch. `preprocess_fn` also takes upstream's `[batch]`.
`data_eval` is the validation split, or the test split when `H.test_eval`. `set_up_data` sets
`H.image_size` / `H.image_channels` from the data (and refuses values that disagree with it).

Datasets (files under `H.data_root`; docs/data.md has the table of files, splits, normalisations
and setup scripts): upstream's cifar10, imagenet32, imagenet64, ffhq_256, ffhq_1024 (upstream's
files, splits and constants) here; extensions add theirs with `register_loader` (progcode's svhn,
celeba64, lsun_bedroom64, mnist5k, mnist16 and imagefolder: progcode_ext/datasets.py, registered
through the `vdvae.plugins` entry point when `vdvae` is imported).

Every failure is one exception with one line that names the file, the problem and the fix:
`MissingDataError` (a FileNotFoundError), `CorruptDataError`, `ImageShapeError`,
`UnknownDatasetError` (ValueErrors); all are `DataError`s.
"""
import os
import pickle
from collections import namedtuple

import numpy as np
import torch

from .errors import UserError
from .hps import DATASET_IMAGE_SHAPE, unknown_name_message

# ------------------------------------------------------------------------------------------------
# Errors


class DataError(UserError):
    """Base of every data error (catch this in a command line: one message, exit non-zero)."""


class MissingDataError(DataError, FileNotFoundError):
    """A data file or folder is missing (or holds no images)."""


class CorruptDataError(DataError, ValueError):
    """A data file exists but cannot be read as what it should be."""


class ImageShapeError(DataError, ValueError):
    """Images of the wrong size or number of channels (for the dataset or for the preset)."""


class UnknownDatasetError(DataError, ValueError):
    """A dataset name that no loader knows."""


# ------------------------------------------------------------------------------------------------
# Normalisation: inp = (x + shift) * scale, target = (x + shift_loss) * scale_loss, x in 0..255
# (ffhq_1024: x / 255 in [0, 1], as upstream's ToTensor gives it).

Normalisation = namedtuple('Normalisation', 'shift scale shift_loss scale_loss low_bit unit_range')

def normalisation(shift, scale, shift_loss=-127.5, scale_loss=1. / 127.5, low_bit=False, unit_range=False):
    return Normalisation(shift, scale, shift_loss, scale_loss, low_bit, unit_range)


NORMALISATION = {
    # upstream's constants
    'cifar10': normalisation(-120.63838, 1. / 64.16736),
    'imagenet32': normalisation(-116.2373, 1. / 69.37404),
    'imagenet64': normalisation(-115.92961967, 1. / 69.37404),
    'ffhq_256': normalisation(-112.8666757481, 1. / 69.84780273, low_bit=True),
    'ffhq_1024': normalisation(-0.4387, 1. / 0.2743, shift_loss=-0.5, scale_loss=2.0, unit_range=True),
}


def make_preprocess(dataset):
    """`preprocess_fn(x, device=None) -> (inp, target)`: uint8 NHWC (or upstream's `[x]`) to float32
    NHWC on `device` (None: x's device), with upstream's arithmetic (float32 constants, in place:
    add then multiply; 5-bit targets floor(x / 8) * 8 for ffhq_256)."""
    norm = NORMALISATION[_check_name(dataset)]
    consts = [torch.tensor([v], dtype=torch.float32).view(1, 1, 1, 1)
              for v in (norm.shift, norm.scale, norm.shift_loss, norm.scale_loss)]
    cache = {}

    def preprocess_fn(x, device=None):
        if isinstance(x, (list, tuple)):
            x = x[0]
        x = torch.as_tensor(x)
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise TypeError(f'preprocess_fn takes a uint8 NHWC batch, got {x.dtype} with shape '
                            f'{tuple(x.shape)}')
        device = torch.device(device) if device is not None else x.device
        if device not in cache:
            cache[device] = [c.to(device) for c in consts]
        shift, scale, shift_loss, scale_loss = cache[device]
        inp = x.to(device, non_blocking=True).float()
        if norm.unit_range:
            inp.div_(255.)
        target = inp.clone()
        inp.add_(shift).mul_(scale)
        if norm.low_bit:
            target.mul_(1. / 8.).floor_().mul_(8.)
        target.add_(shift_loss).mul_(scale_loss)
        return inp, target

    preprocess_fn.normalisation = norm
    return preprocess_fn


def pixel_stats(dataset, batch=1000):
    """(mean, std) of all pixel values of a dataset of uint8 images (float64 accumulation)."""
    total = total_sq = count = 0
    for start in range(0, len(dataset), batch):
        x = dataset[slice(start, min(start + batch, len(dataset)))].double()
        total += x.sum().item()
        total_sq += (x * x).sum().item()
        count += x.numel()
    mean = total / count
    return mean, (total_sq / count - mean * mean) ** 0.5


# ------------------------------------------------------------------------------------------------
# Datasets


class ImageArray(torch.utils.data.Dataset):
    """uint8 NHWC images (an array or a read-only memmap) seen through an index array."""

    def __init__(self, images, indices=None):
        self.images = images
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self):
        return len(self.images) if self.indices is None else len(self.indices)

    def __getstate__(self):
        # a memmap is pickled (e.g. into DataLoader workers) as its file name, not its contents
        state = dict(self.__dict__)
        if isinstance(self.images, np.memmap) and isinstance(self.images.filename, str):
            state['images'] = ('memmap', self.images.filename)
        return state

    def __setstate__(self, state):
        if isinstance(state['images'], tuple):
            state['images'] = np.load(state['images'][1], mmap_mode='r', allow_pickle=False)
        self.__dict__.update(state)

    @property
    def shape(self):
        return (len(self),) + tuple(self.images.shape[1:])

    def __getitem__(self, i):
        if isinstance(i, torch.Tensor):
            i = i.numpy() if i.dim() else int(i)
        if isinstance(i, slice):
            i = np.arange(len(self))[i]
        if isinstance(i, (int, np.integer)):
            if not -len(self) <= i < len(self):
                raise IndexError(f'index {i} out of range for {len(self)} images')
            j = int(i) % len(self)
        else:
            j = np.asarray(i, dtype=np.int64)
            if j.size and not (j.min() >= -len(self) and j.max() < len(self)):
                raise IndexError(f'an index is out of range for {len(self)} images')
            j = j % max(len(self), 1)
        if self.indices is not None:
            j = self.indices[j]
        return torch.from_numpy(np.array(self.images[j], dtype=np.uint8, copy=True))


class ImageFiles(torch.utils.data.Dataset):
    """Image files decoded on access to uint8 HWC; each must be size x size x channels."""

    def __init__(self, paths, size, channels, fix):
        self.paths, self.size, self.channels, self.fix = list(paths), size, channels, fix

    def __len__(self):
        return len(self.paths)

    @property
    def shape(self):
        return (len(self), self.size, self.size, self.channels)

    def __getitem__(self, i):
        if isinstance(i, torch.Tensor):
            i = i.tolist()
        if isinstance(i, slice):
            i = list(range(len(self)))[i]
        if isinstance(i, (int, np.integer)):
            return torch.from_numpy(self._read(self.paths[i]))
        return torch.from_numpy(np.stack([self._read(self.paths[j]) for j in np.asarray(i)]))

    def _read(self, path):
        image = read_image(path, self.fix)
        if image.shape != (self.size, self.size, self.channels):
            raise ImageShapeError(f'{path} is {_geometry_text(image.shape)}, but the other images '
                                  f'are {_geometry_text((self.size, self.size, self.channels))}: '
                                  f'{self.fix}')
        return image


IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.webp', '.bmp')


def read_image(path, fix='check the file'):
    """Decode one image (a path, or the encoded bytes) to uint8 (H, W, C) with C = 1 or 3."""
    import imageio.v3 as iio
    name = path if isinstance(path, (str, os.PathLike)) else '<image bytes>'
    try:
        image = np.asarray(iio.imread(path))
    except FileNotFoundError:
        raise MissingDataError(f'image not found: {name}; {fix}') from None
    except Exception as e:
        raise CorruptDataError(f'cannot decode image {name} ({type(e).__name__}: {e}); {fix}') \
            from e
    if image.ndim == 2:
        image = image[:, :, None]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ImageShapeError(f'{name} is a {image.dtype} image of shape {image.shape}; only 8-bit '
                              f'grayscale or RGB images are read (convert it, e.g. drop the alpha '
                              f'channel); {fix}')
    return image


def list_images(folder):
    """Every image file under `folder` (recursively), sorted by relative path."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files)
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.')]
    return sorted(found, key=lambda p: os.path.relpath(p, folder))


def _geometry_text(shape):
    h, w, c = shape[-3:]
    return f'{h}x{w} with {c} channel{"s" if c != 1 else ""}'


# ------------------------------------------------------------------------------------------------
# Files


def need_file(path, fix):
    if not os.path.exists(path):
        raise MissingDataError(f'file not found: {path}; {fix}')
    return path


def load_npy(path, fix):
    """A uint8 (N, S, S, C) array from a .npy file, memory-mapped, never unpickled."""
    need_file(path, fix)
    try:
        array = np.load(path, mmap_mode='r', allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise CorruptDataError(f'{path} is not a readable .npy array ({e}); it is truncated or '
                               f'damaged: {fix}') from e
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 4:
        raise CorruptDataError(f'{path} holds a {getattr(array, "dtype", "?")} array of shape '
                               f'{getattr(array, "shape", "?")}; expected uint8 images of shape '
                               f'(N, size, size, channels): {fix}')
    _check_square(array.shape, path, fix)
    return array


def _check_square(shape, what, fix):
    if shape[1] != shape[2] or shape[3] not in (1, 3):
        raise ImageShapeError(f'{what} holds images of {_geometry_text(shape)}; the model needs '
                              f'square images with 1 or 3 channels: {fix}')


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR-10's batches hold: dicts, lists, bytes and NumPy arrays."""
    ALLOWED = {
        ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
        ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
        ('numpy.core.numeric', '_frombuffer'), ('numpy._core.numeric', '_frombuffer'),
        ('numpy', 'ndarray'), ('numpy', 'dtype'), ('_codecs', 'encode'),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            if module == '_codecs':
                import codecs
                return codecs.encode
            if module.startswith('numpy.core'):
                module = 'numpy._core' + module[len('numpy.core'):]
            obj = __import__(module, fromlist=[name])
            return getattr(obj, name)
        raise pickle.UnpicklingError(f'refusing to load {module}.{name}, which CIFAR-10 batches '
                                     'never contain')


def load_cifar_batch(path, fix):
    """(N, 32, 32, 3) uint8 images of one CIFAR-10 python batch file."""
    need_file(path, fix)
    try:
        with open(path, 'rb') as f:
            batch = _CifarUnpickler(f, encoding='bytes').load()
    except Exception as e:
        raise CorruptDataError(f'{path} is not a CIFAR-10 python batch ({type(e).__name__}: {e}); '
                               f'{fix}') from e
    data = batch.get(b'data', batch.get('data')) if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise CorruptDataError(f'{path} has no uint8 "data" array of shape (N, 3072); {fix}')
    if data.shape[1] != 3 * 32 * 32:
        raise ImageShapeError(f'{path} holds rows of {data.shape[1]} values, but CIFAR-10 images '
                              f'are 3x32x32 = 3072; {fix}')
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def last_of_permutation(n, seed, n_valid, what, fix):
    """(train, valid) indices: the last `n_valid` of RandomState(seed).permutation(n) -> valid."""
    if n <= n_valid:
        raise CorruptDataError(f'{what} holds {n} images; its fixed split puts the last {n_valid} '
                               f'of a seeded permutation into validation, so it needs more: {fix}')
    perm = np.random.RandomState(seed).permutation(n)
    return perm[:-n_valid], perm[-n_valid:]


# ------------------------------------------------------------------------------------------------
# Loaders: name -> function(data_root) -> {'train', 'valid', 'test'} of datasets

# Split parameters (tests shrink the counts to use small files).
SPLIT_SEED = {'cifar10': 11172018, 'imagenet32': 42, 'imagenet64': 42, 'ffhq_256': 5}
VALID_COUNT = {'cifar10': 5000, 'imagenet32': 5000, 'imagenet64': 5000, 'ffhq_256': 7000}


def setup_hint(script, *args):
    return f'run scripts/{script} {" ".join(args)} (or point --data_root at the data)'


def load_cifar10(root):
    fix = setup_hint('setup_cifar10.sh', root)
    folder = os.path.join(root, 'cifar-10-batches-py')
    train = np.concatenate([load_cifar_batch(os.path.join(folder, f'data_batch_{i}'), fix)
                            for i in range(1, 6)])   # a list: upstream's vstack(generator) crashes
    test = load_cifar_batch(os.path.join(folder, 'test_batch'), fix)
    # sklearn's train_test_split(test_size=n_valid, random_state=seed): the first n_valid of the
    # permutation are the validation split, the rest (in permutation order) the training split
    n_valid = VALID_COUNT['cifar10']
    if len(train) <= n_valid:
        raise CorruptDataError(f'{folder} holds {len(train)} training images, but the fixed '
                               f'split needs more than {n_valid}: {fix}')
    perm = np.random.RandomState(SPLIT_SEED['cifar10']).permutation(len(train))
    return dict(train=ImageArray(train, perm[n_valid:]), valid=ImageArray(train, perm[:n_valid]),
                test=ImageArray(test))


def _load_imagenet(size):
    def load(root):
        fix = setup_hint('setup_imagenet.sh', str(size), root)
        name = f'imagenet{size}'
        train = load_npy(os.path.join(root, f'{name}-train.npy'), fix)
        test = load_npy(os.path.join(root, f'{name}-valid.npy'), fix)
        tr, va = last_of_permutation(len(train), SPLIT_SEED[name], VALID_COUNT[name],
                                      f'{name}-train.npy', fix)
        return dict(train=ImageArray(train, tr), valid=ImageArray(train, va), test=ImageArray(test))
    return load


def load_ffhq_256(root):
    fix = setup_hint('setup_ffhq256.sh', root, 'FFHQ_IMAGES_DIR')
    images = load_npy(os.path.join(root, 'ffhq-256.npy'), fix)
    tr, va = last_of_permutation(len(images), SPLIT_SEED['ffhq_256'], VALID_COUNT['ffhq_256'],
                                  'ffhq-256.npy', fix)
    valid = ImageArray(images, va)
    return dict(train=ImageArray(images, tr), valid=valid, test=valid)


def image_folder(folder, fix, size=None, channels=None):
    """ImageFiles of every image under `folder`; geometry from the first image unless given."""
    if not os.path.isdir(folder):
        raise MissingDataError(f'folder not found: {folder}; {fix}')
    paths = list_images(folder)
    if not paths:
        raise MissingDataError(f'no image files ({", ".join(IMAGE_EXTENSIONS)}) under {folder}; '
                               f'{fix}')
    first = read_image(paths[0], fix)
    if size is None:
        _check_square((1,) + first.shape, paths[0], fix)
        size, channels = first.shape[0], first.shape[2]
    files = ImageFiles(paths, size, channels, fix)
    files._read(paths[0])  # the first image must fit, too
    _check_header_sizes(paths, size, fix)
    return files


def _check_header_sizes(paths, size, fix, limit=200000):
    """Read every file's header (not its pixels) and refuse one of another size."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with imageio
        return
    for path in paths[:limit]:
        try:
            with Image.open(path) as im:
                w, h = im.size
        except Exception as e:
            raise CorruptDataError(f'cannot read image {path} ({type(e).__name__}: {e}); {fix}') \
                from e
        if (h, w) != (size, size):
            raise ImageShapeError(f'{path} is {h}x{w}, but the other images are {size}x{size}: '
                                  f'{fix}')


def load_ffhq_1024(root):
    fix = setup_hint('setup_ffhq1024.sh', root, 'FFHQ_IMAGES_DIR')
    folder = os.path.join(root, 'ffhq1024')
    train = _first_image_checked(os.path.join(folder, 'train'), fix, 'ffhq_1024')
    valid = _first_image_checked(os.path.join(folder, 'valid'), fix, 'ffhq_1024')
    return dict(train=train, valid=valid, test=valid)


def _first_image_checked(folder, fix, dataset):
    """ImageFiles of a big folder: only the first image is decoded now (each item on access)."""
    if not os.path.isdir(folder):
        raise MissingDataError(f'folder not found: {folder}; {fix}')
    paths = list_images(folder)
    if not paths:
        raise MissingDataError(f'no image files under {folder}; {fix}')
    size, channels = DATASET_IMAGE_SHAPE[dataset]
    files = ImageFiles(paths, size, channels, fix)
    first = read_image(paths[0], fix)
    _check_registered(dataset, first.shape, paths[0], fix)
    return files


LOADERS = {
    'cifar10': load_cifar10,
    'imagenet32': _load_imagenet(32),
    'imagenet64': _load_imagenet(64),
    'ffhq_256': load_ffhq_256,
    'ffhq_1024': load_ffhq_1024,
}


def register_loader(name, loader, norm, split_seed=None, valid_count=None):
    """A dataset beyond upstream's: `loader(data_root) -> {'train', 'valid', 'test'}`, its
    `normalisation(...)`, and the seed and size of a validation split it takes from the training
    set (looked up here at load time, so tests can shrink them). Its image geometry is registered
    with `vdvae.hps.register_dataset`."""
    LOADERS[name], NORMALISATION[name] = loader, norm
    if split_seed is not None:
        SPLIT_SEED[name] = split_seed
    if valid_count is not None:
        VALID_COUNT[name] = valid_count


# ------------------------------------------------------------------------------------------------
# Entry points


def _check_name(dataset):
    if dataset not in LOADERS:
        raise UnknownDatasetError('--dataset: ' + unknown_name_message('dataset', str(dataset),
                                                                       LOADERS))
    return dataset


def _registered_geometry(dataset):
    """(size, channels) registered for `dataset`, or None where only its files tell."""
    shape = DATASET_IMAGE_SHAPE.get(dataset, (None, None))
    return None if None in shape else shape


def _check_registered(dataset, shape, what, fix):
    if _registered_geometry(dataset):
        size, channels = _registered_geometry(dataset)
        if tuple(shape[-3:]) != (size, size, channels):
            raise ImageShapeError(f'{what} holds images of {_geometry_text(shape)}, but {dataset} '
                                  f'images are {_geometry_text((size, size, channels))}; it is not '
                                  f'{dataset} data: {fix}')


def load_splits(dataset, data_root='./'):
    """{'train', 'valid', 'test'} datasets of uint8 HWC images, checked against the dataset's
    registered geometry."""
    splits = LOADERS[_check_name(dataset)](os.fspath(data_root))
    for name, split in splits.items():
        _check_registered(dataset, split.shape, f'the {name} split of {dataset} under {data_root}',
                          'check --dataset and --data_root, or re-run the setup script')
    return splits


def image_geometry(dataset, data_root='./'):
    """(image_size, channels) of a dataset without loading it: the registered geometry, or for
    `imagefolder` the first training image."""
    if _registered_geometry(_check_name(dataset)):
        return _registered_geometry(dataset)
    root = os.fspath(data_root)
    folder = os.path.join(root, 'train') if os.path.isdir(os.path.join(root, 'train')) else root
    if not os.path.isdir(folder):
        raise MissingDataError(f'image folder not found: {folder}; point --data_root at it')
    paths = list_images(folder)
    if not paths:
        raise MissingDataError(f'no image files under {folder}; point --data_root at a folder of '
                               'PNG/JPEG images')
    image = read_image(paths[0])
    return image.shape[0], image.shape[2]


def resolve_geometry(H):
    """Fill H.image_size / H.image_channels (where None) from the dataset, without loading it: what
    a command that builds a model without reading the data (sampling) does after parsing flags."""
    if H.get('image_size') is None or H.get('image_channels') is None:
        size, channels = image_geometry(H.get('dataset'), H.get('data_root', './'))
        H.image_size = size if H.get('image_size') is None else H.image_size
        H.image_channels = channels if H.get('image_channels') is None else H.image_channels
    return H


def _get(H, key, default=None):
    try:
        value = H[key] if isinstance(H, dict) else getattr(H, key)
    except (KeyError, AttributeError):
        return default
    return default if value is None else value


def set_up_data(H):
    """Upstream's entry point: (H, data_train, data_valid_or_test, preprocess_fn). Sets
    H.image_size / H.image_channels from the data; values already in H must agree with it."""
    dataset = _check_name(_get(H, 'dataset', 'cifar10'))
    splits = load_splits(dataset, _get(H, 'data_root', './'))
    _, size, _, channels = splits['train'].shape
    want_size, want_channels = _get(H, 'image_size'), _get(H, 'image_channels')
    if (want_size not in (None, size)) or (want_channels not in (None, channels)):
        raise ImageShapeError(
            f'the {dataset} images are {_geometry_text((size, size, channels))}, but the '
            f'preset/flags say image_size {want_size}, image_channels {want_channels}: drop '
            f'--image_size/--image_channels (they default to the data), or use a preset and '
            f'data of the same size')
    H.image_size, H.image_channels = size, channels
    eval_split = splits['test'] if _get(H, 'test_eval', False) else splits['valid']
    return H, splits['train'], eval_split, make_preprocess(dataset)

