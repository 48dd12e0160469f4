"""A progressive code from a trained chain (multi_stage.py) or a plain VDVAE: images to one
bitstream chunk per stage, entropy-coded with constriction's range coder.

Latents. Stage by stage, top-down through each decoder block, in closed loop: the encoder feeds
forward the quantised latent z_hat = m + b sigma k, exactly as the decoder will, where m and sigma
are the prior's mean and std given the z_hat's before (and, for stage k > 1, x_hat_{k-1}), b the
bin width in prior stds, and k = round((mu_q - m) / (b sigma)) the posterior mean's offset in bins.
k is coded under the prior's Gaussian discretised to those bins (std 1 / b around 0), so a chunk
costs about -log2 p(z_hat) and the picture decoded from a prefix is the one the encoder computed.
Latent channels that carry nothing about the batch (mean KL below `active_kl` in the closed-loop
pass itself: no random draw anywhere in the encoder) stay at the prior mean; which ones is sent
first (a bit per channel per block). This is not bits-back coding: the gap
to the -ELBO is the price of quantising the latents.

Pixels. After the last stage's latents, each 8-bit pixel is coded under the mixture of logistics
given everything decoded: R under its marginal, G and B under the mixture reweighted by the
channels already decoded (one component choice for R, G and B, as the model defines it), so the
product of the three is the model's own joint probability of the pixel.

Determinism. Encoder and decoder must compute the same probabilities to the bit. The decoder
side of every stage (its conditioning encoder, priors, resnets and head) runs in fixed point
(fixed_point.py: integer activations, sums exact in any order), and the probabilities are integer
tables (integer.py), so every machine and device computes the same; only the encoder's posterior,
whose choices the file carries, is float. Every decode is verified all the same: against the
SHA-256 of what the encoder made (files.py), and each chunk against the decoder's re-encoding of
it (`CheckedDecoder`). Images are coded in batches of `batch` in file order, the same on both
sides.
"""
import copy

import numpy as np
import torch
import constriction

from vdvae.data import make_preprocess
from vdvae.errors import ConfigError
from vdvae.vae_helpers import gaussian_analytical_kl

from ..mean_head import picture
from .container import MAX_BIN_WIDTH, MIN_BIN_WIDTH
from .fixed_point import ACT_BITS, FixedStage, bin_widths, to_fixed, to_float
from .integer import COUNT_BITS, PARAM_BITS, PixelModel, gaussian_counts

# Defaults chosen by measurement on the toy's two-stage chain (docs/codec.md): the widest bin whose
# x_hat_1 stays within 10% of stage 1's MSE target, and the KL threshold below which leaving a
# channel at the prior mean costs no visible quality but saves most of the latent bits.
DEFAULT_BIN_WIDTH = 1.5           # in prior standard deviations
ACTIVE_KL = 0.05                  # nats a latent element; below, a channel stays at its prior mean
SYMBOL_RANGE = 2 ** 12            # offsets beyond +-this many bins are clipped (closed loop: exact)
BATCH = 100                       # images per top-down pass, the same on both sides
PIXEL_CHUNK = 2048                # pixels per probability table computed at once (memory)


def chain_stages(model):
    """The stages a code is made of: a complete chain's, or a plain VDVAE as its one stage."""
    if hasattr(model, 'stages'):
        if not model.complete:
            raise ConfigError('the codec needs a chain that ends with the likelihood stage; this '
                              f'model ends at stage {model.trained_stage} of {model.n_stages}')
        return model.stages
    if hasattr(getattr(getattr(model, 'decoder', None), 'out_net', None), 'nll'):
        return [model]                     # a VDVAE: its decoder ends in the likelihood
    raise ConfigError(f'the codec takes a chain (--model multi_stage / two_stage) or a VDVAE, '
                      f'not {type(model).__name__}')


def bits_of(counts):
    """-log2 of the probabilities counts / 2^COUNT_BITS, summed: what the range coder spends."""
    return float(COUNT_BITS * np.size(counts) - np.log2(np.asarray(counts, np.float64)).sum())


class CheckedDecoder:
    """A range decoder over one chunk that encodes again every symbol it decodes, with the same
    models. The range encoder is deterministic, so the chunk is exactly the encoding of what was
    decoded, read to its last word and holding nothing more, iff the two agree (`ends_exactly`):
    constriction's own `maybe_exhausted` lets a word of slack pass."""

    def __init__(self, chunk):
        self.words = np.frombuffer(chunk, dtype=np.uint32).copy()
        self.decoder = constriction.stream.queue.RangeDecoder(self.words)
        self.encoder = constriction.stream.queue.RangeEncoder()

    def decode(self, model, amount_or_probabilities):
        """As RangeDecoder.decode(model, n) or (model, probabilities)."""
        symbols = self.decoder.decode(model, amount_or_probabilities)
        if isinstance(amount_or_probabilities, int):
            self.encoder.encode(symbols, model)
        else:
            self.encoder.encode(symbols, model, amount_or_probabilities)
        return symbols

    def ends_exactly(self):
        return np.array_equal(self.encoder.get_compressed(), self.words)


class ProgressiveCodec:
    """`encode(images) -> (chunks, info)`, `decode(chunks, n) -> {'x_hats', 'images'}`."""

    def __init__(self, model, bin_width=DEFAULT_BIN_WIDTH, active_kl=ACTIVE_KL, device='cpu'):
        if not MIN_BIN_WIDTH <= bin_width < MAX_BIN_WIDTH:
            raise ConfigError(f'the bin width is in prior stds, in [{MIN_BIN_WIDTH:g}, '
                              f'{MAX_BIN_WIDTH:g}); got {bin_width}')
        self.device = torch.device(device)
        self.model = copy.deepcopy(model).double().eval().to(self.device)
        self.stages = chain_stages(self.model)
        self.fixed = [FixedStage(stage).to(self.device) for stage in self.stages]
        self.H = self.stages[-1].H
        self.preprocess = make_preprocess(self.H.dataset)
        norm = self.preprocess.normalisation
        if norm.low_bit or norm.unit_range:
            raise ConfigError(f'the codec codes 8-bit images on upstream\'s [-1, 1] scale; '
                              f'{self.H.dataset} is trained on another (5-bit or unit range)')
        self.bin_width, self.active_kl, self.batch = float(bin_width), float(active_kl), BATCH
        self.fixed_point_bits = ACT_BITS
        self.n_chunks = len(self.stages)
        self.image_shape = (self.H.image_size, self.H.image_size, self.H.image_channels)
        self.mixtures = self.H.num_mixtures

    # -- the top-down pass both sides share ------------------------------------------------------

    def run_stage(self, s, n, x_prev, latent):
        """px_z of stage s for n images in fixed point (fixed_point.py), given x_hat of the stage
        before (integers, NHWC) or None; each block's z = latent(block, state, prior mean, prior
        log-std), all integers of 2^-ACT_BITS."""
        fixed = self.fixed[s]
        cond = fixed.cond_encoder(x_prev) if x_prev is not None else None
        xs = fixed.initial_states(n)
        for block in fixed.blocks:
            like = torch.zeros((n, block.width, block.base, block.base), dtype=torch.float64,
                               device=self.device)
            x = block.state(xs, n, like)
            pm, pv, x_next = block.prior_of(x, cond)
            xs = block.update(xs, x_next, latent(block, x, pm, pv))
        return fixed.final(xs[self.H.image_size])

    def active_channels(self, qm, qv, pm, pv):
        """Which latent channels of a block carry information about this batch: mean KL(q || p)
        per element above ACTIVE_KL nats, from the closed-loop pass itself (the posterior and
        the prior given the z_hat's before), with no random draw, so that the same images give
        the same mask, and bytes, in any process. The others (VDVAE leaves many unused: there
        q = p) are set to the prior mean and cost nothing; coding them would cost about
        log2(sigma_p / bin) bits each and say nothing."""
        kl = gaussian_analytical_kl(qm, pm, qv, pv)
        return (kl.mean(dim=(0, 2, 3)) > self.active_kl).cpu().numpy()

    def bins(self, pv):
        """Each latent's bin, bin_width of its prior's std wide, in integers of 2^-ACT_BITS."""
        return bin_widths(pv, self.bin_width)

    # -- encoding ---------------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, images):
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if images.ndim != 4 or images.shape[1:] != self.image_shape:
            raise ConfigError(f'the model codes images of shape {self.image_shape} (H, W, C), got '
                              f'{images.shape[1:]}')
        coders = [constriction.stream.queue.RangeEncoder() for _ in self.stages]
        latent_bits = [0.0] * self.n_chunks
        pixel_bits, x_hats = 0.0, [[] for _ in self.stages[:-1]]
        for start in range(0, len(images), self.batch):
            batch = images[start:start + self.batch]
            x_in, _ = self.preprocess(torch.from_numpy(batch))
            x_in, x_prev, n = x_in.double().to(self.device), None, len(batch)
            for s, stage in enumerate(self.stages):
                acts = stage.encoder(x_in if x_prev is None else
                                     torch.cat([x_in, to_float(x_prev)], dim=-1))
                bits = []

                def latent(block, x, pm, pv, acts=acts, coder=coders[s], bits=bits):
                    # the posterior: float, the encoder's alone
                    qm, qv = block.block.enc(torch.cat([to_float(x), acts[block.base]],
                                                       dim=1)).chunk(2, dim=1)
                    active = self.active_channels(qm, qv, to_float(pm), to_float(pv))
                    coder.encode(active.astype(np.int32), self.bit)
                    bits.append(float(active.size))
                    width = self.bins(pv)
                    k = torch.clamp(torch.round((to_fixed(qm) - pm) / width), -SYMBOL_RANGE,
                                    SYMBOL_RANGE)
                    k[:, torch.from_numpy(~active).to(self.device)] = 0
                    symbols = k[:, torch.from_numpy(active).to(self.device)].cpu().numpy().ravel()
                    symbols = symbols.astype(np.int32)
                    coder.encode(symbols + SYMBOL_RANGE, self.gaussian)
                    bits.append(bits_of(self.latent_counts[symbols + SYMBOL_RANGE]))
                    return pm + width * k

                px_z = self.run_stage(s, n, x_prev, latent)
                latent_bits[s] += sum(bits)
                if s < self.n_chunks - 1:
                    x_prev = self.fixed[s].head_of(px_z)
                    x_hats[s].append(picture(to_float(x_prev)))
                else:
                    pixel_bits += self.code_pixels(s, px_z, coders[s], batch)
        chunks = [c.get_compressed().tobytes() for c in coders]
        ideal = list(latent_bits)
        ideal[-1] += pixel_bits
        return chunks, dict(ideal_bits=ideal, latent_bits=latent_bits, pixel_bits=pixel_bits,
                            x_hats=[np.concatenate(x) for x in x_hats])

    # -- decoding ---------------------------------------------------------------------------------

    @torch.no_grad()
    def decode(self, chunks, n):
        """The pictures of the decoded stages' x_hat, and the images once every chunk is given."""
        if not 1 <= len(chunks) <= self.n_chunks:
            raise ConfigError(f'give 1 to {self.n_chunks} chunks, got {len(chunks)}')
        coders = [CheckedDecoder(c) for c in chunks]
        images, x_hats = [], [[] for _ in range(min(len(chunks), self.n_chunks - 1))]
        for start in range(0, n, self.batch):
            m, x_prev = min(self.batch, n - start), None
            for s, coder in enumerate(coders):
                def latent(block, x, pm, pv, coder=coder):
                    active = torch.from_numpy(
                        coder.decode(self.bit, block.zdim).astype(bool)).to(self.device)
                    k = torch.zeros_like(pm)
                    symbols = coder.decode(self.gaussian, k[:, active].numel())
                    k[:, active] = torch.from_numpy(
                        (symbols.astype(np.int64) - SYMBOL_RANGE).astype(np.float64)).reshape(
                            k[:, active].shape).to(self.device)
                    return pm + self.bins(pv) * k

                px_z = self.run_stage(s, m, x_prev, latent)
                if s < self.n_chunks - 1:
                    x_prev = self.fixed[s].head_of(px_z)
                    x_hats[s].append(picture(to_float(x_prev)))
                else:
                    images.append(self.code_pixels(s, px_z, coder, None, m))
        return dict(x_hats=[np.concatenate(x) for x in x_hats],
                    images=np.concatenate(images) if images else None,
                    ends_exactly=[coder.ends_exactly() for coder in coders])

    # -- pixels -----------------------------------------------------------------------------------

    @property
    def bit(self):
        return constriction.stream.model.Uniform(2)

    @property
    def latent_counts(self):
        """Counts of the offsets -SYMBOL_RANGE .. SYMBOL_RANGE (integer.gaussian_counts)."""
        return gaussian_counts(self.bin_width, SYMBOL_RANGE)

    @property
    def gaussian(self):
        """A latent's offset from its prior mean, in bins: the prior discretised, as exact counts."""
        return constriction.stream.model.Categorical(self.latent_counts / float(1 << COUNT_BITS),
                                                     perfect=False)

    def mixture_params(self, s, px_z):
        """(logits (P, M), means, log-scales (P, C, M), raw coefficients (P, 3, M) or None) of
        every pixel, as integers of 2^-PARAM_BITS: the fixed-point head's own integers."""
        l = self.fixed[s].head_of(px_z).cpu().numpy().astype(np.int64)  # exact: integers < 2^53
        l = (l << (PARAM_BITS - ACT_BITS)).reshape(-1, l.shape[-1])
        c, m = self.H.image_channels, self.mixtures
        rest = l[:, m:].reshape(len(l), c, -1)
        return (l[:, :m], rest[..., :m], rest[..., m:2 * m],
                rest[..., 2 * m:3 * m] if c == 3 else None)

    def code_pixels(self, s, px_z, coder, images=None, n=None):
        """Encode `images` (uint8 NHWC) with `coder`, returning their ideal bits; or, without
        images, decode n images and return them. Each channel under the mixture given the
        channels before, as integer counts (integer.PixelModel)."""
        params = self.mixture_params(s, px_z)
        c = self.H.image_channels
        values = (images.reshape(-1, c).astype(np.int64) if images is not None else
                  np.zeros((len(params[0]), c), dtype=np.int64))
        bits = 0.0
        for start in range(0, len(values), PIXEL_CHUNK):
            sl = slice(start, start + PIXEL_CHUNK)
            model = PixelModel(*[None if p is None else p[sl] for p in params])
            for ch in range(c):
                counts, masses = model.counts(ch, values[sl, :ch])
                probabilities = counts / float(1 << COUNT_BITS)
                category = constriction.stream.model.Categorical(perfect=False)
                if images is not None:
                    v = values[sl, ch]
                    coder.encode(v.astype(np.int32), category, probabilities)
                    bits += bits_of(counts[np.arange(len(v)), v])
                else:
                    v = coder.decode(category, probabilities).astype(np.int64)
                    values[sl, ch] = v
                model.update(masses, v)
        if images is not None:
            return bits
        return values.reshape(n, *self.image_shape).astype(np.uint8)
