"""What the codec's command line reads and writes: images in (PNG files, or .npy arrays of uint8
NHWC), checked against the shape the model codes; PNGs out."""
import os

import numpy as np

from vdvae.data import IMAGE_EXTENSIONS, read_image
from vdvae.images import write_image

from .container import CodecError

FIX = 'give 8-bit PNG files or a .npy of uint8 NHWC images'


def _shape_text(shape):
    h, w, c = shape
    return f'{h}x{w} with {c} channel{"s" * (c != 1)}'


def read_images(paths, shape):
    """uint8 NHWC of every image in `paths` (PNG files and .npy arrays, in order), each checked to
    be of `shape` (H, W, C), the model's."""
    shape = tuple(shape)
    parts = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            raise CodecError(f'{path} is a folder; {FIX}')
        if not os.path.exists(path):
            raise CodecError(f'image file not found: {path}; check the path')
        if path.lower().endswith('.npy'):
            images = _read_npy(path)
        elif path.lower().endswith(IMAGE_EXTENSIONS):
            images = read_image(path, FIX)[None]
        else:
            raise CodecError(f'{path} is neither an image ({", ".join(IMAGE_EXTENSIONS)}) nor a '
                             f'.npy array; {FIX}')
        if images.shape[1:] != shape:
            raise CodecError(f'{path} holds {_shape_text(images.shape[1:])} images, but the '
                             f'model codes {_shape_text(shape)}: resize or convert it to that')
        parts.append(images)
    if not parts:
        raise CodecError(f'no images given; {FIX}')
    return np.concatenate(parts)


def _read_npy(path):
    try:
        images = np.load(path, allow_pickle=False)
    except Exception as e:
        raise CodecError(f'cannot read {path} as a .npy array ({type(e).__name__}: {e}); '
                         f'{FIX}') from e
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) == 0:
        raise CodecError(f'{path} is a {images.dtype} array of shape {images.shape}; {FIX}')
    return images


def output_names(n_images, n_x_hats, whole):
    """{key: file names}: 'xhat{k}' -> x_hat_k of each image (k = 1..n_x_hats), 'images' -> the
    lossless images when the whole file was decoded. Image i is `{i:05d}`."""
    names = {f'xhat{k}': [f'xhat{k}-{i:05d}.png' for i in range(n_images)]
             for k in range(1, n_x_hats + 1)}
    if whole:
        names['images'] = [f'{i:05d}.png' for i in range(n_images)]
    return names


def write_outputs(folder, decoded):
    """Write what `decompress` returned as PNGs under `folder` (see `output_names`); returns the
    paths."""
    x_hats, images = decoded['x_hats'], decoded['images']
    n = len(images) if images is not None else len(x_hats[0])
    names = output_names(n, len(x_hats), images is not None)
    arrays = {f'xhat{k + 1}': x for k, x in enumerate(x_hats)}
    if images is not None:
        arrays['images'] = images
    os.makedirs(folder, exist_ok=True)
    paths = []
    for key, files in names.items():
        for name, image in zip(files, arrays[key]):
            path = os.path.join(folder, name)
            write_image(path, image)
            paths.append(path)
    return paths
