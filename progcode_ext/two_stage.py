"""The two-stage HVAE of Section 5.1 (Table 2): the chain of multi_stage.py with one target.

    p(x, z1, z2) = p1(z1) p2(z2 | x_hat(z1)) p2(x | z2, x_hat(z1)),   x_hat = stage-1 mean head
    q(z1, z2 | x) = q1(z1 | x) q2(z2 | x, x_hat(z1))
    -ELBO / dim = [ -log p2(x | z2, x_hat) + KL(q1 || p1) + KL(q2 || p2) ] / dim

Progressive: stage 1 trained lambda-optimally beforehand and frozen (`--stage1_path`), stage 2 by
its own -ELBO. Conventional: both stages jointly by the joint -ELBO (the paper's baseline).
"""
from vdvae.errors import ConfigError

from .multi_stage import MultiStageHVAE


class TwoStageHVAE(MultiStageHVAE):
    """`--model two_stage`: `MultiStageHVAE` with stage 1 and the likelihood stage only."""

    def __init__(self, H):
        if len(H.get('distortion_targets') or []) > 1:
            raise ConfigError('--distortion_targets names a chain of more than two stages: use '
                              '--model multi_stage (presets X_stage3, X_stages)')
        if H.training == 'progressive' and not (H.get('stage1_path') or H.get('stage_paths')):
            raise ConfigError('progressive stage 2 needs the trained stage 1: pass --stage1_path '
                              'RUN_DIR or a *-model-ema.th of a stage-1 run (python train.py '
                              '--hps *_stage1)')
        super().__init__(H)
