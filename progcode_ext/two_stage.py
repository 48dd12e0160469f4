"""The full two-stage HVAE of Section 5.1: stage 1 (an unconditional VDVAE with a mean head; its
latents are z_1..z_K) composed with stage 2 (a VDVAE conditioned on stage 1's reconstruction
x_hat; its latents are z_{K+1..T}).

    p(x, z1, z2) = p1(z1) p2(z2 | x_hat(z1)) p2(x | z2, x_hat(z1)),   x_hat = stage-1 mean head
    q(z1, z2 | x) = q1(z1 | x) q2(z2 | x, x_hat(z1))
    -ELBO / dim = [ -log p2(x | z2, x_hat) + KL(q1 || p1) + KL(q2 || p2) ] / dim

Two trainings of the same networks (same functional form, same parameters):
* progressive: stage 1 trained lambda-optimally beforehand (`--stage1_path`), here frozen (no
  gradient, eval mode, bit-identical throughout); stage 2 minimises its own negative ELBO.
* conventional: both stages trained jointly on the joint negative ELBO; gradients flow through
  x_hat into stage 1.

Stage 2 always receives x_hat as the mean head puts it out, unclamped: in training
(`stage1_posterior`), in reconstruction and in sampling (`x_hat_from_latents`, used by `sample` and
by the upstream interface's sample grid). The conventional training has no distortion term on
x_hat, so there it is a free bottleneck and lies largely outside [-1, 1]; clamping it only when
sampling would hand stage 2 inputs it never saw in training, on the conventional side only (a bias
in Table 2's comparison). x_hat is clamped to [-1, 1] only where it becomes a uint8 picture.
"""
import os

import numpy as np
import torch
from torch import nn

from vdvae.checkpoint import restore_params
from vdvae.vae_helpers import to_uint8

from .stage1 import Stage1VAE
from .stage2 import ConditionalVAE


def resolve_stage1_path(path):
    """A checkpoint file, or a stage-1 run folder (then its latest-model-ema.th)."""
    if not path:
        raise ValueError('progressive stage 2 needs the trained stage 1: pass --stage1_path RUN_DIR '
                         'or a *-model-ema.th of a stage-1 run (python train.py --hps *_stage1)')
    if os.path.isdir(path):
        path = os.path.join(path, 'latest-model-ema.th')
    return path


class TwoStageHVAE(nn.Module):
    """Evaluates the joint ELBO, reconstructs, and samples (stage-1 prior -> x_hat -> stage 2)."""

    def __init__(self, H):
        super().__init__()
        if H.training not in ('progressive', 'conventional'):
            raise ValueError(f"--training must be 'progressive' or 'conventional', got {H.training!r}")
        self.H = H
        self.progressive = H.training == 'progressive'
        self.stage1 = Stage1VAE(H)
        self.stage2 = ConditionalVAE(H)
        if self.progressive:
            restore_params(self.stage1, resolve_stage1_path(H.stage1_path))
            self.stage1.requires_grad_(False)

    def train(self, mode=True):
        super().train(mode)
        if self.progressive:
            self.stage1.eval()                 # frozen: nothing of it may change
        return self

    def stage1_posterior(self, x, x_target):
        """x_hat from one posterior sample of z1, the stage-1 rate per example and its MSE."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.progressive):
            activations = self.stage1.encoder(x)
            px_z, stats = self.stage1.decoder(activations)
            x_hat = self.stage1.decoder.out_net(px_z)
            rate = sum(s['kl'].sum(dim=(1, 2, 3)) for s in stats) / np.prod(x.shape[1:])
        return x_hat, rate, ((x_hat.float() - x_target) ** 2).flatten(1).mean(1)

    def forward(self, x, x_target):
        """-> {'loss', 'elbo' (joint, nats/dim), 'distortion' (stage-2 NLL), 'rate' (both stages),
        'rate_stage1', 'rate_stage2', 'mse_stage1'}. The loss is the joint negative ELBO when
        conventional, stage 2's own when progressive (stage 1's rate is then a constant)."""
        x_hat, rate1, mse1 = self.stage1_posterior(x, x_target)
        _, _, distortion, rate2 = self.stage2(x, x_target, x_hat)
        elbo = (distortion + rate1 + rate2).mean()
        loss = (distortion + rate2).mean() if self.progressive else elbo
        return dict(loss=loss, elbo=elbo, distortion=distortion.mean(), rate=(rate1 + rate2).mean(),
                    rate_stage1=rate1.mean(), rate_stage2=rate2.mean(), mse_stage1=mse1.mean())

    @torch.no_grad()
    def reconstruct(self, x, x_target):
        """(x_hat as uint8, a stage-2 sample given the unclamped x_hat and the posterior z2 as
        uint8)."""
        x_hat, _, _ = self.stage1_posterior(x, x_target)
        _, stats, _, _ = self.stage2(x, x_target, x_hat, get_latents=True)
        full = self.stage2.sample(x_hat, t=0.1, latents=[s['z'] for s in stats])
        return to_uint8(torch.clamp(x_hat, -1, 1)), full

    @torch.no_grad()
    def x_hat_from_latents(self, n, latents=(), t=None):
        """x_hat (NHWC, unclamped, as stage 2 receives it in training) for n images, with stage 1's
        first len(latents) latents fixed to `latents` and the rest drawn from its prior at
        temperature t (None, a number, or one per block). No latents: a prior sample."""
        return self.stage1.decoder.out_net(
            self.stage1.decoder.forward_manual_latents(n, list(latents), t=t))

    @torch.no_grad()
    def sample(self, n, t1=1.0, t2=1.0, latents=()):
        """(x_hat from stage 1 at t1, first len(latents) of its latents fixed; then x ~ stage 2 at
        t2 given that unclamped x_hat), both NumPy uint8 NHWC (the picture of x_hat clamped)."""
        x_hat = self.x_hat_from_latents(n, latents, t=t1)
        return to_uint8(torch.clamp(x_hat, -1, 1)), self.stage2.sample(x_hat, t=t2)

    def visualize(self, originals, x_in, x_target):
        """Rows for the training loop's sample grid: originals, stage-1 reconstructions x_hat,
        stage-2 reconstructions, then (x_hat, sample) pairs from the prior at t = 1.0 and 0.9."""
        n = originals.shape[0]
        x_hat, recon = self.reconstruct(x_in, x_target)
        rows = [np.asarray(originals.cpu(), dtype=np.uint8), x_hat, recon]
        for t in (1.0, 0.9):
            rows += list(self.sample(n, t1=t, t2=t))
        return rows
