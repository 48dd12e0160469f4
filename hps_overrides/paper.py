"""The "original" VDVAE setup of Shu & Ermon (2022), Appendix A.1, for SVHN, CelebA-64 and
LSUN-Bedroom-64.

A.1 lists block strings and per-GPU batch sizes per dataset and sets, for all of them: width 384,
zdim 16, lr 2e-4, skip_threshold 500, ema_rate 0.9999, Adam betas (0.9, 0.9), warmup_iters 0. The
presets derive from upstream's `cifar10` (whose architecture the SVHN strings repeat) and set all
of these explicitly, so they hold whatever the parent says; everything else (weight decay 0.01,
grad_clip 200) is cifar10's. warmup_iters 0 means no warm-up here (upstream would divide by zero).
"""
from vdvae.hps import register_dataset, register_preset

register_dataset('svhn', 32, 3)
register_dataset('celeba64', 64, 3)
register_dataset('lsun_bedroom64', 64, 3)

_PAPER = dict(width=384, zdim=16, lr=2e-4, skip_threshold=500.0, ema_rate=0.9999, adam_beta1=0.9,
              adam_beta2=0.9, warmup_iters=0)
_DEC64 = '1x1,4m1,4x2,8m4,8x5,16m8,16x10,32m16,32x21,64m32,64x5'
_ENC64 = '64x5,64d2,32x11,32d2,16x6,16d2,8x6,8d2,4x3,4d4,1x3'

register_preset('svhn', dict(
    **_PAPER, dataset='svhn', n_batch=12,
    dec_blocks='1x1,4m1,4x2,8m4,8x5,16m8,16x10,32m16,32x21',
    enc_blocks='32x11,32d2,16x6,16d2,8x6,8d2,4x3,4d4,1x3',
), parent='cifar10')
register_preset('celeba64', dict(
    **_PAPER, dataset='celeba64', n_batch=6, dec_blocks=_DEC64, enc_blocks=_ENC64,
), parent='cifar10')
register_preset('lsun64', dict(
    **_PAPER, dataset='lsun_bedroom64', n_batch=6, dec_blocks=_DEC64, enc_blocks=_ENC64,
), parent='cifar10')
