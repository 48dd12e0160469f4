"""Stage 2 (Appendix A.4): a conditional VDVAE of the same architecture, given the stage-1
reconstruction x_hat.

How x_hat enters (A.4 leaves the mechanics open; these are our choices):
1. The encoder reads the image and x_hat together: their channels are concatenated (NHWC) before
   `in_conv`, which therefore has 2C input channels. Through its activations the posterior
   q(z_i | x, x_hat, z_<i) depends on x_hat.
2. A second encoder of the same architecture (`cond_encoder`) reads x_hat alone. Its activation at
   each resolution r, c_r, is handed to every decoder block at r (a U-Net skip).
3. In each block the prior reads [decoder state, c_r] concatenated on channels (so `prior.c1` has
   2w inputs), exactly as the posterior branch reads [state, encoder activation]. The prior mean
   and log-std, and the prior's residual update of the state, therefore depend on x_hat; through
   the state so do all later blocks, the posterior, and the likelihood.
x_hat is passed on the loss-target scale [-1, 1]; the image input keeps the dataset's
normalisation. The head is the discretized mixture of logistics, trained by the ELBO.
"""
import math

import torch
from torch import nn

from vdvae.hps import Hyperparams
from vdvae.vae import Block, Decoder, DecBlock, Encoder, _temperature
from vdvae.vae_helpers import draw_gaussian_diag_samples, full_precision, gaussian_analytical_kl


class ConditionalDecBlock(DecBlock):
    """A DecBlock whose prior also reads the conditioning activation at its resolution."""

    def __init__(self, H, res, mixin, n_blocks, widths):
        super().__init__(H, res, mixin, n_blocks, widths)
        width = widths[res]
        self.prior = Block(2 * width, int(width * H.bottleneck_multiple), H.zdim * 2 + width,
                           residual=False, use_3x3=res > 2, zero_last=True)

    def _prior_given(self, x, cond):
        feats = self.prior(torch.cat([x, cond[self.base]], dim=1))
        pm, pv, xpp = feats.split([self.zdim, self.zdim, feats.shape[1] - 2 * self.zdim], dim=1)
        return pm, pv, x + xpp

    def forward(self, xs, activations, cond, get_latents=False):
        acts = activations[self.base]
        x = self._state(xs, acts.shape[0], acts)
        qm, qv = self.enc(torch.cat([x, acts], dim=1)).chunk(2, dim=1)
        pm, pv, x = self._prior_given(x, cond)
        z = draw_gaussian_diag_samples(qm, qv)
        kl = gaussian_analytical_kl(*map(full_precision, (qm, pm, qv, pv)))
        xs = self._update(xs, x, z)
        return xs, (dict(kl=kl, z=z.detach()) if get_latents else dict(kl=kl))

    def forward_uncond(self, xs, cond, t=None, lvs=None):
        c = cond[self.base]
        x = self._state(xs, c.shape[0], torch.zeros_like(c))
        pm, pv, x = self._prior_given(x, cond)
        if lvs is not None:
            z = lvs
        else:
            if t is not None:
                pv = pv + (math.log(t) if t > 0 else -math.inf)
            z = draw_gaussian_diag_samples(pm, pv)
        return self._update(xs, x, z)


class ConditionalDecoder(Decoder):
    block_class = ConditionalDecBlock

    def forward(self, activations, cond, get_latents=False):
        xs = self._initial_states()
        stats = []
        for block in self.dec_blocks:
            xs, block_stats = block(xs, activations, cond, get_latents=get_latents)
            stats.append(block_stats)
        return self.final_fn(xs[self.H.image_size]), stats

    def forward_manual_latents(self, cond, latents, t=None):
        n = next(iter(cond.values())).shape[0]
        xs = self._initial_states(n)
        for i, block in enumerate(self.dec_blocks):
            lvs = latents[i] if i < len(latents) else None
            xs = block.forward_uncond(xs, cond, _temperature(t, i), lvs=lvs)
        return self.final_fn(xs[self.H.image_size])

    def forward_uncond(self, cond, t=None):
        return self.forward_manual_latents(cond, [], t)


class ConditionalVAE(nn.Module):
    """p(x, z | x_hat) and q(z | x, x_hat): `encoder` (image + x_hat), `cond_encoder` (x_hat),
    `decoder` (conditional blocks, DMoL head)."""

    def __init__(self, H):
        super().__init__()
        self.H = H
        self.encoder = Encoder(Hyperparams(H, image_channels=2 * H.image_channels))
        self.cond_encoder = Encoder(H)
        self.decoder = ConditionalDecoder(H)

    def forward(self, x, x_target, x_hat, get_latents=False):
        """-> px_z, per-block stats, per-example NLL and rate (nats/dim)."""
        activations = self.encoder(torch.cat([x, x_hat.to(x.dtype)], dim=-1))
        cond = self.cond_encoder(x_hat)
        px_z, stats = self.decoder(activations, cond, get_latents=get_latents)
        ndims = math.prod(x.shape[1:])
        distortion = self.decoder.out_net.nll(px_z, x_target)
        rate = sum(s['kl'].sum(dim=(1, 2, 3)) for s in stats) / ndims
        return px_z, stats, distortion, rate

    def sample(self, x_hat, t=None, latents=()):
        """NumPy uint8 NHWC samples of p(x | x_hat) (first len(latents) latents fixed)."""
        px_z = self.decoder.forward_manual_latents(self.cond_encoder(x_hat), list(latents), t)
        return self.decoder.out_net.sample(px_z)
