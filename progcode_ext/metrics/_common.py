"""Shared pieces of the metrics: the missing-weights error, weight-file checks, image batches,
the cache folder and atomic writes."""
import hashlib
import os

import numpy as np
import torch

from vdvae.errors import ConfigError, UserError


class MissingWeightsError(UserError, RuntimeError):
    """A metric's network weights (or the package that defines the network) are not available.
    The message names the file, where to get it and the flag that takes a local copy."""

    def __init__(self, message, path=None, url=None):
        super().__init__(message)
        self.path, self.url = path, url


def default_cache_dir():
    """$PROGCODE_CACHE, else ~/.cache/progcode/metrics."""
    return os.environ.get('PROGCODE_CACHE') or os.path.join(os.path.expanduser('~'), '.cache',
                                                              'progcode', 'metrics')


def sha256_prefix(path, n=8):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()[:n]


def load_state_dict_file(path, what, how_to_get, flag):
    """torch.load(path, weights_only=True) onto the CPU, or MissingWeightsError naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingWeightsError(f'{what} weights file not found: {path}. {how_to_get}; pass the '
                                  f'local copy with {flag} PATH', path=path)
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise MissingWeightsError(f'{what} weights file {path} cannot be read as a PyTorch state '
                                  f'dict ({type(e).__name__}: {str(e).splitlines()[0][:200]}). '
                                  f'{how_to_get}; pass the local copy with {flag} PATH',
                                  path=path) from e
    if not isinstance(state, dict):
        raise MissingWeightsError(f'{what} weights file {path} holds a {type(state).__name__}, not '
                                  f'a state dict. {how_to_get}; pass it with {flag} PATH',
                                  path=path)
    return state


def image_batches(images, batch_size):
    """Yield uint8 NHWC torch batches of `images`: a uint8 array/tensor (N, H, W, C) or a dataset
    whose `ds[list_of_indices]` gives such a batch (vdvae.data's datasets)."""
    n = len(images)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if isinstance(images, (np.ndarray, torch.Tensor)):
            batch = images[start:stop]
        else:
            batch = images[list(range(start, stop))]
        batch = torch.as_tensor(np.asarray(batch) if not isinstance(batch, torch.Tensor) else batch)
        if batch.dtype != torch.uint8 or batch.dim() != 4 or batch.shape[-1] not in (1, 3):
            raise TypeError(f'metrics take uint8 NHWC images with 1 or 3 channels, got '
                            f'{batch.dtype} of shape {tuple(batch.shape)}')
        yield batch


def to_nchw_unit(batch, device, channels=None):
    """uint8 NHWC -> float32 NCHW in [0, 1] on `device`; 1 channel repeated to `channels`."""
    x = batch.to(device).permute(0, 3, 1, 2).float().div_(255.)
    if channels is not None and x.shape[1] != channels:
        if x.shape[1] != 1:
            raise ConfigError(f'cannot turn {x.shape[1]}-channel images into {channels} channels')
        x = x.repeat(1, channels, 1, 1)
    return x


def atomic_savez(path, **arrays):
    """np.savez, atomically (the core's temporary-file-and-rename writer)."""
    from vdvae.checkpoint import atomic_write
    atomic_write(path, lambda f: np.savez(f, **arrays))



def package_missing_error(metric, package, error, weights, url, flag):
    """The MissingWeightsError for a metric whose package (or a torchvision that loads beside this
    torch) cannot be imported: what failed, how to install, where the weights come from."""
    detail = str(error).splitlines()[0][:200] if str(error) else ''
    return MissingWeightsError(
        f"{metric} needs the package {package} and a torchvision that works with torch "
        f"{torch.__version__}, which cannot be imported here ({type(error).__name__}: {detail}); "
        f"install them with pip install '.[eval]' (or pip install {package} torchvision matching "
        f"your torch). The weights {weights} then come from {url} (downloaded on first use) or "
        f"from a local copy given with {flag} PATH", url=url)
