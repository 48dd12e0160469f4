"""Constrained rate-distortion training by a Lagrange multiplier (Shu & Ermon 2022, Appendix A.5).

lambda-optimal (distortion target lambda), equations (10)-(11):
    minimise over the model   (1 - eta) * R + eta * D
    maximise over eta          eta * (D - lambda)
gamma-optimal (rate target gamma) swaps the roles of R and D:
    minimise over the model   (1 - eta) * D + eta * R
    maximise over eta          eta * (R - gamma)

eta lives in [1e-4, 0.9999] (projected after every step) and starts at 0.9999, which weighs the
constrained term almost alone at first (like KL annealing). It is updated by Adam (lr 2e-4, betas
(0, 0.999)) on the gradient of eq. (11), (D - lambda). The eta that weighs the objective is an
exponential moving average (rate 0.99) of Adam's iterate: A.5 uses such an average "to slow down
and smooth out the adjustment"; where exactly it sits is not stated, and averaging the iterate
that enters eq. (10) is the reading that does both.

All multiplier state (iterate, average, Adam moments, step count) is kept in buffers, so it is
saved and restored with the model's state_dict. R and D given to `lagrangian_step` are already
averaged over ranks by the training loop, so every rank takes the same step and keeps the same eta.
"""
import math

import torch
from torch import nn


class LagrangeMultiplier(nn.Module):
    """eta for one constraint `value <= target`, with its own Adam (not the model's optimizer)."""

    def __init__(self, target, init=0.9999, bounds=(1e-4, 0.9999), lr=2e-4, betas=(0.0, 0.999),
                 ema_rate=0.99, eps=1e-8):
        super().__init__()
        if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
            raise ValueError(f'the constraint target must be a positive number, got {target!r}')
        if not bounds[0] <= init <= bounds[1]:
            raise ValueError(f'eta init {init} is outside its bounds {bounds}')
        self.bounds, self.lr, self.betas = bounds, lr, betas
        self.ema_rate, self.eps = ema_rate, eps
        self.register_buffer('target_value', torch.tensor(float(target), dtype=torch.float64))
        self.register_buffer('eta_iterate', torch.tensor(float(init), dtype=torch.float64))
        self.register_buffer('eta', torch.tensor(float(init), dtype=torch.float64))
        self.register_buffer('adam_m', torch.zeros((), dtype=torch.float64))
        self.register_buffer('adam_v', torch.zeros((), dtype=torch.float64))
        self.register_buffer('steps', torch.zeros((), dtype=torch.int64))

    @property
    def target(self):
        return float(self.target_value)

    def set_target(self, target):
        if not (math.isfinite(target) and target > 0):
            raise ValueError(f'the constraint target must be a positive number, got {target!r}')
        self.target_value.fill_(float(target))

    def weight(self):
        """The eta that weighs the objective (a float: no gradient flows into eta)."""
        return float(self.eta)

    @torch.no_grad()
    def lagrangian_step(self, value):
        """One projected Adam ascent step on eta * (value - target); then the moving average."""
        grad = -(float(value) - self.target)            # Adam minimises: descend on -(eq. 11)
        b1, b2 = self.betas
        self.steps += 1
        self.adam_m.mul_(b1).add_((1 - b1) * grad)
        self.adam_v.mul_(b2).add_((1 - b2) * grad * grad)
        m_hat = self.adam_m / (1 - b1 ** int(self.steps))
        v_hat = self.adam_v / (1 - b2 ** int(self.steps))
        self.eta_iterate.sub_(self.lr * m_hat / (v_hat.sqrt() + self.eps))
        self.eta_iterate.clamp_(*self.bounds)
        self.eta.mul_(self.ema_rate).add_((1 - self.ema_rate) * self.eta_iterate)


class LagrangianObjective(nn.Module):
    """Turns (rate, distortion) into the weighted loss of eq. (10) and its named terms.

    target='distortion': lambda-optimal (minimise R subject to D <= lambda).
    target='rate':       gamma-optimal (minimise D subject to R <= gamma)."""

    def __init__(self, target, value, **multiplier_kwargs):
        super().__init__()
        if target not in ('distortion', 'rate'):
            raise ValueError(f"target must be 'distortion' or 'rate', got {target!r}")
        self.target = target
        self.multiplier = LagrangeMultiplier(value, **multiplier_kwargs)

    def forward(self, rate, distortion):
        """rate, distortion: scalars (batch means, per dimension)."""
        eta = self.multiplier.weight()
        constrained, other = (distortion, rate) if self.target == 'distortion' else (rate, distortion)
        loss = (1 - eta) * other + eta * constrained
        return dict(loss=loss, rate=rate, distortion=distortion, eta=torch.tensor(eta),
                    constraint_violation=constrained.detach() - self.multiplier.target)

    def lagrangian_step(self, stats):
        """Ascent on eta from the (rank-averaged) stats of an applied update."""
        self.multiplier.lagrangian_step(stats[self.target])
