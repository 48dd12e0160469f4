"""What every network offers to the tools that train, evaluate, picture and sample it.

`Model` is the contract, in code: upstream's VAE, progcode's `Stage1VAE`, `ProbeVAE`, `MaskedVAE` and
`MultiStageHVAE` (with `TwoStageHVAE`, its two-stage case), and whatever an extension registers in
`vdvae.models`, subclass it, and
`train.py`, `evaluate`, the sample grid, `python -m vdvae sample`, the experiments and the adapter
for upstream's loop use nothing else. Images cross it as NHWC: `x_in` as the dataset's
preprocessing gives it, `x_target` and reconstructions on the loss-target scale [-1, 1], samples as
NumPy uint8.
"""
import numpy as np
import torch
from torch import nn

DISTORTION_KINDS = {
    'nll': '-log p(x | z) of the discretized mixture of logistics, nats per dimension',
    'mse': 'mean squared error per dimension on the [-1, 1] scale (4 / 255^2 x the 8-bit MSE)',
}
SAMPLE_GRID_TEMPERATURES = (1.0, 0.9, 0.8, 0.7)


def training_loss(stats):
    """The scalar a model's training minimises: its `loss`, or for a model trained by the ELBO
    alone (upstream's VAE returns upstream's dict) its negative ELBO `elbo`."""
    return stats['loss'] if 'loss' in stats else stats['elbo']


def with_distortion_name(stats, kind):
    """`stats` with the distortion also under its unambiguous name `kind` ('nll' or 'mse'), for
    the records of models whose dict has only upstream's `distortion`."""
    if kind in stats or 'distortion' not in stats:
        return stats
    return dict(stats, **{kind: stats['distortion']})


class Model(nn.Module):
    """The contract. Subclasses implement `forward`, `forward_get_latents`, `sample` and
    `reconstruct`, and set `distortion_kind`; the rest has defaults.

    forward(x_in, x_target) -> dict of scalar tensors, batch means per data dimension (H*W*C):
        `loss`        what training minimises (absent only where it is `elbo`: upstream's VAE)
        `elbo`        the negative ELBO in nats/dim, where the model has one
        `rate`        KL of the posterior to the prior, nats/dim (which latents: the model says)
        `distortion`  upstream's name, read by upstream's loop; in the unit of `distortion_kind`
                      and also returned under that name (`nll` or `mse`), except by upstream's
                      VAE, whose dict is upstream's exactly
        plus model-specific terms (e.g. `eta`, `psnr`, `rate_stage1`).
    """

    distortion_kind = None              # a key of DISTORTION_KINDS
    has_unused_parameters = False       # parameters that get no gradient (DDP must be told)

    def forward(self, x_in, x_target):
        raise NotImplementedError

    def forward_get_latents(self, x_in):
        """The posterior latents the model exposes, first to last: [{'z': (B, zdim, r, r) sample,
        'kl': (B, zdim, r, r) KL map in nats}] per latent layer (upstream's name and form)."""
        raise NotImplementedError

    def sample(self, n, t=None, latents=()):
        """n images, NumPy uint8 NHWC, from the prior at temperature t (None: 1; a number; or a
        list, one per latent layer), the first len(latents) latents fixed to `latents` (z's of
        `forward_get_latents`)."""
        raise NotImplementedError

    def reconstruct(self, x_in):
        """Reconstructions of x_in from one posterior sample: float NHWC on the target scale,
        unclamped (a mean head's mean image; a sample of a likelihood head, as its pixel values)."""
        raise NotImplementedError

    def sample_grid(self, originals, x_in, H):
        """Rows (uint8 NHWC arrays of len(originals) images) of the training loop's picture.
        Upstream's grid: the originals; reconstructions from the first k posterior latents (the
        rest from the prior at t = 0.1) for `num_variables_visualize` evenly spaced k; prior
        samples at t = 1.0, 0.9, 0.8, 0.7 (the first `num_temperatures_visualize`)."""
        n = originals.shape[0]
        rows = [np.asarray(originals.cpu(), dtype=np.uint8)]
        zs = [s['z'] for s in self.forward_get_latents(x_in)]
        cuts = np.linspace(0, 1, H.num_variables_visualize + 2) * len(zs)
        rows += [self.sample(n, t=0.1, latents=zs[:k]) for k in np.floor(cuts).astype(int)[1:-1]]
        temperatures = SAMPLE_GRID_TEMPERATURES[:H.num_temperatures_visualize]
        rows += [self.sample(n, t=t) for t in temperatures]
        return rows

    def sample_grid_titles(self, H):
        """A title per row of `sample_grid` (e.g. 'sample, t = 0.9'), drawn in the picture's left
        margin (`vdvae.images.label_rows`); None (upstream's grid): the picture is unlabelled,
        byte for byte upstream's layout."""
        return None

    def sample_grid_caption(self, H):
        """The line above a labelled `sample_grid` picture (None: none)."""
        return None

    def after_update(self, stats):
        """Called by the loop after each applied update with its (rank-averaged) float stats;
        e.g. the step of a Lagrange multiplier."""

    def calibrate(self, dataset, preprocess_fn, device, logprint):
        """Called once before training starts (not on resume, not for --test_eval), on every
        rank, before the per-rank seeds; e.g. measuring a rate target."""

    # upstream's names for sampling, as upstream's loop and sample grid call them

    @torch.no_grad()
    def forward_uncond_samples(self, n_batch, t=None):
        return self.sample(n_batch, t=t)

    @torch.no_grad()
    def forward_samples_set_latents(self, n_batch, latents, t=None):
        return self.sample(n_batch, t=t, latents=latents)
