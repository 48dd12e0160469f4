"""Stage 1 (Section 5.1, Appendix A.3): an unconditional VDVAE of the dataset's architecture with a
mean head, trained lambda-optimally: minimise the rate R subject to MSE D <= lambda
(`--distortion_target`; the paper uses 0.0032 for SVHN and CelebA, 0.0064 for LSUN)."""
import math

import torch

from vdvae.vae import VAE

from .lagrangian import LagrangianObjective
from .mean_head import MeanHead, psnr


def with_psnr(stats):
    """Add PSNR (dB) beside a distortion that is an MSE on the [-1, 1] scale."""
    return dict(stats, psnr=torch.tensor(psnr(stats['distortion'].item())))


def multiplier_kwargs(H):
    return dict(init=H.eta_init, lr=H.eta_lr, ema_rate=H.eta_ema_rate, lr_decay=H.eta_lr_decay)


class Stage1VAE(VAE):
    """Encoder and decoder exactly as VDVAE's; `decoder.out_net` is a `MeanHead`."""

    def __init__(self, H):
        super().__init__(H)
        self.decoder.out_net = MeanHead(self.H)
        self.objective = LagrangianObjective('distortion', H.distortion_target, **multiplier_kwargs(H))

    def forward(self, x, x_target):
        """-> {'loss', 'rate', 'distortion' (MSE), 'psnr', 'eta', 'constraint_violation'}, per
        dimension."""
        activations = self.encoder(x)
        px_z, stats = self.decoder(activations)
        distortion = self.decoder.out_net.distortion(px_z, x_target).mean()
        rate = sum(s['kl'].sum(dim=(1, 2, 3)) for s in stats).mean() / math.prod(x.shape[1:])
        return with_psnr(self.objective(rate, distortion))

    def after_update(self, stats):
        self.objective.lagrangian_step(stats)

    def reconstruct(self, x):
        """Mean images (NHWC, target scale) decoded from one posterior sample of z."""
        px_z, _ = self.decoder(self.encoder(x))
        return self.decoder.out_net(px_z)

