"""Optimizer, learning-rate warm-up, EMA and one training step, as upstream VDVAE does them.

Upstream uses apex FusedAdam in AdamW mode (decoupled weight decay on every parameter), which is
numerically torch's AdamW; here it is torch's AdamW, fused (one kernel over all parameters, on CPU
as on CUDA; BENCHMARKS.md compares it with the foreach version). Differences from upstream:
`warmup_iters = 0` means no warm-up (upstream divides by zero), and the first step already has a
non-zero learning rate (upstream's first step has lr 0 and so does nothing).
"""
import ctypes
import ctypes.util
import math
import time
from contextlib import nullcontext

import torch

from .errors import ConfigError


def warmup_factor(iterate, warmup_iters):
    """LR multiplier for step `iterate` (0-based): linear from 1/warmup_iters up to 1."""
    if warmup_iters <= 0:
        return 1.0
    return min(1.0, (iterate + 1) / warmup_iters)


def cosine_decay_factor(iterate, decay_iters, warmup_iters=0):
    """LR multiplier for step `iterate` after warm-up: 1 -> 0 along a half cosine that ends at step
    `decay_iters` (0: none, a constant lr). A short run whose lr has decayed settles at the end of
    its budget instead of still descending, so that "moved little over the last fifth" means it."""
    if decay_iters <= 0:
        return 1.0
    span = max(1.0, decay_iters - warmup_iters)
    progress = min(1.0, max(0.0, (iterate - warmup_iters) / span))
    return 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(H, model):
    """AdamW with upstream's hyperparameters, and its warm-up scheduler."""
    if H.warmup_iters < 0:
        raise ConfigError(f'warmup_iters must be >= 0 (0: no warm-up), got {H.warmup_iters}')
    # torch's fused AdamW: the same update rule as the foreach/for-loop versions, on CPU or CUDA
    # Only trainable parameters: frozen ones (a progressive stage 1) get no weight decay either.
    params = [p for p in model.parameters() if p.requires_grad]
    devices = {p.device.type for p in params}
    fused = len(devices) == 1 and devices <= {'cpu', 'cuda'}
    optimizer = torch.optim.AdamW(params, lr=H.lr, betas=(H.adam_beta1, H.adam_beta2),
                                  eps=1e-8, weight_decay=H.wd, fused=fused or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda=lambda it: warmup_factor(it, H.warmup_iters)
        * cosine_decay_factor(it, getattr(H, 'lr_decay_iters', 0), H.warmup_iters))
    return optimizer, scheduler


@torch.no_grad()
def update_ema(model, ema_model, ema_rate):
    """ema <- ema * rate + p * (1 - rate), for all trainable parameters at once (same arithmetic
    as upstream's per-parameter loop). Frozen parameters are left alone: averaging a constant
    could still move it by a rounding error."""
    pairs = [(e, p.detach()) for e, p in zip(ema_model.parameters(), model.parameters())
             if p.requires_grad]
    ema_params, params = [e for e, _ in pairs], [p for _, p in pairs]
    copy_buffers(model, ema_model)
    torch._foreach_mul_(ema_params, ema_rate)
    torch._foreach_add_(ema_params, torch._foreach_mul(params, 1.0 - ema_rate))


@torch.no_grad()
def copy_buffers(model, ema_model):
    """State such as a Lagrange multiplier is copied to the EMA model, not averaged."""
    for ema_buffer, buffer in zip(ema_model.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)


def keep_freed_memory():
    """Let glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    A CPU training step allocates and frees hundreds of MB of activations and gradients. With
    glibc's defaults the large blocks are mmap-ed and unmapped again, or trimmed off the heap, so
    every step page-faults its memory in afresh (about 90k faults, a tenth of a cifar10 step at
    batch 4 on 2 cores). Serving blocks up to 32 MiB from the heap and never trimming it removes
    that; peak memory stays about the same. Affects the whole process (call it once, early);
    does nothing off glibc. Returns whether both settings were applied. See BENCHMARKS.md."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3            # from glibc's <malloc.h>
    mmap_ok = mallopt(m_mmap_threshold, 32 * 2**20)         # glibc's largest allowed value
    trim_ok = mallopt(m_trim_threshold, 2**31 - 1)
    return bool(mmap_ok and trim_ok)


def training_step(H, x_in, x_target, model, ema_model, optimizer, scaler=None, autocast=None,
                  reduce_stats=None):
    """Forward (under `autocast`, if given), backward, clip; then update and EMA unless the rate
    or distortion is NaN/inf on any rank or the gradient norm is at least `skip_threshold`.

    The loss is `stats['loss']` when the model returns one (objectives of extensions), else the
    negative ELBO `stats['elbo']`. With an enabled fp16 `scaler`, the loss is scaled and the
    gradients unscaled before clipping; overflowing steps count as skipped. `reduce_stats`
    averages the float stats over ranks (None: one process). Returns the float stats plus
    `grad_norm` (before clipping), `skipped_updates` (0/1) and `iter_time`."""
    t0 = time.time()
    scaling = scaler is not None and scaler.is_enabled()
    model.zero_grad(set_to_none=True)
    with (autocast or nullcontext)():
        stats = model(x_in, x_target)
    loss = stats['loss'] if 'loss' in stats else stats['elbo']
    (scaler.scale(loss) if scaling else loss).backward()
    return apply_update(H, stats, model, ema_model, optimizer, scaler, reduce_stats, t0)


def apply_update(H, stats, model, ema_model, optimizer, scaler=None, reduce_stats=None, t0=None):
    """The rest of a training step once the gradients are in `model`'s parameters: unscale,
    clip, and update and EMA unless the step is to be skipped (`training_step`). `stats`: the
    forward's dict of tensors. An ensemble (vdvae/ensemble.py) calls it for each member."""
    scaling = scaler is not None and scaler.is_enabled()
    if scaling:
        scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), H.grad_clip).item()
    stats = {k: v.item() for k, v in stats.items() if torch.is_tensor(v) and v.numel() == 1}
    stats.update(distortion_nans=float(not math.isfinite(stats['distortion'])),
                 rate_nans=float(not math.isfinite(stats['rate'])))
    if reduce_stats is not None:
        stats = reduce_stats(stats)
    skip = (stats['distortion_nans'] > 0 or stats['rate_nans'] > 0
            or not (H.skip_threshold == -1 or grad_norm < H.skip_threshold))
    if not skip:
        scaler.step(optimizer) if scaling else optimizer.step()
        update_ema(model, ema_model, H.ema_rate)
    if scaling:
        scaler.update()
    stats.update(grad_norm=grad_norm, skipped_updates=int(skip),
                 iter_time=time.time() - (t0 or time.time()))
    return stats
