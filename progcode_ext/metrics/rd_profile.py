"""Rate per latent group and the (R_k, D_k) profile of a model (Section 4).

    rates = rate_per_group(model, data, preprocess_fn, device)
    rates['per_block']      # mean KL of each decoder block, nats/dim, over the whole split
    rates['per_res']        # {resolution: mean KL of all blocks at that resolution}
    rates['total']          # = the model's rate (sum of the blocks)
    profile = rd_profile(model, data, preprocess_fn, device, distortion_fn=probe)
    # [{'res': 4, 'k': 3, 'rate': R_k, 'distortion': D_k}, ...] for each decoder resolution

Rates are exact means over every example of the split (one posterior sample each, as the ELBO),
per data dimension (H * W * C), in nats (`*_bits` keys: bits). The KL of block i is evaluated at
the posterior sample of z_<i, so the sum over the first k blocks is the usual one-sample estimate
of KL(q(z_1..z_k | x) || p(z_1..z_k)) = R_k of Section 4.1 (what `masked.posterior_rate_k`
computes).

D_k needs a decoder trained for z_1..z_k (the masked-decoder probe of A.2, one per k): training
it is the experiment driver's job. `rd_profile` takes it as a callable
`distortion_fn(k, res) -> float` (e.g. the mean `distortion` of `vdvae.evaluation.evaluate` on a
trained `ProbeVAE` with `--progressive_res res`), or leaves D_k as None.
"""
import math

import numpy as np
import torch

from vdvae.errors import ConfigError
from vdvae.evaluation import load_batch, split_batches
from vdvae.vae_helpers import rate_per_block


def default_block_stats(model, x_in):
    """Per-block stats (dicts with a 'kl' map (B, zdim, r, r)) of one posterior pass: the
    latents a `vdvae.contract.Model` exposes."""
    return model.forward_get_latents(x_in)


@torch.no_grad()
def rate_per_group(model, data, preprocess_fn, device, n_batch=32, block_stats_fn=None):
    """Mean KL per decoder block and per resolution over the whole split `data`, nats/dim.

    -> dict(per_block [float], block_res [int], per_res {res: float}, total float, and the same
    in bits: per_block_bits, per_res_bits, total_bits; n_examples int)."""
    block_stats_fn = block_stats_fn or default_block_stats
    was_training = model.training
    model.eval()
    sums, block_res, count = None, None, 0
    try:
        for indices in split_batches(len(data), n_batch):
            x_in, _ = preprocess_fn(load_batch(data, indices), device)
            stats = block_stats_fn(model, x_in)
            ndims = math.prod(x_in.shape[1:])
            kl = rate_per_block(stats, ndims).double()
            res = [int(s['kl'].shape[-1]) for s in stats]
            if sums is None:
                sums, block_res = np.zeros(len(stats)), res
            elif res != block_res:
                raise ConfigError('the model returned a different block layout for another batch')
            sums += kl.sum(dim=0).cpu().numpy()
            count += x_in.shape[0]
    finally:
        model.train(was_training)
    if not count:
        raise ConfigError('rate_per_group needs at least one example')
    per_block = (sums / count).tolist()
    per_res = {}
    for r, v in zip(block_res, per_block):
        per_res[r] = per_res.get(r, 0.0) + v
    ln2 = math.log(2)
    return dict(per_block=per_block, block_res=block_res, per_res=per_res,
                total=float(sum(per_block)),
                per_block_bits=[v / ln2 for v in per_block],
                per_res_bits={r: v / ln2 for r, v in per_res.items()},
                total_bits=float(sum(per_block)) / ln2, n_examples=count)


def rate_profile(rates):
    """[(res, k, R_k)] for each resolution of a `rate_per_group` result: R_k is the rate of the
    first k blocks, those at resolution <= res (a prefix of VDVAE's low-to-high decoder)."""
    block_res = rates['block_res']
    out = []
    for res in sorted(set(block_res)):
        k = sum(r <= res for r in block_res)
        if any(r > res for r in block_res[:k]):
            raise ConfigError(f'the blocks at resolution <= {res} are not the first {k} decoder '
                              f'blocks ({block_res}); z_1..z_k would not be a prefix')
        out.append((res, k, float(sum(rates['per_block'][:k]))))
    return out


def rd_profile(model, data, preprocess_fn, device, distortion_fn=None, n_batch=32,
               block_stats_fn=None, rates=None):
    """The (R_k, D_k) profile: for each decoder resolution res (ascending), k = the number of
    blocks at resolution <= res, R_k their mean KL over `data` (nats/dim), and
    D_k = distortion_fn(k, res) (None without a distortion_fn).

    `rates`: a `rate_per_group` result to reuse instead of measuring again.
    -> [dict(res, k, rate, rate_bits, distortion)]"""
    rates = rates or rate_per_group(model, data, preprocess_fn, device, n_batch, block_stats_fn)
    out = []
    for res, k, rate_k in rate_profile(rates):
        distortion = None if distortion_fn is None else float(distortion_fn(k, res))
        out.append(dict(res=res, k=k, rate=rate_k, rate_bits=rate_k / math.log(2),
                        distortion=distortion))
    return out
