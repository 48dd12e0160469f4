"""The masked decoder of Appendix A.2 and the two ways to train it (Section 4.1, Table 1).

`MaskedDecoder`: a VDVAE decoder driven by z_1..z_K only. Its blocks after the first K are given
z = 0 whatever latents are passed, so z_{K+1..T} carry no information and cost no rate; a mean
head decodes. It reuses the core's manual-latent mechanism (`DecBlock.forward_uncond(lvs=...)`).

`ProbeVAE` (mode `probe`): the D_K probe. q(z_1..z_K | x) is a trained VDVAE's bottom-up encoder and
the posterior branches of its first K decoder blocks, frozen; a masked decoder learns to minimise
the MSE from posterior samples. Reports (R_K, D_K).

`MaskedVAE` (mode `gamma_optimal`): the trained encoder with a masked decoder, trained jointly - q,
the prior of z_1..z_K and the decoder - to minimise D subject to R_K <= gamma (default gamma: the
trained model's R_K). Reports (R'_K, lambda*).

In both modes the masked decoder starts from the trained decoder (its mean head fresh), unless
`--masked_init fresh`: the two sides of Table 1 then start alike and differ only in what the paper
compares, a frozen q against one trained for the rate constraint. (Started fresh, the toy's probes
still improved their D_K by 3% over the last fifth of 1,500 steps, while the gamma-optimal decoder,
started from the trained one, had a head start.)
"""
import math

import numpy as np
import torch

from vdvae.checkpoint import restore_params
from vdvae.contract import Model
from vdvae.errors import ConfigError
from vdvae.evaluation import load_batch, split_batches
from vdvae.vae import VAE, Decoder, Encoder, _temperature, check_temperatures
from vdvae.vae_helpers import rate_per_example, to_uint8

from .lagrangian import LagrangianObjective
from .latent_groups import progressive_blocks
from .mean_head import MeanHead
from .stage1 import multiplier_kwargs, with_psnr


class MaskedDecoder(Decoder):
    """Decoder whose latents after the first `n_visible` blocks are fixed to zero (A.2)."""

    def __init__(self, H, n_visible):
        super().__init__(H)
        self.n_visible = n_visible
        self.out_net = MeanHead(self.H)

    def _mask(self, xs, i, block):
        batch = next(iter(xs.values())).shape[0]
        z = self.gain.new_zeros((batch, self.H.zdim, block.base, block.base))
        return block.forward_uncond(xs, lvs=z)

    def forward(self, activations, get_latents=False):
        """Posterior for z_1..z_K, zeros after. Returns (px_z, stats of the first K blocks)."""
        xs = self._initial_states()
        stats = []
        for i, block in enumerate(self.dec_blocks):
            if i < self.n_visible:
                xs, block_stats = block(xs, activations, get_latents=get_latents)
                stats.append(block_stats)
            else:
                xs = self._mask(xs, i, block)
        return self.final_fn(xs[self.H.image_size]), stats

    def forward_manual_latents(self, n, latents, t=None):
        """z_1..z_k from `latents` (k <= K), z_{k+1..K} from the prior at t (one temperature per
        decoder block, or one for all); latents beyond K ignored."""
        check_temperatures(t, len(self.dec_blocks))
        xs = self._empty_guard(self._initial_states(n), n)
        for i, block in enumerate(self.dec_blocks):
            if i < min(len(latents), self.n_visible):
                xs = block.forward_uncond(xs, lvs=latents[i])
            elif i < self.n_visible:
                xs = block.forward_uncond(xs, _temperature(t, i))
            else:
                xs = self._mask(xs, i, block)
        return self.final_fn(xs[self.H.image_size])

    def forward_uncond(self, n, t=None, y=None):
        return self.forward_manual_latents(n, [], t)


def masked_decoder(H, trained, k):
    """A masked decoder for z_1..z_k, from `trained`'s decoder (less its likelihood head) unless
    `--masked_init fresh`."""
    decoder = MaskedDecoder(H, k)
    if H.masked_init == 'trained':
        own = {key: v for key, v in trained.decoder.state_dict().items() if 'out_net' not in key}
        decoder.load_state_dict(own, strict=False)
    return decoder


def load_trained_vdvae(H):
    """The trained VDVAE of `--encoder_path` (ours or upstream's files), frozen."""
    if not H.get('encoder_path'):
        raise ConfigError('the masked decoder needs the trained VDVAE: pass --encoder_path '
                          'CKPT (a *-model-ema.th or *-model.th of the --hps architecture)')
    from vdvae.hps import Hyperparams
    trained = VAE(Hyperparams(H))
    restore_params(trained, H.encoder_path)
    return trained


@torch.no_grad()
def measure_rate_k(model_rate_k, dataset, preprocess_fn, device, n_batch):
    """Mean R_K (nats/dim) over a split, from a function x_in -> per-example R_K."""
    total, n = 0.0, 0
    for indices in split_batches(len(dataset), n_batch):
        x_in, _ = preprocess_fn(load_batch(dataset, indices), device)
        total += model_rate_k(x_in).sum().item()
        n += x_in.shape[0]
    return total / n


def posterior_latents_k(encoder, decoder, k, x):
    """Per-block [{'z', 'kl'}] of z_1..z_K under the posterior of encoder + decoder's first K
    blocks."""
    activations = encoder(x)
    xs = decoder._initial_states()
    stats = []
    for block in decoder.dec_blocks[:k]:
        xs, block_stats = block(xs, activations, get_latents=True)
        stats.append(block_stats)
    return stats


def posterior_rate_k(encoder, decoder, k, x):
    """(z_1..z_K, per-example R_K in nats/dim) under the posterior of encoder + decoder's first K
    blocks."""
    stats = posterior_latents_k(encoder, decoder, k, x)
    return [s['z'] for s in stats], rate_per_example(stats, math.prod(x.shape[1:]))


class ProbeVAE(Model):
    """D_K probe: frozen trained q(z_1..z_K | x), a masked decoder trained on MSE. Its prior is the
    trained model's p(z_1..z_K), its latents z_1..z_K."""

    distortion_kind = 'mse'
    has_unused_parameters = True                # the masked decoder's posterior branches

    def __init__(self, H):
        super().__init__()
        trained = load_trained_vdvae(H)
        self.H = trained.H
        self.k = progressive_blocks(self.H)
        self.decoder = masked_decoder(self.H, trained, self.k)
        self.encoder, self.trained_decoder = trained.encoder, trained.decoder
        self.encoder.requires_grad_(False)
        self.trained_decoder.requires_grad_(False)

    def train(self, mode=True):
        super().train(mode)
        self.encoder.eval()
        self.trained_decoder.eval()
        return self

    def forward(self, x, x_target):
        """-> {'loss' = 'distortion' = 'mse' (D_K), 'rate' (R_K of the frozen q), 'psnr'}."""
        with torch.no_grad():
            zs, rate_k = posterior_rate_k(self.encoder, self.trained_decoder, self.k, x)
        px_z = self.decoder.forward_manual_latents(x.shape[0], zs)
        distortion = self.decoder.out_net.distortion(px_z, x_target).mean()
        return with_psnr(dict(loss=distortion, distortion=distortion, rate=rate_k.mean()))

    def forward_get_latents(self, x):
        return posterior_latents_k(self.encoder, self.trained_decoder, self.k, x)

    @torch.no_grad()
    def sample(self, n, t=None, latents=()):
        zs = self.trained_decoder.prior_latents(n, self.k, list(latents), t=t)
        return self.decoder.out_net.sample(self.decoder.forward_manual_latents(n, zs))

    @torch.no_grad()
    def reconstruct(self, x):
        zs, _ = posterior_rate_k(self.encoder, self.trained_decoder, self.k, x)
        px_z = self.decoder.forward_manual_latents(x.shape[0], zs)
        return self.decoder.out_net.reconstruction(px_z)

    def sample_grid(self, originals, x_in, H):
        """Rows: originals, then the masked decoder's reconstructions from z_1..z_K."""
        recon = to_uint8(torch.clamp(self.reconstruct(x_in), -1, 1))
        return [np.asarray(originals.cpu(), dtype=np.uint8), recon]

    def sample_grid_titles(self, H):
        return ['original', f'reconstruction (first {self.k} latent layers)']

    def sample_grid_caption(self, H):
        return "validation images and the probe's reconstructions"


class MaskedVAE(Model):
    """gamma-optimal: encoder + masked decoder, minimise D subject to R_K <= gamma."""

    distortion_kind = 'mse'
    has_unused_parameters = True                # posterior branches of the masked blocks

    def __init__(self, H):
        super().__init__()
        if H.rate_target is not None and not H.rate_target > 0:
            raise ConfigError(f'--rate_target must be a positive number of nats/dim, got '
                              f'{H.rate_target} (omit it to use the trained model\'s R_K)')
        trained = load_trained_vdvae(H)
        self.H = trained.H
        self.k = progressive_blocks(self.H)
        self.encoder = Encoder(self.H)
        self.decoder = masked_decoder(self.H, trained, self.k)
        self.encoder.load_state_dict(trained.encoder.state_dict())
        self.objective = LagrangianObjective('rate', H.rate_target or 1.0, **multiplier_kwargs(H))
        self.rate_target_given = bool(H.rate_target)

    def calibrate(self, dataset, preprocess_fn, device, logprint):
        """gamma = R_K of the trained model over `dataset`, unless --rate_target was given."""
        if self.rate_target_given or int(self.objective.multiplier.steps) > 0:
            return
        trained = load_trained_vdvae(self.H).to(device).eval()
        gamma = measure_rate_k(lambda x: posterior_rate_k(trained.encoder, trained.decoder,
                                                          self.k, x)[1],
                               dataset, preprocess_fn, device, self.H.n_batch)
        self.objective.multiplier.set_target(gamma)
        logprint(f'rate target gamma = R_K of the trained model = {gamma:.6f} nats/dim '
                 f'(first {self.k} latent layers)')

    def forward(self, x, x_target):
        """-> {'loss', 'rate' (R'_K), 'distortion' = 'mse', 'psnr', 'eta', 'constraint_violation'}."""
        px_z, stats = self.decoder(self.encoder(x))
        distortion = self.decoder.out_net.distortion(px_z, x_target).mean()
        rate = rate_per_example(stats, math.prod(x.shape[1:])).mean()
        return with_psnr(self.objective(rate, distortion))

    def after_update(self, stats):
        self.objective.lagrangian_step(stats)

    def forward_get_latents(self, x):
        """z_1..z_K of the posterior (the masked decoder's first K blocks)."""
        return self.decoder(self.encoder(x), get_latents=True)[1]

    @torch.no_grad()
    def sample(self, n, t=None, latents=()):
        return self.decoder.out_net.sample(self.decoder.forward_manual_latents(n, list(latents), t))

    @torch.no_grad()
    def reconstruct(self, x):
        """Mean images (NHWC, target scale) decoded from one posterior sample of z_1..z_K."""
        px_z, _ = self.decoder(self.encoder(x))
        return self.decoder.out_net.reconstruction(px_z)
