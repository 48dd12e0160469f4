"""progcode's networks with upstream VDVAE's model contract, so that upstream's own loop trains,
evaluates, visualises and checkpoints them.

Upstream's loop backpropagates `stats['elbo']`, checks `stats['distortion']` and `stats['rate']`
for NaN, averages every value of the stats dict over ranks (so each must be a scalar tensor), and
draws its sample grid with `forward_get_latents`, `forward_samples_set_latents` and
`forward_uncond_samples`. Our models return `loss` where their objective is not the negative ELBO.
So, under upstream's loop:
* `elbo` carries the gradient of the model's objective. Its value is the model's negative ELBO
  where it has one (two_stage, and multi_stage up to its likelihood stage: the joint -ELBO, in
  nats/dim), else the objective itself (stage1, a mean-head stage of multi_stage and the masked
  models: the Lagrangian (1 - eta) R + eta D, with `rate`, `distortion` (MSE) and `eta` beside it
  in the log).
* the Lagrange multiplier steps after each applied update (`after_update`; upstream's loop calls
  `update_ema` then, see plugin.py), from the rank-averaged rate and distortion of that step.
The network's state_dict is unchanged (no wrapper module), so checkpoints written by upstream's
loop load in progcode's tools and the other way round.
"""
import torch

from vdvae.contract import training_loss
from vdvae.distributed import all_reduce_mean
from vdvae.models import build_model


class UpstreamInterface:
    """Mixed in front of a progcode model class (see `with_upstream_interface`): upstream's loop
    reads the objective as `elbo` and only scalar stats. The sampling methods it calls
    (`forward_get_latents`, `forward_samples_set_latents`, `forward_uncond_samples`) are the
    model contract's own (vdvae/contract.py)."""

    def forward(self, x, x_target):
        stats = super().forward(x, x_target)
        objective = training_loss(stats)
        stats.pop('loss', None)
        stats['elbo'] = (objective if 'elbo' not in stats else
                         stats['elbo'].detach() + (objective - objective.detach()))
        if self.training and torch.is_grad_enabled():
            self.last_terms = {k: stats[k].detach() for k in ('rate', 'distortion')}
        return {k: v for k, v in stats.items() if torch.is_tensor(v) and v.dim() == 0}

    def rank_averaged_terms(self):
        terms = {k: float(v) for k, v in self.last_terms.items()}
        return all_reduce_mean(terms, next(iter(self.last_terms.values())).device)


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
        return with_upstream_interface(build_model(H))
    VAE.upstream_vae = upstream_vae
    return VAE
