"""Exact ELBO over a whole split, in nats per dimension and bits per dimension.

Upstream averages per-batch means over a DistributedSampler that drops the last partial batch and
pads with repeated examples; here every example counts exactly once: rank r evaluates examples
r, r + world, ..., all batches including the last partial one, and sums are reduced over ranks.
"""
import math
from contextlib import nullcontext

import torch

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
    """Mean per-example ELBO, distortion and rate over `dataset` (one posterior sample each)."""
    model.eval()
    sums = [0.0, 0.0, 0.0, 0.0, 0.0]             # elbo, distortion, rate, count, finite count
    finite_elbo = 0.0
    for indices in split_batches(len(dataset), H.n_batch, rank, world_size):
        x_in, x_target = preprocess_fn(load_batch(dataset, indices), device)
        with (autocast or nullcontext)():
            stats = model(x_in, x_target)
        n = x_in.shape[0]
        values = [stats[k].item() * n for k in ('elbo', 'distortion', 'rate')]
        sums[0:3] = [s + v for s, v in zip(sums[0:3], values)]
        sums[3] += n
        if math.isfinite(values[0]):
            finite_elbo += values[0]
            sums[4] += n
    total = all_reduce_sum(sums + [finite_elbo], device)
    n = total[3]
    if n != len(dataset):
        raise RuntimeError(f'evaluated {n} examples, expected {len(dataset)}')
    out = dict(n_examples=int(n), elbo=total[0] / n, distortion=total[1] / n, rate=total[2] / n,
               elbo_filtered=total[5] / total[4] if total[4] else float('nan'))
    out['elbo_bits_per_dim'] = out['elbo'] / math.log(2)
    model.train()
    return out
