"""Image grids written with imageio (PNG), atomically."""
import imageio.v2 as imageio
import numpy as np
import torch


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
    """Write a uint8 HWC image (C = 1 or 3) as PNG, atomically."""
    from .checkpoint import atomic_write
    image = image[..., 0] if image.shape[-1] == 1 else image
    atomic_write(path, lambda f: imageio.imwrite(f, image, format='png'))


@torch.no_grad()
def write_images(H, ema_model, originals, x_in, x_target, path):
    """Upstream's sample grid: a row of originals; rows of reconstructions from the first k
    posterior latents (the rest from the prior at t = 0.1) for evenly spaced k; rows of prior
    samples at t = 1.0, 0.9, 0.8, 0.7 (the first `num_temperatures_visualize`)."""
    n = originals.shape[0]
    if hasattr(ema_model, 'visualize'):                 # models of extensions lay out their own
        write_image(path, tile_images(np.concatenate(ema_model.visualize(originals, x_in, x_target)), n))
        return
    rows = [np.asarray(originals.cpu(), dtype=np.uint8)]
    zs = [s['z'] for s in ema_model.forward_get_latents(x_in)]
    cuts = np.floor(np.linspace(0, 1, H.num_variables_visualize + 2) * len(zs)).astype(int)[1:-1]
    for k in cuts:
        rows.append(ema_model.forward_samples_set_latents(n, zs[:k], t=0.1))
    for t in [1.0, 0.9, 0.8, 0.7][:H.num_temperatures_visualize]:
        rows.append(ema_model.forward_uncond_samples(n, t=t))
    images = np.concatenate(rows, axis=0)
    write_image(path, tile_images(images, n))
