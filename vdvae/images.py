"""Image grids written with imageio (PNG), atomically."""
import os
import tempfile

import imageio.v2 as imageio
import numpy as np


def tile_images(images, ncol):
    """(N, H, W, C) uint8 -> one (rows*H, ncol*W, C) uint8 image, row-major, blank-padded."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    rows = -(-n // ncol)
    grid = np.zeros((rows * h, ncol * w, c), dtype=np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, ncol)
        grid[r * h:(r + 1) * h, col * w:(col + 1) * w] = image
    return grid


def write_image(path, image):
    """Write a uint8 HWC image (C = 1 or 3) as PNG via a temporary file and a rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    image = image[..., 0] if image.shape[-1] == 1 else image
    fd, tmp = tempfile.mkstemp(prefix='.tmp-', suffix='.png', dir=folder)
    os.close(fd)
    try:
        imageio.imwrite(tmp, image, format='png')
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
