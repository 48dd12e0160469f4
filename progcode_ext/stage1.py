"""Stage 1 (Section 5.1, Appendix A.3): an unconditional VDVAE of the dataset's architecture with a
mean head, trained lambda-optimally: minimise the rate R subject to MSE D <= lambda
(`--distortion_target`; the paper uses 0.0032 for SVHN and CelebA, 0.0064 for LSUN)."""
import math

from vdvae.vae import VAE
from vdvae.vae_helpers import rate_per_example

from .lagrangian import LagrangianObjective
from .mean_head import MeanHead, psnr_of


def with_psnr(stats):
    """Add the MSE under its own name and PSNR (dB) beside a `distortion` that is an MSE on the
    [-1, 1] scale."""
    return dict(stats, mse=stats['distortion'], psnr=psnr_of(stats['distortion']))


def multiplier_kwargs(H):
    return dict(init=H.eta_init, lr=H.eta_lr, ema_rate=H.eta_ema_rate, lr_decay=H.eta_lr_decay)


class Stage1VAE(VAE):
    """Encoder and decoder exactly as VDVAE's; `decoder.out_net` is a `MeanHead`."""

    distortion_kind = 'mse'

    def __init__(self, H):
        super().__init__(H)
        self.decoder.out_net = MeanHead(self.H)
        self.objective = LagrangianObjective('distortion', H.distortion_target, **multiplier_kwargs(H))

    def forward(self, x, x_target):
        """-> {'loss', 'rate', 'distortion' = 'mse', 'psnr', 'eta', 'constraint_violation'}, per
        dimension."""
        activations = self.encoder(x)
        px_z, stats = self.decoder(activations)
        distortion = self.decoder.out_net.distortion(px_z, x_target).mean()
        rate = rate_per_example(stats, math.prod(x.shape[1:])).mean()
        return with_psnr(self.objective(rate, distortion))

    def after_update(self, stats):
        self.objective.lagrangian_step(stats)

    # The stage interface of a chain (multi_stage.py); stage 1 has nothing before it.
    def posterior(self, x, x_prev=None, get_latents=False):
        """(px_z, per-block [{'kl', 'z'}]) of one posterior pass over x."""
        return self.decoder(self.encoder(x), get_latents=get_latents)

    def decode(self, n, x_prev=None, t=None, latents=()):
        """px_z of n draws: the first len(latents) latents fixed, the rest from the prior at t."""
        return self.decoder.forward_manual_latents(n, list(latents), t=t)
