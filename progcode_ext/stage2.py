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
x_hat is passed on the loss-target scale (that of the [-1, 1] data, unclamped: the mean head's
output as it is); the image input keeps the dataset's normalisation. The head is the discretized
mixture of logistics, trained by the ELBO.
"""
import torch
from torch import nn

from vdvae.hps import Hyperparams
from vdvae.vae import Block, DecBlock, Decoder, Encoder


class ConditionalDecBlock(DecBlock):
    """A DecBlock whose prior also reads the conditioning activation at its resolution (the core's
    `cond` argument): `prior.c1` takes [state, cond[res]], 2w channels."""

    def __init__(self, H, res, mixin, n_blocks, widths):
        super().__init__(H, res, mixin, n_blocks, widths)
        width = widths[res]
        self.prior = Block(2 * width, int(width * H.bottleneck_multiple), H.zdim * 2 + width,
                           residual=False, use_3x3=res > 2, zero_last=True)


class ConditionalDecoder(Decoder):
    block_class = ConditionalDecBlock


class ConditionalVAE(nn.Module):
    """p(x, z | x_hat) and q(z | x, x_hat): `encoder` (image + x_hat), `cond_encoder` (x_hat),
    `decoder` (conditional blocks, DMoL head). A stage of a chain (multi_stage.py), not a
    `vdvae.contract.Model`: it needs the previous stage's x_hat besides the image."""

    def __init__(self, H):
        super().__init__()
        self.H = H
        self.encoder = Encoder(Hyperparams(H, image_channels=2 * H.image_channels))
        self.cond_encoder = Encoder(H)
        self.decoder = ConditionalDecoder(H)

    def posterior(self, x, x_prev, get_latents=False):
        """(px_z, per-block [{'kl', 'z'}]) of one posterior pass given x_prev, the x_hat of the
        stage before, as `Decoder.forward`."""
        activations = self.encoder(torch.cat([x, x_prev.to(x.dtype)], dim=-1))
        cond = self.cond_encoder(x_prev)
        return self.decoder(activations, get_latents=get_latents, cond=cond)

    def decode(self, n, x_prev, t=None, latents=()):
        """The head's input px_z for the n images of x_prev: the first len(latents) latents fixed,
        the rest drawn from the prior at temperature t."""
        return self.decoder.forward_manual_latents(n, list(latents), t,
                                                   cond=self.cond_encoder(x_prev))
