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
  x_hat into stage 1. Stage 1 starts fresh (the paper's baseline) or, with `--stage1_init`, from
  a lambda-optimal stage-1 run (a diagnostic, not the baseline).

Stage 2 always receives x_hat as the mean head puts it out, unclamped: in training
(`stage1_posterior`), in reconstruction and in sampling (`x_hat_from_latents`, used by `sample`). The conventional training has no distortion term on
x_hat, so there it is a free bottleneck and lies largely outside [-1, 1]; clamping it only when
sampling would hand stage 2 inputs it never saw in training, on the conventional side only (a bias
in Table 2's comparison). x_hat is clamped to [-1, 1] only where it becomes a uint8 picture.
"""
import math
import os

import numpy as np
import torch

from vdvae.checkpoint import restore_params
from vdvae.contract import Model
from vdvae.errors import ConfigError
from vdvae.vae_helpers import rate_per_example, to_uint8

from .mean_head import mse_per_example
from .stage1 import Stage1VAE
from .stage2 import ConditionalVAE


def resolve_stage1_path(path):
    """A checkpoint file, or a stage-1 run folder (then its latest-model-ema.th)."""
    if not path:
        raise ConfigError('progressive stage 2 needs the trained stage 1: pass --stage1_path '
                          'RUN_DIR or a *-model-ema.th of a stage-1 run (python train.py --hps '
                          '*_stage1)')
    if os.path.isdir(path):
        path = os.path.join(path, 'latest-model-ema.th')
    return path


def picture(x_hat):
    """x_hat as a uint8 picture: clamped to [-1, 1] only here."""
    return to_uint8(torch.clamp(x_hat, -1, 1))


class TwoStageHVAE(Model):
    """Evaluates the joint ELBO, reconstructs, and samples (stage-1 prior -> x_hat -> stage 2).
    Its exposed latents (`forward_get_latents`, `sample(latents=...)`) are stage 1's, z_1..z_K."""

    distortion_kind = 'nll'

    def __init__(self, H):
        super().__init__()
        if H.training not in ('progressive', 'conventional'):
            raise ConfigError(f"--training must be 'progressive' or 'conventional', got "
                              f"{H.training!r}")
        self.H = H
        self.progressive = H.training == 'progressive'
        self.stage1 = Stage1VAE(H)
        self.stage2 = ConditionalVAE(H)
        if self.progressive:
            restore_params(self.stage1, resolve_stage1_path(H.stage1_path))
            self.stage1.requires_grad_(False)
        elif H.get('stage1_init'):
            # Not the paper's baseline: conventional training started where progressive stage 1
            # ended, to ask whether the unused stage 1 of the baseline is a local optimum.
            restore_params(self.stage1, resolve_stage1_path(H.stage1_init))

    def train(self, mode=True):
        super().train(mode)
        if self.progressive:
            self.stage1.eval()                 # frozen: nothing of it may change
        return self

    def stage1_posterior(self, x):
        """(x_hat from one posterior sample of z1, stage 1's per-block stats)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.progressive):
            px_z, stats = self.stage1.decoder(self.stage1.encoder(x))
            return self.stage1.decoder.out_net(px_z), stats

    def forward(self, x, x_target):
        """-> {'loss', 'elbo' (joint, nats/dim), 'distortion' = 'nll' (stage 2's), 'rate' (both
        stages), 'rate_stage1', 'rate_stage2', 'mse_stage1'}. The loss is the joint negative ELBO
        when conventional, stage 2's own when progressive (stage 1's rate is then a constant)."""
        x_hat, stats1 = self.stage1_posterior(x)
        rate1 = rate_per_example(stats1, math.prod(x.shape[1:]))
        stage2 = self.stage2(x, x_target, x_hat)
        nll, rate2 = stage2['nll'], stage2['rate']
        elbo = (nll + rate1 + rate2).mean()
        loss = (nll + rate2).mean() if self.progressive else elbo
        return dict(loss=loss, elbo=elbo, distortion=nll.mean(), nll=nll.mean(),
                    rate=(rate1 + rate2).mean(), rate_stage1=rate1.mean(), rate_stage2=rate2.mean(),
                    mse_stage1=mse_per_example(x_hat, x_target).mean())

    def forward_get_latents(self, x):
        return self.stage1.forward_get_latents(x)

    @torch.no_grad()
    def reconstruct_stages(self, x):
        """(x_hat from one posterior sample of z1, unclamped; stage 2's reconstruction given that
        x_hat and its posterior z2, the rest at t = 0.1), both NHWC on [-1, 1]."""
        x_hat, _ = self.stage1_posterior(x)
        _, stats = self.stage2.posterior(x, x_hat, get_latents=True)
        px_z = self.stage2.decode(x_hat, t=0.1, latents=[s['z'] for s in stats])
        return x_hat, self.stage2.decoder.out_net.reconstruction(px_z)

    def reconstruct(self, x):
        return self.reconstruct_stages(x)[1]

    @torch.no_grad()
    def x_hat_from_latents(self, n, latents=(), t=None):
        """x_hat (NHWC, unclamped, as stage 2 receives it in training) for n images, with stage 1's
        first len(latents) latents fixed to `latents` and the rest drawn from its prior at
        temperature t (None, a number, or one per block). No latents: a prior sample."""
        return self.stage1.decoder.out_net(
            self.stage1.decoder.forward_manual_latents(n, list(latents), t=t))

    @torch.no_grad()
    def sample_stages(self, n, t1=1.0, t2=1.0, latents=()):
        """(x_hat from stage 1 at t1, first len(latents) of its latents fixed; then x ~ stage 2 at
        t2 given that unclamped x_hat), both NumPy uint8 NHWC (the picture of x_hat clamped)."""
        x_hat = self.x_hat_from_latents(n, latents, t=t1)
        return picture(x_hat), self.stage2.sample(x_hat, t=t2)

    def sample(self, n, t=None, latents=()):
        """x ~ stage 2 given x_hat ~ stage 1, both stages at temperature t."""
        return self.sample_stages(n, t1=t, t2=t, latents=latents)[1]

    def sample_grid(self, originals, x_in, H):
        """Originals, stage-1 reconstructions x_hat, stage-2 reconstructions, then (x_hat, sample)
        pairs from the prior at t = 1.0 and 0.9."""
        n = originals.shape[0]
        x_hat, recon = self.reconstruct_stages(x_in)
        rows = [np.asarray(originals.cpu(), dtype=np.uint8), picture(x_hat), to_uint8(recon)]
        for t in (1.0, 0.9):
            rows += list(self.sample_stages(n, t1=t, t2=t))
        return rows
