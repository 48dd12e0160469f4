"""Presets of the paper's method for each dataset (Sections 4-5, Appendix A).

For a dataset preset X (the "original" VDVAE of A.1: svhn, celeba64, lsun64; or mnist5k, the
CPU-sized offline stand-in):
  X_stage1        lambda-optimal stage 1: mean head, rate minimised subject to MSE <= lambda
                  (SVHN and CelebA 0.0032, LSUN 0.0064 as in Section 5.2)
  X_stage2        progressive two-stage HVAE: stage 1 frozen (--stage1_path), stage 2 by ELBO
  X_conventional  the same two networks trained jointly by the ELBO
  X_masked        Table 1 on a trained X VDVAE (--encoder_path): --mode probe | gamma_optimal
The distortion target of mnist5k is ours: no paper number exists for it.

Upstream's own presets (cifar10, imagenet32, imagenet64, ffhq256, ffhq1024) get X_masked only:
Table 1 on upstream's official checkpoint files (`table1 --hps imagenet32 --checkpoint
imagenet32-iter-1700000-model-ema.th`).
"""
from vdvae.hps import register_preset

DISTORTION_TARGET = {'svhn': 0.0032, 'celeba64': 0.0032, 'lsun64': 0.0064, 'mnist5k': 0.0128}
UPSTREAM = ('cifar10', 'imagenet32', 'imagenet64', 'ffhq256', 'ffhq1024')

for base, target in DISTORTION_TARGET.items():
    register_preset(f'{base}_stage1', dict(model='stage1', distortion_target=target), parent=base)
    register_preset(f'{base}_stage2', dict(model='two_stage', training='progressive',
                                           distortion_target=target), parent=base)
    register_preset(f'{base}_conventional', dict(model='two_stage', training='conventional',
                                                 distortion_target=target), parent=base)
for base in (*DISTORTION_TARGET, *UPSTREAM):
    register_preset(f'{base}_masked', dict(model='masked'), parent=base)
