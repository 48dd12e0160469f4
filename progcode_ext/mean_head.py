"""The mean head of Appendix A.3: a 1x1 convolution that replaces the mixture of logistics and
predicts the mean image; its distortion is the mean squared error per dimension.

Distortions are on upstream's loss-target scale, [-1, 1] (a pixel value v maps to (v - 127.5) /
127.5), so an MSE here is 4 / 255^2 times the MSE in 8-bit units. PSNR is for that scale's peak-to-
peak range of 2, i.e. the same number as PSNR on 0..255.
"""
import math

import torch
from torch import nn

from vdvae.vae_helpers import get_1x1, to_uint8


def mse_per_example(x, target):
    """Mean squared error per dimension of each example of x (NHWC, computed in float32), (B,)."""
    return ((x.float() - target) ** 2).flatten(1).mean(dim=1)


def psnr(mse):
    """PSNR in dB of an MSE on the [-1, 1] scale."""
    return 10 * math.log10(4.0 / mse) if mse > 0 else float('inf')


def psnr_of(mse):
    """`psnr` of a tensor, as a float32 tensor (computed in float64; an MSE of 0 gives inf)."""
    return (10 * torch.log10(4.0 / mse.detach().double())).float()


class MeanHead(nn.Module):
    """px_z (B, width, H, W) -> mean image, NHWC, on the target scale."""

    def __init__(self, H):
        super().__init__()
        self.H = H
        self.out_conv = get_1x1(H.width, H.image_channels)

    def forward(self, px_z):
        return self.out_conv(px_z).permute(0, 2, 3, 1)

    def distortion(self, px_z, x):
        """Mean squared error per dimension for each example, shape (B,)."""
        return mse_per_example(self.forward(px_z), x)

    def sample(self, px_z):
        """The mean image as NumPy uint8 NHWC (the head is deterministic)."""
        return picture(self.forward(px_z))

    def reconstruction(self, px_z):
        """The mean image, unclamped."""
        return self.forward(px_z)


def picture(x_hat):
    """x_hat as a NumPy uint8 picture: clamped to [-1, 1] only here, never where it is handed on."""
    return to_uint8(torch.clamp(x_hat, -1, 1))
