"""Optimizer, learning-rate warm-up, EMA and one training step, as upstream VDVAE does them.

Upstream uses apex FusedAdam in AdamW mode (decoupled weight decay on every parameter), which is
numerically torch's AdamW; here it is torch's AdamW, fused on CUDA. Differences from upstream:
`warmup_iters = 0` means no warm-up (upstream divides by zero), and the first step already has a
non-zero learning rate (upstream's first step has lr 0 and so does nothing).
"""
import time

import torch


def warmup_factor(iterate, warmup_iters):
    """LR multiplier for step `iterate` (0-based): linear from 1/warmup_iters up to 1."""
    if warmup_iters <= 0:
        return 1.0
    return min(1.0, (iterate + 1) / warmup_iters)


def build_optimizer(H, model):
    """AdamW with upstream's hyperparameters, and its warm-up scheduler."""
    if H.warmup_iters < 0:
        raise ValueError(f'warmup_iters must be >= 0 (0: no warm-up), got {H.warmup_iters}')
    fused = all(p.is_cuda for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=H.lr, betas=(H.adam_beta1, H.adam_beta2),
                                  eps=1e-8, weight_decay=H.wd, fused=fused or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda=lambda it: warmup_factor(it, H.warmup_iters))
    return optimizer, scheduler


@torch.no_grad()
def update_ema(model, ema_model, ema_rate):
    """ema <- ema * rate + p * (1 - rate), for all parameters at once (same arithmetic as
    upstream's per-parameter loop)."""
    ema_params = list(ema_model.parameters())
    params = [p.detach() for p in model.parameters()]
    torch._foreach_mul_(ema_params, ema_rate)
    torch._foreach_add_(ema_params, torch._foreach_mul(params, 1.0 - ema_rate))


def training_step(H, x_in, x_target, model, ema_model, optimizer, reduce_stats=None):
    """Forward, backward, clip; update (and EMA) unless the loss is NaN or the gradient norm is at
    least `skip_threshold`. `reduce_stats` averages the float stats over ranks (None: one rank).
    Returns float stats plus `grad_norm` (before clipping), `skipped_updates`, `iter_time`."""
    t0 = time.time()
    model.zero_grad(set_to_none=True)
    stats = model(x_in, x_target)
    stats['elbo'].backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), H.grad_clip).item()
    stats = {k: v.item() for k, v in stats.items()}
    stats.update(distortion_nans=float(stats['distortion'] != stats['distortion']),
                 rate_nans=float(stats['rate'] != stats['rate']))
    if reduce_stats is not None:
        stats = reduce_stats(stats)
    skip = (stats['distortion_nans'] > 0 or stats['rate_nans'] > 0
            or not (H.skip_threshold == -1 or grad_norm < H.skip_threshold))
    if not skip:
        optimizer.step()
        update_ema(model, ema_model, H.ema_rate)
    stats.update(grad_norm=grad_norm, skipped_updates=int(skip), iter_time=time.time() - t0)
    return stats
