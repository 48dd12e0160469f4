"""Convert downloaded datasets into the files `vdvae.data` reads (run by scripts/setup_*.sh).

  python -m vdvae.prepare_data check DATASET --data_root DIR     # load it; print geometry, splits
  python -m vdvae.prepare_data imagenet --size 32 --train DIR --valid DIR --out DATA_ROOT
  python -m vdvae.prepare_data ffhq256 --src DIR --out DATA_ROOT
  python -m vdvae.prepare_data ffhq1024 --src DIR --out DATA_ROOT [--link symlink|copy|move]
  python -m vdvae.prepare_data celeba64 --src DIR [--partition FILE] --out DATA_ROOT
  python -m vdvae.prepare_data lsun_bedroom64 --train SRC --val SRC --out DATA_ROOT [--max_images N]

cifar10 and svhn need no conversion (their setup scripts unpack / download, then run `check`).
Outputs are written to a temporary file and renamed when complete; an existing output is never
replaced unless --overwrite is given. Any error prints one line and exits with status 2.

Resizing (`resize_images`): torch's bilinear interpolation with antialiasing (a triangle filter
widened by the reduction factor, the filter of PIL's `Image.resize(..., BILINEAR)`), rounded to
the nearest integer. CelebA: the fixed box `CELEBA_CROP` of the aligned 178x218 images, then 64x64.
LSUN: the centred square of side min(height, width), then 64x64.
"""
import argparse
import os
import shutil
import sys

import numpy as np
import torch

from .data import (LOADERS, CorruptDataError, ImageShapeError, MissingDataError, list_images,
                   load_splits, read_image)
from .errors import ConfigError, UserError, exit_status


class OutputExistsError(UserError, FileExistsError):
    """A converter's output is already there (and --overwrite was not given)."""


# CelebA (aligned and cropped, 178 wide x 218 high): the centred 140x140 square, as
# (left, top, right, bottom) in pixels, right/bottom exclusive: rows 39..178, columns 19..158.
CELEBA_SOURCE_SIZE = (218, 178)            # (height, width)
CELEBA_CROP = (19, 39, 159, 179)
# CelebA's official partition (list_eval_partition.txt) by image number: 1..162770 train,
# 162771..182637 valid, 182638..202599 test.
CELEBA_PARTITION = (('train', 1, 162770), ('valid', 162771, 182637), ('test', 182638, 202599))
# FFHQ: images 00000..64999 train, 65000..69999 valid (upstream's setup_ffhq1024.sh).
FFHQ_FIRST_VALID = 65000
CHUNK = 256


# ------------------------------------------------------------------------------------------------
# Image operations

def resize_images(images, size):
    """uint8 (N, H, W, C) -> uint8 (N, size, size, C), antialiased bilinear (see module doc)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    if x.shape[-2:] != (size, size):
        x = torch.nn.functional.interpolate(x, size=(size, size), mode='bilinear',
                                            align_corners=False, antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def centre_square(image):
    """The centred square of side min(H, W) of an (H, W, C) image (odd margins: the extra pixel
    goes to the bottom/right)."""
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return image[top:top + s, left:left + s]


def celeba_crop(image, name='image'):
    if image.shape[:2] != CELEBA_SOURCE_SIZE:
        raise ImageShapeError(f'{name} is {image.shape[0]}x{image.shape[1]}, but the aligned '
                              f'CelebA images (img_align_celeba) are 218x178 (height x width); '
                              'pass the img_align_celeba folder as --src')
    left, top, right, bottom = CELEBA_CROP
    return image[top:bottom, left:right]


def _rgb(image, name):
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image


# ------------------------------------------------------------------------------------------------
# Writing

def _check_free(path, overwrite):
    if os.path.exists(path) and not overwrite:
        raise OutputExistsError(f'{path} exists; remove it or pass --overwrite')


def write_npy(path, n, shape, chunks, overwrite=False):
    """Fill a uint8 (n, *shape) .npy from an iterator of uint8 chunks, atomically."""
    _check_free(path, overwrite)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f'.tmp-{os.getpid()}-{os.path.basename(path)}')
    try:
        out = np.lib.format.open_memmap(tmp, mode='w+', dtype=np.uint8, shape=(n,) + tuple(shape))
        filled = 0
        for chunk in chunks:
            out[filled:filled + len(chunk)] = chunk
            filled += len(chunk)
        if filled != n:
            raise CorruptDataError(f'expected {n} images for {path}, got {filled}')
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f'wrote {path}: {n} images of {"x".join(map(str, shape))}')
    return path


def _chunked(items, fn, chunk=CHUNK):
    for start in range(0, len(items), chunk):
        yield fn(items[start:start + chunk])


def _folder_images(folder, what):
    if not os.path.isdir(folder):
        raise MissingDataError(f'{what} folder not found: {folder}')
    paths = list_images(folder)
    if not paths:
        raise MissingDataError(f'no image files under {folder} ({what})')
    return paths


# ------------------------------------------------------------------------------------------------
# Converters

def convert_imagenet(size, train_dir, valid_dir, out, overwrite=False):
    """Downsampled ImageNet folders of size x size PNGs -> imagenet{size}-{train,valid}.npy (files
    in sorted path order; upstream's files_to_npy.py used unsorted glob order)."""
    outputs = []
    for split, folder in (('train', train_dir), ('valid', valid_dir)):
        paths = _folder_images(folder, f'imagenet{size} {split}')

        def load(chunk):
            images = [_rgb(read_image(p, 'remove or replace the file'), p) for p in chunk]
            for p, image in zip(chunk, images):
                if image.shape != (size, size, 3):
                    raise ImageShapeError(f'{p} is {image.shape[0]}x{image.shape[1]}, but '
                                          f'imagenet{size} images are {size}x{size}')
            return np.stack(images)
        outputs.append(write_npy(os.path.join(out, f'imagenet{size}-{split}.npy'), len(paths),
                                 (size, size, 3), _chunked(paths, load), overwrite))
    return outputs


def convert_ffhq256(src, out, overwrite=False):
    """FFHQ images (square, any size >= 256, e.g. the official images1024x1024) -> ffhq-256.npy,
    resized to 256 in sorted file order (00000..69999)."""
    paths = _folder_images(src, 'FFHQ')

    def load(chunk):
        images = []
        for p in chunk:
            image = _rgb(read_image(p, 'remove or replace the file'), p)
            if image.shape[0] != image.shape[1] or image.shape[0] < 256:
                raise ImageShapeError(f'{p} is {image.shape[0]}x{image.shape[1]}; FFHQ images are '
                                      'square and at least 256x256')
            images.append(resize_images(image[None], 256)[0])
        return np.stack(images)
    return write_npy(os.path.join(out, 'ffhq-256.npy'), len(paths), (256, 256, 3),
                     _chunked(paths, load), overwrite)


def _image_number(path):
    stem = os.path.splitext(os.path.basename(path))[0]
    if not stem.isdigit():
        raise CorruptDataError(f'{path}: expected a numbered file name (e.g. 00042.png, '
                               '000042.jpg) to assign the official split')
    return int(stem)


def arrange_ffhq1024(src, out, link='symlink', overwrite=False):
    """FFHQ 1024 PNGs (numbered 00000..69999, any sub-folders) -> out/ffhq1024/{train,valid}/,
    linked (default), copied or moved; 00000..64999 train, 65000..69999 valid."""
    paths = _folder_images(src, 'FFHQ 1024')
    plan = []
    for p in paths:
        split = 'train' if _image_number(p) < FFHQ_FIRST_VALID else 'valid'
        target = os.path.join(out, 'ffhq1024', split, os.path.basename(p))
        _check_free(target, overwrite)
        plan.append((os.path.abspath(p), target))
    for p, target in plan:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.lexists(target):
            os.unlink(target)
        if link == 'symlink':
            os.symlink(p, target)
        elif link == 'copy':
            shutil.copy2(p, target)
        elif link == 'move':
            shutil.move(p, target)
        else:
            raise ConfigError(f'--link must be symlink, copy or move, not {link!r}')
    n_valid = sum(t.split(os.sep)[-2] == 'valid' for _, t in plan)
    print(f'arranged {len(plan)} images under {os.path.join(out, "ffhq1024")}: '
          f'{len(plan) - n_valid} train, {n_valid} valid ({link})')
    return os.path.join(out, 'ffhq1024')


def _celeba_splits(paths, partition):
    splits = {'train': [], 'valid': [], 'test': []}
    if partition:
        names = {}
        with open(partition) as f:
            for line in f:
                if line.strip():
                    name, code = line.split()
                    names[name] = ('train', 'valid', 'test')[int(code)]
        for p in paths:
            if os.path.basename(p) not in names:
                raise CorruptDataError(f'{p} is not listed in {partition}')
            splits[names[os.path.basename(p)]].append(p)
    else:
        for p in paths:
            number = _image_number(p)
            for split, first, last in CELEBA_PARTITION:
                if first <= number <= last:
                    splits[split].append(p)
                    break
            else:
                raise CorruptDataError(f'{p}: CelebA images are numbered 000001..202599')
    return splits


def convert_celeba64(src, out, partition=None, overwrite=False):
    """img_align_celeba JPEGs -> celeba64-{train,valid,test}.npy: crop CELEBA_CROP, resize to 64,
    official partition (from `partition` = list_eval_partition.txt, or by image number)."""
    splits = _celeba_splits(_folder_images(src, 'CelebA img_align_celeba'), partition)
    for split, paths in splits.items():
        if not paths:
            raise MissingDataError(f'no CelebA images of the {split} split under {src}')

    def load(chunk):
        crops = [celeba_crop(_rgb(read_image(p, 'remove or replace the file'), p), p)
                 for p in chunk]
        return resize_images(np.stack(crops), 64)
    for split, paths in splits.items():
        _check_free(os.path.join(out, f'celeba64-{split}.npy'), overwrite)
    return [write_npy(os.path.join(out, f'celeba64-{split}.npy'), len(paths), (64, 64, 3),
                      _chunked(paths, load), overwrite) for split, paths in splits.items()]


class _LmdbSource:
    """The values (encoded images) of an LSUN LMDB export, in key order."""

    def __init__(self, path, max_images=None):
        try:
            import lmdb
        except ImportError:
            raise MissingDataError(f'{path} is an LMDB database, and reading it needs the package '
                                   'lmdb: pip install lmdb (or pip install "progcode[lsun]"), or '
                                   'export the images to a folder first') from None
        self.path = path
        self.env = lmdb.open(path, readonly=True, lock=False, readahead=False, max_readers=1)
        n = self.env.stat()['entries']
        self.n = n if max_images is None else min(n, max_images)

    def __len__(self):
        return self.n

    def __iter__(self):
        with self.env.begin(write=False) as txn:
            for i, (key, value) in enumerate(txn.cursor()):
                if i >= self.n:
                    break
                yield f'{self.path}[{key.decode(errors="replace")}]', bytes(value)


def _lsun_source(src, max_images):
    if os.path.isfile(os.path.join(src, 'data.mdb')):
        return _LmdbSource(src, max_images)
    paths = _folder_images(src, 'LSUN bedroom')[:max_images]
    return [(p, p) for p in paths]


def convert_lsun_bedroom64(train_src, val_src, out, max_images=None, overwrite=False):
    """LSUN bedroom (official LMDB export, or a folder of images) -> lsun_bedroom64-train.npy
    (the first `max_images` in key / sorted-path order) and lsun_bedroom64-test.npy (the official
    val set): centred square crop, resize to 64."""
    jobs = [('train', train_src, max_images), ('test', val_src, None)]
    for split, _, _ in jobs:
        _check_free(os.path.join(out, f'lsun_bedroom64-{split}.npy'), overwrite)
    outputs = []
    for split, src, limit in jobs:
        source = _lsun_source(src, limit)

        def chunks(source=source):
            batch = []
            for name, item in source:
                image = _rgb(read_image(item, f'{name}: remove it or convert without it'), name)
                batch.append(resize_images(centre_square(image)[None], 64)[0])
                if len(batch) == CHUNK:
                    yield np.stack(batch)
                    batch = []
            if batch:
                yield np.stack(batch)
        outputs.append(write_npy(os.path.join(out, f'lsun_bedroom64-{split}.npy'), len(source),
                                 (64, 64, 3), chunks(), overwrite))
    return outputs


def check(dataset, data_root):
    splits = load_splits(dataset, data_root)
    _, size, _, channels = splits['train'].shape
    sizes = ', '.join(f'{k} {len(v)}' for k, v in splits.items())
    print(f'{dataset} under {data_root}: {size}x{size}x{channels} images; {sizes}')
    return splits


# ------------------------------------------------------------------------------------------------
# Command line

def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m vdvae.prepare_data', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', required=True)
    p = commands.add_parser('check', help='load a dataset and print its geometry and splits')
    p.add_argument('dataset', help=', '.join(LOADERS))
    p.add_argument('--data_root', default='./', help='dataset folder (default: %(default)s)')

    def converter(name, help_text):
        p = commands.add_parser(name, help=help_text)
        p.add_argument('--out', required=True, help='DATA_ROOT to write into')
        p.add_argument('--overwrite', action='store_true', help='replace existing outputs')
        return p
    p = converter('imagenet', 'downsampled ImageNet PNG folders -> imagenet{32,64}-*.npy')
    p.add_argument('--size', type=int, choices=(32, 64), required=True)
    p.add_argument('--train', required=True, help='folder of the training PNGs')
    p.add_argument('--valid', required=True, help='folder of the validation PNGs (= test split)')
    p = converter('ffhq256', 'FFHQ images -> ffhq-256.npy')
    p.add_argument('--src', required=True, help='folder of FFHQ images (e.g. images1024x1024)')
    p = converter('ffhq1024', 'FFHQ 1024 PNGs -> DATA_ROOT/ffhq1024/{train,valid}/')
    p.add_argument('--src', required=True, help='folder of FFHQ images1024x1024')
    p.add_argument('--link', choices=('symlink', 'copy', 'move'), default='symlink',
                   help='how to place the files (default: %(default)s)')
    p = converter('celeba64', 'CelebA img_align_celeba -> celeba64-{train,valid,test}.npy')
    p.add_argument('--src', required=True, help='the img_align_celeba folder')
    p.add_argument('--partition', help='list_eval_partition.txt (default: by image number)')
    p = converter('lsun_bedroom64', 'LSUN bedroom -> lsun_bedroom64-{train,test}.npy')
    p.add_argument('--train', required=True, help='bedroom_train_lmdb folder or image folder')
    p.add_argument('--val', required=True, help='bedroom_val_lmdb folder or image folder')
    p.add_argument('--max_images', type=int, default=None,
                   help='convert only the first N training images (default: all)')
    return exit_status(convert, parser.parse_args(argv))


def convert(args):
    """Run the subcommand `args.command` of `main`."""
    if args.command == 'check':
        check(args.dataset, args.data_root)
    elif args.command == 'imagenet':
        convert_imagenet(args.size, args.train, args.valid, args.out, args.overwrite)
    elif args.command == 'ffhq256':
        convert_ffhq256(args.src, args.out, args.overwrite)
    elif args.command == 'ffhq1024':
        arrange_ffhq1024(args.src, args.out, args.link, args.overwrite)
    elif args.command == 'celeba64':
        convert_celeba64(args.src, args.out, args.partition, args.overwrite)
    elif args.command == 'lsun_bedroom64':
        convert_lsun_bedroom64(args.train, args.val, args.out, args.max_images,
                               args.overwrite)


if __name__ == '__main__':
    sys.exit(main())
