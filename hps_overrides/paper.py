"""The "original" VDVAE setup of Shu & Ermon (2022), Appendix A.1, for SVHN, CelebA-64 and
LSUN-Bedroom-64.

A.1 lists block strings and per-GPU batch sizes per dataset and changes these argparse defaults
for all of them: width 384, zdim 16, lr 2e-4, skip_threshold 500, ema_rate 0.9999, Adam betas
(0.9, 0.9), warmup_iters 0. The presets derive from upstream's `cifar10` (whose architecture the
SVHN strings repeat); a preset value beats an argparse default, so of A.1's defaults only
skip_threshold (which cifar10 leaves at the default) changes, and `warmup_iters` stays at
cifar10's 100 (A.1's 0 would make the first steps take the full learning rate). Pass
`--warmup_iters 0` to follow A.1 literally.
"""
from vdvae.hps import register_dataset, register_preset

register_dataset('svhn', 32, 3)
register_dataset('celeba64', 64, 3)
register_dataset('lsun_bedroom64', 64, 3)

_DEC64 = '1x1,4m1,4x2,8m4,8x5,16m8,16x10,32m16,32x21,64m32,64x5'
_ENC64 = '64x5,64d2,32x11,32d2,16x6,16d2,8x6,8d2,4x3,4d4,1x3'

register_preset('svhn', dict(
    dataset='svhn', n_batch=12, skip_threshold=500.0,
    dec_blocks='1x1,4m1,4x2,8m4,8x5,16m8,16x10,32m16,32x21',
    enc_blocks='32x11,32d2,16x6,16d2,8x6,8d2,4x3,4d4,1x3',
), parent='cifar10')
register_preset('celeba64', dict(
    dataset='celeba64', n_batch=6, skip_threshold=500.0, dec_blocks=_DEC64, enc_blocks=_ENC64,
), parent='cifar10')
register_preset('lsun64', dict(
    dataset='lsun_bedroom64', n_batch=6, skip_threshold=500.0, dec_blocks=_DEC64, enc_blocks=_ENC64,
), parent='cifar10')
