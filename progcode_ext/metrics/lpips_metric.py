"""LPIPS (Zhang et al., 2018) through the `lpips` package: per-image perceptual distances between
two sets of images, with the AlexNet ('alex', the package's default) or VGG-16 ('vgg') trunk.

    model = load_lpips('alex', backbone_weights='alexnet-owt-7be5be79.pth')   # or None: download
    d = lpips_distance(x_uint8, y_uint8, model)                                # (N,) float64

Two sets of weights: the trunk (torchvision's ImageNet classifier, downloaded by torchvision at run
time, or a local copy given with `--lpips_weights PATH`, loaded with weights_only=True and
checked against torchvision's sha256 prefix) and LPIPS's linear layers (v0.1), which ship inside
the `lpips` package (`--lpips_linear_weights PATH` overrides). Images are uint8 NHWC, 1 channel
repeated to 3, mapped to [-1, 1] as LPIPS expects; no resizing (as the package). Anything missing
raises MissingWeightsError naming the file and how to get it. `lpips` is imported lazily.
"""
import os
import warnings

import numpy as np
import torch

from vdvae.errors import ConfigError

from ._common import (MissingWeightsError, image_batches, load_state_dict_file,
                      package_missing_error, sha256_prefix, to_nchw_unit)

# torchvision's ImageNet weights of the trunks LPIPS uses (IMAGENET1K_V1)
LPIPS_BACKBONES = {
    'alex': ('alexnet-owt-7be5be79.pth',
             'https://download.pytorch.org/models/alexnet-owt-7be5be79.pth'),
    'vgg': ('vgg16-397923af.pth', 'https://download.pytorch.org/models/vgg16-397923af.pth'),
}

_MODELS = {}


def _check_net(net):
    if net not in LPIPS_BACKBONES:
        raise ConfigError(f"LPIPS net must be one of {sorted(LPIPS_BACKBONES)}, got {net!r}")
    return LPIPS_BACKBONES[net]


def how_to_get_lpips_weights(net):
    name, url = _check_net(net)
    return (f'Get {name} from {url} (torchvision downloads it there on a connected machine, into '
            f'{os.path.join(torch.hub.get_dir(), "checkpoints")})')


def _import_lpips(net):
    name, url = _check_net(net)
    try:
        import lpips
    except Exception as e:          # ImportError, or torchvision failing to load beside this torch
        raise package_missing_error('LPIPS', 'lpips', e, f'{name} ({net} trunk)', url,
                                    '--lpips_weights') from e
    return lpips


def _load_trunk(trunk, state, path):
    """torchvision's `features.<i>.<param>` keys -> the LPIPS trunk's `slice<k>.<i>.<param>`."""
    where = {child: slice_name for slice_name, block in trunk.named_children()
             for child in block._modules}
    mapped = {}
    for key, value in state.items():
        parts = key.split('.')
        if parts[0] == 'features' and len(parts) == 3 and parts[1] in where:
            mapped[f'{where[parts[1]]}.{parts[1]}.{parts[2]}'] = value
    try:
        trunk.load_state_dict(mapped, strict=True)
    except RuntimeError as e:
        raise MissingWeightsError(f'{path} does not fit the LPIPS trunk '
                                  f'({str(e).splitlines()[0][:200]}); pass torchvision\'s '
                                  f'ImageNet weights with --lpips_weights PATH',
                                  path=path) from e


def load_lpips(net='alex', backbone_weights=None, linear_weights=None, device='cpu'):
    """lpips.LPIPS(net) in eval mode on `device`. backbone_weights: a local copy of torchvision's
    trunk file (alexnet-owt-7be5be79.pth / vgg16-397923af.pth), or None for torchvision's standard
    download. linear_weights: LPIPS's linear layers (None: the v0.1 file inside the package)."""
    name, url = _check_net(net)
    key = (net, os.path.realpath(backbone_weights) if backbone_weights else None,
           os.path.realpath(linear_weights) if linear_weights else None, str(device))
    if key in _MODELS:
        return _MODELS[key]
    state = None
    if backbone_weights is not None:
        state = load_state_dict_file(backbone_weights, f'LPIPS {net} trunk',
                                     how_to_get_lpips_weights(net), '--lpips_weights')
        expected = name.rsplit('-', 1)[1].split('.')[0]
        found = sha256_prefix(backbone_weights)
        if found != expected:        # as for FID: any trunk computes, only this one compares
            warnings.warn(f'{backbone_weights}: sha256 starts with {found}, not {expected} as '
                          f'torchvision\'s {name} should; distances may not be comparable with '
                          f'published LPIPS. {how_to_get_lpips_weights(net)}',
                          RuntimeWarning, stacklevel=2)
    if linear_weights is not None and not os.path.isfile(linear_weights):
        raise MissingWeightsError(f'LPIPS linear-layer weights file not found: {linear_weights}; '
                                  f'the v0.1 files ship inside the lpips package '
                                  f'(lpips/weights/v0.1/{net}.pth): omit --lpips_linear_weights '
                                  f'to use them', path=linear_weights)
    lpips = _import_lpips(net)
    try:
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=state is not None,
                            model_path=linear_weights, verbose=False)
    except FileNotFoundError as e:   # the linear layers' file
        raise MissingWeightsError(
            f'LPIPS linear-layer weights file not found: {e.filename}; the v0.1 files ship inside '
            f'the lpips package (reinstall it: pip install --force-reinstall lpips) or pass one '
            f'with --lpips_linear_weights PATH', path=e.filename) from e
    except Exception as e:
        raise MissingWeightsError(
            f'cannot build LPIPS ({net}): {type(e).__name__}: {str(e)[:200]}. The trunk weights '
            f'{name} come from torchvision\'s standard download ({url}), which failed or is not '
            f'cached; download it on a connected machine and pass it with --lpips_weights PATH',
            path=backbone_weights, url=url) from e
    if state is not None:
        _load_trunk(model.net, state, backbone_weights)
    model = model.eval().to(device)
    _MODELS[key] = model
    return model


def _to_lpips_input(batch, device):
    return to_nchw_unit(batch, device, channels=3).mul_(2.).sub_(1.)


@torch.no_grad()
def lpips_distance(x, y, model=None, net='alex', backbone_weights=None, device='cpu',
                   batch_size=64):
    """(N,) float64 LPIPS distances between x[i] and y[i] (uint8 NHWC arrays, tensors or datasets
    of the same length and shape)."""
    if len(x) != len(y):
        raise ConfigError(f'LPIPS compares pairs: {len(x)} and {len(y)} images')
    model = model if model is not None else load_lpips(net, backbone_weights, device=device)
    device = next(model.parameters()).device
    out = []
    for a, b in zip(image_batches(x, batch_size), image_batches(y, batch_size)):
        if a.shape != b.shape:
            raise ConfigError(f'LPIPS compares images of one shape: {tuple(a.shape)} and '
                              f'{tuple(b.shape)}')
        d = model(_to_lpips_input(a, device), _to_lpips_input(b, device))
        out.append(d.reshape(d.shape[0]).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)
