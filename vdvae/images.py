"""Image grids written with imageio (PNG), atomically."""
import imageio.v2 as imageio
import numpy as np
import torch

from .errors import ConfigError

CELL = 128            # grid cells are upscaled to at least this many pixels on a side
GAP_VALUE = 128       # mid-grey: visible against black (MNIST) and white images alike


def grid_scale(h, w, cell=CELL):
    """The integer nearest-neighbour factor that brings an h x w image to at least `cell` pixels
    on its longer side: 4 for 32x32, 8 for 16x16, 2 for 64x64, 1 for 128x128 and above."""
    return max(1, cell // max(h, w))


def tile_images(images, ncol, scale=None, gap=2, gap_value=GAP_VALUE):
    """(N, H, W, C) uint8 (C = 1 or 3) -> one uint8 image of the images in `ncol` columns,
    row-major. Each image is upscaled by nearest neighbour by `scale` (None: `grid_scale`); cells
    are separated by `gap` pixels (at the upscaled size) of the value `gap_value`, with no border
    around the outside; the cells after the last image are blank (0). `scale=1, gap=0` gives the
    plain (rows*H, ncol*W, C) tiling."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ConfigError(f'tile_images expects (N, H, W, C) images, got shape {images.shape}')
    n, h, w, c = images.shape
    s = grid_scale(h, w) if scale is None else int(scale)
    if s < 1 or gap < 0 or ncol < 1:
        raise ConfigError(f'tile_images: need scale >= 1, gap >= 0, ncol >= 1 '
                          f'(got {s}, {gap}, {ncol})')
    rows = -(-n // ncol)
    ch, cw = h * s, w * s
    grid = np.full((rows * ch + max(rows - 1, 0) * gap, ncol * cw + (ncol - 1) * gap, c),
                   gap_value, dtype=np.uint8)
    for i in range(rows * ncol):
        r, col = divmod(i, ncol)
        y, x = r * (ch + gap), col * (cw + gap)
        cell = images[i].repeat(s, axis=0).repeat(s, axis=1) if i < n else 0
        grid[y:y + ch, x:x + cw] = cell
    return grid


def write_image(path, image):
    """Write a uint8 HWC image (C = 1 or 3) as PNG, atomically."""
    from .checkpoint import atomic_write
    image = image[..., 0] if image.shape[-1] == 1 else image
    atomic_write(path, lambda f: imageio.imwrite(f, image, format='png'))


@torch.no_grad()
def write_images(H, ema_model, originals, x_in, path):
    """The model's sample grid (`Model.sample_grid`: upstream's layout unless the model lays out
    its own), one row per line, written as a PNG."""
    rows = ema_model.sample_grid(originals, x_in, H)
    write_image(path, tile_images(np.concatenate(rows), originals.shape[0]))
