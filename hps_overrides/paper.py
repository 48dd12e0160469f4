"""The "original" VDVAE setup of Shu & Ermon (2022), Appendix A.1, for SVHN, CelebA-64 and
LSUN-Bedroom-64.

A.1 defines the three dataset presets with block strings and per-GPU batch sizes only, and changes
upstream's argparse defaults, "applied to all datasets": width 384, zdim 16, lr 2e-4,
skip_threshold 500, ema_rate 0.9999, Adam betas (0.9, 0.9), warmup_iters 0.

How we read it: the presets are fresh presets over upstream's argparse defaults as A.1 modifies
them, not children of upstream's `cifar10`. An argparse default only reaches a key that the preset
does not set, and the values A.1 lists for width, zdim, lr and ema_rate are exactly cifar10's; had
the presets inherited cifar10, listing them would have changed nothing. So every key A.1 does not
list is upstream's argparse default, and:
* weight decay is 0.0 (upstream's argparse default, which A.1 does not change; cifar10 sets 0.01);
* warmup_iters is 0: no warm-up (upstream would divide by zero; the core takes 0 as none).
The presets below therefore have no parent and set A.1's keys, the dataset, the block strings and
n_batch; the image geometry comes from the dataset as for any preset.

Against the earlier reading (cifar10's preset, A.1's keys on top) the resolved hyperparameters of
svhn, celeba64 and lsun64 (and of the svhn_*, celeba64_*, lsun64_* presets built on them) differ
in `wd` alone, 0.01 -> 0.0. Every other key resolves the same either way: the A.1 keys, the block
strings and n_batch are set by both; grad_clip 200, num_mixtures 10, bottleneck_multiple 0.25,
no_bias_above 64, epochs_per_eval 10, the visualisation and checkpoint periods are upstream's
argparse defaults, which cifar10 does not change (its warmup_iters 100 is overridden by A.1's 0).
tests/test_hps.py checks the values.
"""
import progcode_ext.datasets  # noqa: F401  (svhn, celeba64, lsun_bedroom64)
from vdvae.hps import register_preset

# A.1's changes to upstream's argparse defaults (its listing names skip_threshold twice, both 500).
_PAPER = dict(width=384, zdim=16, lr=2e-4, skip_threshold=500.0, ema_rate=0.9999, adam_beta1=0.9,
              adam_beta2=0.9, warmup_iters=0)
_DEC64 = '1x1,4m1,4x2,8m4,8x5,16m8,16x10,32m16,32x21,64m32,64x5'
_ENC64 = '64x5,64d2,32x11,32d2,16x6,16d2,8x6,8d2,4x3,4d4,1x3'

register_preset('svhn', dict(
    **_PAPER, dataset='svhn', n_batch=12,
    dec_blocks='1x1,4m1,4x2,8m4,8x5,16m8,16x10,32m16,32x21',
    enc_blocks='32x11,32d2,16x6,16d2,8x6,8d2,4x3,4d4,1x3',
))
register_preset('celeba64', dict(
    **_PAPER, dataset='celeba64', n_batch=6, dec_blocks=_DEC64, enc_blocks=_ENC64,
))
register_preset('lsun64', dict(
    **_PAPER, dataset='lsun_bedroom64', n_batch=6, dec_blocks=_DEC64, enc_blocks=_ENC64,
))
