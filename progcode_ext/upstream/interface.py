"""progcode's networks with upstream VDVAE's model contract, so that upstream's own loop trains,
evaluates, visualises and checkpoints them.

Upstream's loop backpropagates `stats['elbo']`, checks `stats['distortion']` and `stats['rate']`
for NaN, averages every value of the stats dict over ranks (so each must be a scalar tensor), and
draws its sample grid with `forward_get_latents`, `forward_samples_set_latents` and
`forward_uncond_samples`. Our models return `loss` where their objective is not the negative ELBO.
So, under upstream's loop:
* `elbo` carries the gradient of the model's objective. Its value is the model's negative ELBO
  where it has one (two_stage: the joint -ELBO, in nats/dim), else the objective itself (stage1 and
  the masked models: the Lagrangian (1 - eta) R + eta D, with `rate`, `distortion` (MSE) and `eta`
  beside it in the log).
* the Lagrange multiplier steps after each applied update (`after_update`; upstream's loop calls
  `update_ema` then, see plugin.py), from the rank-averaged rate and distortion of that step.
The network's state_dict is unchanged (no wrapper module), so checkpoints written by upstream's
loop load in progcode's tools and the other way round.
"""
import numpy as np
import torch

from vdvae.distributed import all_reduce_mean
from vdvae.models import build_model

from ..masked import ProbeVAE, posterior_rate_k


class UpstreamInterface:
    """Mixed in front of a progcode model class (see `with_upstream_interface`)."""

    def forward(self, x, x_target):
        stats = super().forward(x, x_target)
        objective = stats.pop('loss', None)
        if objective is not None:
            stats['elbo'] = (objective if 'elbo' not in stats else
                             stats['elbo'].detach() + (objective - objective.detach()))
        if self.training and torch.is_grad_enabled():
            self.last_terms = {k: stats[k].detach() for k in ('rate', 'distortion')}
        return {k: v for k, v in stats.items() if torch.is_tensor(v) and v.dim() == 0}

    def rank_averaged_terms(self):
        terms = {k: float(v) for k, v in self.last_terms.items()}
        return all_reduce_mean(terms, next(iter(self.last_terms.values())).device)

    # The sample grid. Its "first k latents fixed" rows fix the first k latents the model's
    # posterior exposes: stage 1's z_1..z_K for the two-stage HVAE (then x_hat, then stage 2),
    # z_1..z_K of the frozen posterior for the D_K probe. The two-stage rows go through
    # `TwoStageHVAE.sample`, so stage 2 gets x_hat unclamped, as in training.

    def forward_get_latents(self, x):
        if hasattr(self, 'stage1'):
            return self.stage1.forward_get_latents(x)
        if isinstance(self, ProbeVAE):
            zs, _ = posterior_rate_k(self.encoder, self.trained_decoder, self.k, x)
            return [{'z': z} for z in zs]
        return super().forward_get_latents(x)

    @torch.no_grad()
    def forward_samples_set_latents(self, n_batch, latents, t=None):
        if hasattr(self, 'stage1'):
            return np.asarray(self.sample(n_batch, t1=t, t2=t, latents=latents)[1])
        return self.decoder.out_net.sample(self.decoder.forward_manual_latents(n_batch, latents, t))

    @torch.no_grad()
    def forward_uncond_samples(self, n_batch, t=None):
        if hasattr(self, 'stage1'):
            return np.asarray(self.sample(n_batch, t1=t, t2=t)[1])
        return self.decoder.out_net.sample(self.decoder.forward_uncond(n_batch, t=t))


_CLASSES = {}


def with_upstream_interface(model):
    """`model`, its class now `UpstreamInterface` + its own class (same parameters and state)."""
    cls = type(model)
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f'Upstream{cls.__name__}', (UpstreamInterface, cls), {})
    model.__class__ = _CLASSES[cls]
    return model


def vae_factory(upstream_vae):
    """What upstream's `VAE(H)` becomes: `--model vdvae` (the default) is the checkout's own VAE,
    any other name a progcode network with upstream's contract."""
    def VAE(H):
        name = H.get('model') or 'vdvae'
        if name == 'vdvae':
            return upstream_vae(H)
        if name == 'masked' and H.get('mode') == 'gamma_optimal' and not H.get('rate_target'):
            raise ValueError('gamma-optimal training under upstream\'s loop needs --rate_target '
                             '(gamma, nats/dim): upstream\'s loop has no step that measures the '
                             'trained R_K. Take R_K from `python -m progcode_ext.experiments.'
                             'profile --checkpoint ...`, or train with progcode\'s train.py')
        return with_upstream_interface(build_model(H))
    VAE.upstream_vae = upstream_vae
    return VAE
