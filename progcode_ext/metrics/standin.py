"""Stand-in metrics for machines without the Inception / AlexNet weights: the features of a small
CNN classifier that the project trains itself on the dataset's training split.

* `FD-<dataset>`: the Frechet distance (as in FID) between Gaussian fits of the classifier's
  penultimate features (128-d) of two image sets.
* `PD-<dataset>`: an LPIPS-like perceptual distance between two images: at each of the
  classifier's three convolutional stages, the activations are unit-normalised over channels at
  every position, their squared difference is summed over channels and averaged over positions,
  and the three stages are summed with equal weights. Unlike LPIPS there are NO learned
  per-channel weights (nothing is calibrated on human judgements): it is the "baseline" form of
  LPIPS on a small in-domain network.

These are NOT FID or LPIPS: their values are not comparable with published numbers, nor across
datasets or classifier versions. Names returned with values always say `FD-`/`PD-`.

The classifier: conv3x3 (16) -> pool -> conv3x3 (32) -> pool -> conv3x3 (64) -> pool, ReLUs,
adaptive average pool to 4x4, a 128-unit ReLU layer (its pre-activations are the features),
a linear head. It is trained
with Adam on the training split's labels where the dataset has them (mnist5k: the 10 digits); a
dataset without labels is trained on rotation prediction (which of 0/90/180/270 degrees, Gidaris
et al., 2018). Training is seeded and leaves the global RNG untouched; the result is cached in
`<cache_dir>/standin-<dataset>-v<VERSION>.pt` (atomic write; loaded with weights_only=True) with
its test accuracy and a fingerprint of its weights.
"""
import hashlib
import math
import os
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vdvae.errors import ConfigError

from ._common import default_cache_dir, image_batches

VERSION = 1
WIDTHS = (16, 32, 64)
FEATURE_DIM = 128

_LOADED = {}


def fd_name(dataset):
    return f'FD-{dataset}'


def pd_name(dataset):
    return f'PD-{dataset}'


class StandinNet(nn.Module):
    """The small classifier; `taps` are the three post-ReLU stage outputs, `features` the
    penultimate 128-d layer (before its ReLU: no dead dimensions in the covariance)."""

    def __init__(self, channels, n_classes, widths=WIDTHS, feature_dim=FEATURE_DIM):
        super().__init__()
        ins = (channels,) + tuple(widths[:-1])
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, padding=1) for i, o in zip(ins, widths))
        self.fc = nn.Linear(widths[-1] * 16, feature_dim)
        self.head = nn.Linear(feature_dim, n_classes)

    @staticmethod
    def prepare(batch_uint8, device):
        """uint8 NHWC -> float32 NCHW in [-1, 1]."""
        return batch_uint8.to(device).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.)

    def taps_and_features(self, x):
        taps = []
        for conv in self.convs:
            x = F.relu(conv(x))
            taps.append(x)
            x = F.max_pool2d(x, 2)
        features = self.fc(F.adaptive_avg_pool2d(x, 4).flatten(1))
        return taps, features

    def forward(self, x):
        return self.head(F.relu(self.taps_and_features(x)[1]))


def standin_path(dataset, cache_dir=None):
    return os.path.join(cache_dir or default_cache_dir(), f'standin-{dataset}-v{VERSION}.pt')


def _fingerprint(state_dict):
    h = hashlib.sha256()
    for key in sorted(state_dict):
        h.update(key.encode())
        h.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _rotate(x, k):
    """Rotate each NCHW image x[i] by k[i] * 90 degrees."""
    out = x.clone()
    for r in range(1, 4):
        sel = k == r
        if sel.any():
            out[sel] = torch.rot90(x[sel], r, dims=(2, 3))
    return out


def _task_batch(model, images, labels, device, generator):
    x = model.prepare(images, device)
    if labels is not None:
        return x, torch.as_tensor(labels, dtype=torch.long, device=device)
    k = torch.randint(0, 4, (x.shape[0],), generator=generator).to(device)
    return _rotate(x, k), k


@torch.no_grad()
def accuracy(model, split, device='cpu', batch_size=256):
    """Top-1 accuracy on a split: its labels, or (no labels) all four rotations of every image."""
    model.eval()
    labels = getattr(split, 'labels', None)
    correct = total = 0
    for start, batch in zip(range(0, len(split), batch_size), image_batches(split, batch_size)):
        x = model.prepare(batch, device)
        if labels is not None:
            y = torch.as_tensor(labels[start:start + len(batch)], device=device)
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
        else:
            for r in range(4):
                pred = model(torch.rot90(x, r, dims=(2, 3))).argmax(1)
                correct += (pred == r).sum().item()
                total += len(pred)
    return correct / max(total, 1)


def train_standin(dataset, data_root='./', epochs=10, max_steps=2000, batch_size=64, lr=2e-3,
                  seed=0, device='cpu', logprint=None):
    """Train the classifier on `dataset`'s training split; -> (model in eval mode, info dict)."""
    from vdvae.data import load_splits
    splits = load_splits(dataset, data_root)
    train, held = splits['train'], splits.get('test', splits['valid'])
    labels = getattr(train, 'labels', None)
    task = 'labels' if labels is not None else 'rotation'
    n_classes = int(np.max(labels)) + 1 if labels is not None else 4
    channels = train.shape[-1]
    start_time = time.time()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = StandinNet(channels, n_classes).to(device)
        generator = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        steps_per_epoch = math.ceil(len(train) / batch_size)
        total_steps = min(epochs * steps_per_epoch, max_steps)
        schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps,
                                                       pct_start=0.15)
        step = 0
        model.train()
        while step < total_steps:
            order = torch.randperm(len(train), generator=generator).numpy()
            for i in range(0, len(order), batch_size):
                if step >= total_steps:
                    break
                idx = order[i:i + batch_size]
                x, y = _task_batch(model, train[idx.tolist()], None if labels is None
                                   else labels[idx], device, generator)
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                schedule.step()
                step += 1
    model.eval()
    train_seconds = time.time() - start_time
    info = dict(dataset=dataset, version=VERSION, task=task, n_classes=n_classes,
                channels=channels, steps=step, batch_size=batch_size, seed=seed,
                n_train=len(train), train_seconds=round(train_seconds, 2),
                test_accuracy=accuracy(model, held, device),
                chance_accuracy=1.0 / n_classes)
    info['fingerprint'] = _fingerprint(model.state_dict())
    if logprint:
        logprint(f'stand-in classifier for {dataset} ({task}): {step} steps in '
                 f'{train_seconds:.1f} s, held-out accuracy {info["test_accuracy"]:.4f} '
                 f'(chance {info["chance_accuracy"]:.2f})')
    return model, info


def load_standin(dataset, cache_dir=None, data_root='./', device='cpu', train_if_missing=True,
                 logprint=None, **train_kwargs):
    """(model, info): the cached classifier of `dataset`, trained and cached first if absent."""
    path = standin_path(dataset, cache_dir)
    key = (os.path.realpath(path), str(device))
    if key in _LOADED:
        return _LOADED[key]
    if os.path.isfile(path):
        blob = torch.load(path, map_location='cpu', weights_only=True)
        info = blob['info']
        if info.get('dataset') != dataset or info.get('version') != VERSION:
            raise ConfigError(f'{path} holds the stand-in of {info.get("dataset")} v'
                              f'{info.get("version")}, not {dataset} v{VERSION}: delete it')
        model = StandinNet(info['channels'], info['n_classes'])
        model.load_state_dict(blob['state_dict'])
        model.to(device).eval()
    elif not train_if_missing:
        raise FileNotFoundError(f'no stand-in classifier for {dataset} at {path}; train it with '
                                f'progcode_ext.metrics.standin.load_standin({dataset!r})')
    else:
        from vdvae.checkpoint import atomic_save
        model, info = train_standin(dataset, data_root, device=device, logprint=logprint,
                                    **train_kwargs)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        atomic_save(dict(state_dict={k: v.cpu() for k, v in model.state_dict().items()},
                         info=info), path)
    model.requires_grad_(False)
    _LOADED[key] = (model, info)
    return model, info


def _device_of(model):
    return next(model.parameters()).device


@torch.no_grad()
def standin_features(model, images, batch_size=256):
    """(N, 128) float64 penultimate features of uint8 NHWC images."""
    device = _device_of(model)
    out = [model.taps_and_features(model.prepare(b, device))[1].double().cpu().numpy()
           for b in image_batches(images, batch_size)]
    return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM))


def _unit(t, eps=1e-10):
    return t / (t.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


@torch.no_grad()
def standin_perceptual_distance(model, x, y, batch_size=256):
    """(N,) float64 PD between x[i] and y[i]: per stage, channel-unit-normalised activations,
    squared difference summed over channels and averaged over space; stages summed (equal,
    unlearned weights)."""
    if len(x) != len(y):
        raise ConfigError(f'the perceptual distance compares pairs: {len(x)} and {len(y)} images')
    device = _device_of(model)
    out = []
    for a, b in zip(image_batches(x, batch_size), image_batches(y, batch_size)):
        if a.shape != b.shape:
            raise ConfigError(f'images of different shapes: {tuple(a.shape)} and {tuple(b.shape)}')
        taps_a, _ = model.taps_and_features(model.prepare(a, device))
        taps_b, _ = model.taps_and_features(model.prepare(b, device))
        d = sum((_unit(ta) - _unit(tb)).pow(2).sum(dim=1).mean(dim=(1, 2))
                for ta, tb in zip(taps_a, taps_b))
        out.append(d.double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def main(argv=None):
    """python -m progcode_ext.metrics.standin --dataset mnist5k: train (or load) and report."""
    import argparse
    import json
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dataset', default='mnist5k')
    parser.add_argument('--data_root', default='./')
    parser.add_argument('--cache_dir', default=None)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--retrain', action='store_true', help='replace a cached classifier')
    args = parser.parse_args(argv)
    path = standin_path(args.dataset, args.cache_dir)
    if args.retrain and os.path.exists(path):
        os.unlink(path)
    _, info = load_standin(args.dataset, args.cache_dir, args.data_root, args.device,
                           logprint=print)
    print(json.dumps(dict(info, path=path), indent=1))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
