"""The stages a chain (multi_stage.py) is made of: three kinds behind one interface, `Stage`.

    stage 1       Stage1VAE (stage1.py): VDVAE with a mean head, lambda_1-optimal (A.3, A.5)
    stage 1<k<N   MeanHeadStage (here): the conditional VDVAE of stage 2 with a mean head and its
                  own multiplier for lambda_k
    stage N       ConditionalVAE (stage2.py): the conditional U-Net VDVAE of A.4, the mixture of
                  logistics over x

The chain calls only `posterior` and `decode`, each given the x_hat of the stage before (stage 1
ignores it), and reads `decoder.out_net` for the picture or likelihood; it never asks which kind a
stage is.
"""
from typing import Protocol, runtime_checkable

from .lagrangian import LagrangianObjective
from .mean_head import MeanHead
from .stage1 import Stage1VAE, multiplier_kwargs
from .stage2 import ConditionalVAE

__all__ = ['Stage', 'Stage1VAE', 'MeanHeadStage', 'ConditionalVAE', 'stage_kind']


@runtime_checkable
class Stage(Protocol):
    """What a chain needs of a stage. `posterior` -> (px_z, per-block [{'kl', 'z'}]) of one
    posterior pass over x given x_prev; `decode` -> px_z of n draws given x_prev, the first
    len(latents) latents fixed and the rest from the prior at temperature t. px_z goes to
    `decoder.out_net` (a MeanHead's x_hat, or the mixture's likelihood and samples)."""

    def posterior(self, x, x_prev, get_latents=False): ...

    def decode(self, n, x_prev, t=None, latents=()): ...


class MeanHeadStage(ConditionalVAE):
    """A middle stage: the conditional VDVAE of stage 2 with a mean head instead of the mixture,
    and its own Lagrange multiplier for its target lambda_k (`H.distortion_target`)."""

    def __init__(self, H):
        super().__init__(H)
        self.decoder.out_net = MeanHead(H)
        self.objective = LagrangianObjective('distortion', H.distortion_target,
                                             **multiplier_kwargs(H))


def stage_kind(k, n_stages):
    """The class of stage k (1-based) of an n_stages chain."""
    if k == 1:
        return Stage1VAE
    return MeanHeadStage if k < n_stages else ConditionalVAE
