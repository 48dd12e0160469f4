"""Exact ELBO over a whole split, in nats per dimension and bits per dimension.

Upstream averages per-batch means over a DistributedSampler that drops the last partial batch and
pads with repeated examples; here every example counts exactly once: rank r evaluates examples
r, r + world, ..., all batches including the last partial one, and sums are reduced over ranks.
"""
import math
from contextlib import nullcontext

import torch

from .contract import with_distortion_name
from .distributed import all_reduce_sum


def split_batches(n_examples, batch_size, rank=0, world_size=1):
    """Index batches of this rank's share of a split, every example exactly once over all ranks."""
    mine = list(range(rank, n_examples, world_size))
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


def load_batch(dataset, indices):
    """Stack dataset items (uint8 HWC tensors, or 1-tuples of them) into one NHWC batch. Plain
    indexing, not a DataLoader: creating a DataLoader iterator draws from the global RNG, which
    would make a resumed run's random stream differ from an uninterrupted one."""
    items = [dataset[i] for i in indices]
    items = [item[0] if isinstance(item, (list, tuple)) else item for item in items]
    return torch.stack([torch.as_tensor(item) for item in items])


@torch.no_grad()
def evaluate(H, model, dataset, preprocess_fn, device, rank=0, world_size=1, autocast=None):
    """Per-example means over `dataset` (one posterior sample each) of every scalar the model
    returns: for a VDVAE `elbo`, `distortion` (also as `nll`), `rate` in nats/dim, plus
    `elbo_bits_per_dim` and `elbo_filtered` (the mean over batches whose elbo is finite, as
    upstream logs it)."""
    model.eval()
    sums, count, finite_elbo, finite_count = {}, 0, 0.0, 0
    for indices in split_batches(len(dataset), H.n_batch, rank, world_size):
        x_in, x_target = preprocess_fn(load_batch(dataset, indices), device)
        with (autocast or nullcontext)():
            stats = model(x_in, x_target)
        n = x_in.shape[0]
        for key, value in stats.items():
            if torch.is_tensor(value) and value.numel() == 1:
                sums[key] = sums.get(key, 0.0) + value.item() * n
        count += n
        if 'elbo' in stats and math.isfinite(stats['elbo'].item()):
            finite_elbo += stats['elbo'].item() * n
            finite_count += n
    keys = sorted(sums)
    totals = all_reduce_sum([sums[k] for k in keys] + [count, finite_elbo, finite_count], device)
    n = totals[len(keys)]
    if n != len(dataset):
        raise RuntimeError(f'evaluated {n} examples, expected {len(dataset)}')
    out = dict(n_examples=int(n), **{k: totals[i] / n for i, k in enumerate(keys)})
    out = with_distortion_name(out, model.distortion_kind)
    if 'elbo' in out:
        out['elbo_filtered'] = totals[-2] / totals[-1] if totals[-1] else float('nan')
        out['elbo_bits_per_dim'] = out['elbo'] / math.log(2)
    model.train()
    return out
