"""FID features: pytorch-fid's InceptionV3 (the TensorFlow FID network ported to PyTorch), the
2048-d pool3 activations.

    model = load_inception(weights='pt_inception-2015-12-05-6726825d.pth')   # or None: download
    feats = inception_features(images_uint8_nhwc, model)                     # (N, 2048) float64

Images are uint8 NHWC with 1 or 3 channels; one channel is repeated to three (as pytorch-fid's
reader converts grayscale files to RGB), values are scaled to [0, 1] (as its ToTensor) and the
network itself resizes bilinearly to 299x299 and maps to [-1, 1] (pytorch-fid's defaults).

Weights: a local file (`--fid_weights PATH`, loaded with weights_only=True), or pytorch-fid's
standard download (torch hub cache, `~/.cache/torch/hub/checkpoints/`). Anything missing - the
package, a torchvision that imports beside this torch, the file - raises MissingWeightsError with
one message that says what and how to get it. pytorch-fid is imported only here, lazily.
"""
import os
import warnings

import numpy as np
import torch

from ._common import (MissingWeightsError, package_missing_error, image_batches, load_state_dict_file,
                      sha256_prefix, to_nchw_unit)

FID_WEIGHTS_FILE = 'pt_inception-2015-12-05-6726825d.pth'
FID_WEIGHTS_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
                   + FID_WEIGHTS_FILE)
FID_WEIGHTS_SHA256_PREFIX = '6726825d'     # torch hub's naming convention: name-<sha256[:8]>.pth
FID_FEATURE_DIM = 2048

_MODELS = {}


def how_to_get_fid_weights():
    return (f'Get {FID_WEIGHTS_FILE} from {FID_WEIGHTS_URL} (pytorch-fid downloads it there on a '
            f'connected machine, into {os.path.join(torch.hub.get_dir(), "checkpoints")})')


def _import_pytorch_fid():
    try:
        from pytorch_fid import inception as module
    except Exception as e:          # ImportError, or torchvision failing to load beside this torch
        raise package_missing_error('FID', 'pytorch-fid', e, FID_WEIGHTS_FILE, FID_WEIGHTS_URL,
                                    '--fid_weights') from e
    return module


def load_inception(weights=None, device='cpu'):
    """pytorch-fid's InceptionV3 returning the 2048-d pool3 block, in eval mode on `device`.

    weights: path of pt_inception-2015-12-05-6726825d.pth, or None for pytorch-fid's standard
    download (torch hub cache). Cached per (weights, device) within the process."""
    key = (os.path.realpath(weights) if weights else None, str(device))
    if key in _MODELS:
        return _MODELS[key]
    state = None
    if weights is not None:      # the file first: named when missing, even without the package
        state = load_state_dict_file(weights, 'FID Inception', how_to_get_fid_weights(),
                                     '--fid_weights')
        found = sha256_prefix(weights)
        if found != FID_WEIGHTS_SHA256_PREFIX:
            warnings.warn(f'{weights}: sha256 starts with {found}, not {FID_WEIGHTS_SHA256_PREFIX} '
                          f'as {FID_WEIGHTS_FILE} should; scores may not be comparable with '
                          f'published FIDs', RuntimeWarning, stacklevel=2)
    module = _import_pytorch_fid()

    def load_local(url, *args, **kwargs):
        return state

    def download(url, *args, **kwargs):
        try:
            return torch.hub.load_state_dict_from_url(url, progress=True, map_location='cpu',
                                                      weights_only=True)
        except Exception as e:
            raise MissingWeightsError(
                f'cannot get the FID Inception weights {FID_WEIGHTS_FILE} by pytorch-fid\'s '
                f'standard download from {url} ({type(e).__name__}: {str(e)[:200]}). Download it '
                f'on a connected machine and pass it with --fid_weights PATH (or copy it into '
                f'{os.path.join(torch.hub.get_dir(), "checkpoints")})', url=url) from e

    original = module.load_state_dict_from_url
    module.load_state_dict_from_url = load_local if state is not None else download
    try:
        block = module.InceptionV3.BLOCK_INDEX_BY_DIM[FID_FEATURE_DIM]
        model = module.InceptionV3([block])
    except MissingWeightsError:
        raise
    except RuntimeError as e:       # load_state_dict: keys or shapes that do not fit
        raise MissingWeightsError(
            f'{weights or FID_WEIGHTS_FILE} does not fit pytorch-fid\'s Inception network '
            f'({str(e).splitlines()[0][:200]}). {how_to_get_fid_weights()}; pass the right file '
            f'with --fid_weights PATH', path=weights, url=FID_WEIGHTS_URL) from e
    finally:
        module.load_state_dict_from_url = original
    model = model.eval().to(device)
    _MODELS[key] = model
    return model


@torch.no_grad()
def inception_features(images, model=None, weights=None, device='cpu', batch_size=50):
    """(N, 2048) float64 pool3 features of uint8 NHWC images (an array, tensor or dataset)."""
    model = model if model is not None else load_inception(weights, device)
    device = next(model.parameters()).device
    out = []
    for batch in image_batches(images, batch_size):
        feats = model(to_nchw_unit(batch, device, channels=3))[0]
        if feats.shape[2:] != (1, 1):
            feats = torch.nn.functional.adaptive_avg_pool2d(feats, (1, 1))
        out.append(feats.flatten(1).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, FID_FEATURE_DIM))
