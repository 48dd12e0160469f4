"""VDVAE (Child, 2021): bottom-up encoder, top-down decoder of stochastic blocks, DMoL head.

Same modules, state_dict keys, parameter order, init conventions, random draws and arithmetic as
upstream `openai/vdvae` (see ../shared/spec/vdvae_upstream.md), so official checkpoints load and
seeded results match. Public inputs are NHWC; everything inside is NCHW.
"""
import math
import numbers

import torch
from torch import nn
from torch.nn import functional as F

from .block_strings import check_architecture
from .contract import Model
from .errors import ConfigError
from .hps import with_geometry
from .vae_helpers import (DmolNet, draw_gaussian_diag_samples, full_precision,
                          gaussian_analytical_kl, get_1x1, get_3x3, pad_channels, rate_per_example)


def memory_format_of(t):
    """torch.channels_last if the 4-d tensor `t` is laid out channels-last (and not also plainly
    contiguous), else torch.contiguous_format. The model keeps the layout its weights were given:
    `model.to(memory_format=torch.channels_last)` runs it channels-last (see BENCHMARKS.md), and
    the tensors it makes itself follow that layout so that operations never mix the two."""
    if torch._C._functorch.is_batchedtensor(t):        # an ensemble's member (vdvae/ensemble.py)
        return torch.contiguous_format
    if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class Block(nn.Module):
    """Pre-activation bottleneck: 1x1 -> 3x3 -> 3x3 -> 1x1 with GELUs, optional residual, then
    optional average pooling (after the residual add)."""

    def __init__(self, in_width, middle_width, out_width, down_rate=None, residual=False,
                 use_3x3=True, zero_last=False):
        super().__init__()
        self.down_rate = down_rate
        self.residual = residual
        conv = get_3x3 if use_3x3 else get_1x1
        self.c1 = get_1x1(in_width, middle_width)
        self.c2 = conv(middle_width, middle_width)
        self.c3 = conv(middle_width, middle_width)
        self.c4 = get_1x1(middle_width, out_width, zero_weights=zero_last)

    def forward(self, x):
        xhat = self.c1(F.gelu(x))
        xhat = self.c2(F.gelu(xhat))
        xhat = self.c3(F.gelu(xhat))
        xhat = self.c4(F.gelu(xhat))
        out = x + xhat if self.residual else xhat
        if self.down_rate is not None:
            out = F.avg_pool2d(out, kernel_size=self.down_rate, stride=self.down_rate)
        return out


class Encoder(nn.Module):
    """Bottom-up ResNet; returns {resolution: last activation at that resolution} (NCHW)."""

    def __init__(self, H):
        super().__init__()
        self.H = H = with_geometry(H)
        enc_layers, _, self.widths = check_architecture(H)
        self.in_conv = get_3x3(H.image_channels, H.width)
        self.enc_blocks = nn.ModuleList(
            Block(self.widths[res], int(self.widths[res] * H.bottleneck_multiple), self.widths[res],
                  down_rate=down_rate, residual=True, use_3x3=res > 2)
            for res, down_rate in enc_layers)
        scale = math.sqrt(1 / len(enc_layers))
        for block in self.enc_blocks:
            block.c4.weight.data *= scale

    def forward(self, x):
        # NHWC -> NCHW, stored channels-last if the model is (the first conv's weight tells)
        x = x.permute(0, 3, 1, 2).contiguous(memory_format=memory_format_of(self.in_conv.weight))
        x = self.in_conv(x)
        activations = {x.shape[2]: x}
        for block in self.enc_blocks:
            x = block(x)
            res = x.shape[2]
            if x.shape[1] != self.widths[res]:
                x = pad_channels(x, self.widths[res])
            activations[res] = x
        return activations


def check_temperatures(t, n_blocks):
    """`t` is None, a number, or one number per decoder block (a list or 1-d tensor)."""
    if t is None or isinstance(t, numbers.Number) or (isinstance(t, torch.Tensor) and t.dim() == 0):
        return t
    if len(t) != n_blocks:
        raise ConfigError(f'{len(t)} temperatures, but the decoder has {n_blocks} blocks; give '
                          'one number, or exactly one per block')
    return t


def _temperature(t, i):
    """Temperature of decoder block i: t itself (None or a number) or t[i] (one per block)."""
    if not (t is None or isinstance(t, numbers.Number) or
            (isinstance(t, torch.Tensor) and t.dim() == 0)):
        t = t[i]
    if t is None:
        return None
    t = float(t)
    if not t >= 0:
        raise ConfigError(f'temperature must be a number >= 0, got {t}')
    return t


class DecBlock(nn.Module):
    """One stochastic layer z_i at resolution `res`: posterior q(z_i | x, z_<i) (`enc`), prior
    p(z_i | z_<i) plus a feature update (`prior`), latent projection (`z_proj`), `resnet`."""

    def __init__(self, H, res, mixin, n_blocks, widths):
        super().__init__()
        self.base = res
        self.mixin = mixin
        self.zdim = H.zdim
        width = widths[res]
        cond_width = int(width * H.bottleneck_multiple)
        use_3x3 = res > 2
        self.enc = Block(width * 2, cond_width, H.zdim * 2, residual=False, use_3x3=use_3x3)
        self.prior = Block(width, cond_width, H.zdim * 2 + width, residual=False, use_3x3=use_3x3,
                           zero_last=True)
        self.z_proj = get_1x1(H.zdim, width)
        self.z_proj.weight.data *= math.sqrt(1 / n_blocks)
        self.resnet = Block(width, cond_width, width, residual=True, use_3x3=use_3x3)
        self.resnet.c4.weight.data *= math.sqrt(1 / n_blocks)

    def _state(self, xs, batch, like):
        """The running decoder state at this resolution, with the lower resolution mixed in."""
        x = xs[self.base] if self.base in xs else torch.zeros_like(like)
        if x.shape[0] != batch:
            # learned bias_xs have batch 1; repeat() gives a contiguous tensor: use like's layout
            x = x.repeat(batch, 1, 1, 1).contiguous(memory_format=memory_format_of(like))
        if self.mixin is not None:
            x = x + F.interpolate(xs[self.mixin][:, :x.shape[1], ...],
                                  scale_factor=self.base // self.mixin)
        return x

    def _prior(self, x, cond=None):
        """Prior mean, log-std and the state's update; a conditional decoder (extensions) also
        hands its prior the conditioning activation at this resolution, `cond[res]`."""
        feats = self.prior(x if cond is None else torch.cat([x, cond[self.base]], dim=1))
        # split, not three slices: its backward writes one gradient tensor, where each slice's
        # would allocate a zero tensor of the full width and the three would then be summed
        pm, pv, xpp = feats.split([self.zdim, self.zdim, feats.shape[1] - 2 * self.zdim], dim=1)
        return pm, pv, x + xpp

    def _update(self, xs, x, z):
        x = x + self.z_proj(z)
        xs[self.base] = self.resnet(x)
        return xs

    def forward(self, xs, activations, get_latents=False, cond=None):
        """Posterior path: z ~ q(z | x, z_<), and the KL map to the prior."""
        acts = activations[self.base]
        x = self._state(xs, acts.shape[0], acts)
        qm, qv = self.enc(torch.cat([x, acts], dim=1)).chunk(2, dim=1)
        pm, pv, x = self._prior(x, cond)
        z = draw_gaussian_diag_samples(qm, qv)
        # in float32 also under bf16/fp16 autocast
        kl = gaussian_analytical_kl(*map(full_precision, (qm, pm, qv, pv)))
        xs = self._update(xs, x, z)
        return xs, (dict(kl=kl, z=z.detach()) if get_latents else dict(kl=kl))

    def forward_uncond(self, xs, t=None, lvs=None, cond=None, get_latents=False):
        """Prior path: z ~ p(z | z_<) with std scaled by temperature t, or z = lvs if given.
        Returns the updated states, and z with `get_latents`."""
        some = next(iter(xs.values()))
        width = self.resnet.c1.in_channels
        like = some.new_zeros((some.shape[0], width, self.base, self.base))
        x = self._state(xs, some.shape[0],
                        like.contiguous(memory_format=memory_format_of(self.resnet.c2.weight)))
        pm, pv, x = self._prior(x, cond)
        if lvs is not None:
            z = lvs
        else:
            if t is not None:
                pv = pv + (math.log(t) if t > 0 else -math.inf)
            z = draw_gaussian_diag_samples(pm, pv)
        xs = self._update(xs, x, z)
        return (xs, z) if get_latents else xs


class Decoder(nn.Module):
    """Top-down decoder: learned initial states `bias_xs`, the DecBlocks, `gain`/`bias`, DMoL head."""

    block_class = DecBlock              # extensions swap in conditional blocks

    def __init__(self, H):
        super().__init__()
        self.H = H = with_geometry(H)
        _, dec_layers, self.widths = check_architecture(H)
        self.dec_blocks = nn.ModuleList(
            self.block_class(H, res, mixin, len(dec_layers), self.widths)
            for res, mixin in dec_layers)
        self.resolutions = sorted({res for res, _ in dec_layers})
        self.bias_xs = nn.ParameterList(
            nn.Parameter(torch.zeros(1, self.widths[res], res, res))
            for res in self.resolutions if res <= H.no_bias_above)
        self.out_net = DmolNet(H)
        self.gain = nn.Parameter(torch.ones(1, H.width, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, H.width, 1, 1))

    def final_fn(self, x):
        return x * self.gain + self.bias

    def _initial_states(self, n=None):
        if n is None:
            return {b.shape[2]: b for b in self.bias_xs}
        return {b.shape[2]: b.repeat(n, 1, 1, 1).contiguous(memory_format=memory_format_of(b))
                for b in self.bias_xs}

    def _empty_guard(self, xs, n):
        # Upstream needs one bias_xs to know the batch; without any, start from zeros instead.
        if not xs:
            res = self.resolutions[0]
            xs[res] = self.gain.new_zeros((n, self.widths[res], res, res))
        return xs

    def forward(self, activations, get_latents=False, cond=None):
        """Posterior pass. Returns (px_z NCHW, [per-block dict(kl=..., z=...)])."""
        xs = self._initial_states()
        stats = []
        for block in self.dec_blocks:
            xs, block_stats = block(xs, activations, get_latents=get_latents, cond=cond)
            stats.append(block_stats)
        return self.final_fn(xs[self.H.image_size]), stats

    def forward_uncond(self, n, t=None, y=None):
        """Prior sample of px_z for `n` images; t: None, a number, or one per block."""
        check_temperatures(t, len(self.dec_blocks))
        xs = self._empty_guard(self._initial_states(n), n)
        for i, block in enumerate(self.dec_blocks):
            xs = block.forward_uncond(xs, _temperature(t, i))
        return self.final_fn(xs[self.H.image_size])

    def forward_manual_latents(self, n, latents, t=None, cond=None):
        """px_z with z_1..z_k fixed to `latents` (k = len(latents)) and the rest drawn from the
        prior at temperature t (None, a number, or one per block)."""
        if len(latents) > len(self.dec_blocks):
            raise ConfigError(f'{len(latents)} latents given, but the decoder has only '
                              f'{len(self.dec_blocks)} blocks')
        check_temperatures(t, len(self.dec_blocks))
        xs = self._empty_guard(self._initial_states(n), n)
        for i, block in enumerate(self.dec_blocks):
            lvs = latents[i] if i < len(latents) else None
            xs = block.forward_uncond(xs, _temperature(t, i), lvs=lvs, cond=cond)
        return self.final_fn(xs[self.H.image_size])

    def prior_latents(self, n, k, latents=(), t=None):
        """z_1..z_k of n prior samples: `latents` first, the rest drawn at temperature t."""
        check_temperatures(t, len(self.dec_blocks))
        xs = self._empty_guard(self._initial_states(n), n)
        zs = []
        for i, block in enumerate(self.dec_blocks[:k]):
            lvs = latents[i] if i < len(latents) else None
            xs, z = block.forward_uncond(xs, _temperature(t, i), lvs=lvs, get_latents=True)
            zs.append(z)
        return zs


class VAE(Model):
    """The whole VDVAE. `forward` returns the negative ELBO and its terms in nats per dimension."""

    distortion_kind = 'nll'

    def __init__(self, H):
        super().__init__()
        self.H = H = with_geometry(H)
        self.encoder = Encoder(H)
        self.decoder = Decoder(H)

    def forward(self, x, x_target):
        """x: NHWC input, x_target: NHWC loss targets in [-1, 1] ->
        {'elbo', 'distortion', 'rate'}, batch means in nats/dim (elbo = distortion + rate):
        upstream's dict exactly, so `distortion` is the NLL (there is no `loss`: it is `elbo`)."""
        activations = self.encoder(x)
        px_z, stats = self.decoder(activations)
        distortion_per_pixel = self.decoder.out_net.nll(px_z, x_target)
        rate_per_pixel = rate_per_example(stats, math.prod(x.shape[1:]))
        elbo = (distortion_per_pixel + rate_per_pixel).mean()
        return dict(elbo=elbo, distortion=distortion_per_pixel.mean(), rate=rate_per_pixel.mean())

    def forward_get_latents(self, x):
        """Per-block [{'kl': map, 'z': posterior sample}] for NHWC images x."""
        activations = self.encoder(x)
        _, stats = self.decoder(activations, get_latents=True)
        return stats

    @torch.no_grad()
    def sample(self, n, t=None, latents=()):
        return self.decoder.out_net.sample(self.decoder.forward_manual_latents(n, list(latents), t=t))

    @torch.no_grad()
    def reconstruct(self, x):
        """Decoded from all posterior latents by the head: a sample of the mixture of logistics
        before rounding to 8 bits (a mean head: its mean)."""
        px_z, _ = self.decoder(self.encoder(x))
        return self.decoder.out_net.reconstruction(px_z)
