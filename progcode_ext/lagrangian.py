"""Constrained rate-distortion training by a Lagrange multiplier (Shu & Ermon 2022, Appendix A.5).

lambda-optimal (distortion target lambda), equations (10)-(11):
    minimise over the model   (1 - eta) * R + eta * D
    maximise over eta          eta * (D - lambda)
gamma-optimal (rate target gamma) swaps the roles of R and D:
    minimise over the model   (1 - eta) * D + eta * R
    maximise over eta          eta * (R - gamma)

eta lives in [1e-4, 0.9999] (projected after every step). A.5 starts it "at eta = 0.9999 to mimic
KL annealing", i.e. with the rate weighed almost not at all at first. In the distortion-targeted
form eta weighs D, so that start is eta = 0.9999; in the rate-targeted form eta weighs R, and the
same start is eta = 1e-4 (`kl_annealing_init`, the default). Starting the rate-targeted form at
0.9999 as well (A.5's number read literally; `init=0.9999`, `--eta_init 0.9999`) weighs the rate
almost alone first: the rate collapses far below gamma and comes back only slowly. On the scalar
Gaussian problem of tests/test_lagrangian.py started at its optimum (gamma = 1.151 nats), with A.5's
lr 2e-4: from 1e-4, R is within 0.2% of gamma by step 2,000; from 0.9999, R is 1.5% of gamma at
steps 1,000 and 2,000 and reaches gamma only by step 7,000 (docs/method.md).

eta is updated by Adam (lr 2e-4, betas (0, 0.999)) on the gradient of eq. (11), (D - lambda). The
eta that weighs the objective is an exponential moving average (rate 0.99) of Adam's iterate: A.5
uses such an average "to slow down and smooth out the adjustment"; where exactly it sits is not
stated, and averaging the iterate that enters eq. (10) is the reading that does both.

All multiplier state (iterate, average, Adam moments, step count) is kept in buffers, so it is
saved and restored with the model's state_dict. R and D given to `lagrangian_step` are already
averaged over ranks by the training loop, so every rank takes the same step and keeps the same eta.
"""
import math

import torch
from torch import nn

from vdvae.errors import ConfigError


def kl_annealing_init(target, bounds=(1e-4, 0.9999)):
    """The eta that weighs the rate least at the start: the upper bound when eta weighs the
    distortion (target 'distortion'), the lower bound when it weighs the rate (target 'rate')."""
    return bounds[1] if target == 'distortion' else bounds[0]


class LagrangeMultiplier(nn.Module):
    """eta for one constraint `value <= target`, with its own Adam (not the model's optimizer)."""

    def __init__(self, target, init=0.9999, bounds=(1e-4, 0.9999), lr=2e-4, betas=(0.0, 0.999),
                 ema_rate=0.99, eps=1e-8, lr_decay=None):
        super().__init__()
        if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
            raise ConfigError(f'the constraint target must be a positive number, got {target!r}')
        if not bounds[0] <= init <= bounds[1]:
            raise ConfigError(f'eta init {init} is outside its bounds {bounds}')
        if lr_decay is not None and not lr_decay > 0:
            raise ConfigError(f'the multiplier\'s lr decay must be a positive number of steps (or '
                              f'None: a constant lr), got {lr_decay!r}')
        self.bounds, self.lr, self.betas, self.lr_decay = bounds, lr, betas, lr_decay
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
            raise ConfigError(f'the constraint target must be a positive number, got {target!r}')
        self.target_value.fill_(float(target))

    def weight(self):
        """The eta that weighs the objective (a float: no gradient flows into eta)."""
        return float(self.eta)

    def step_size(self):
        """Adam's lr at this step: constant (A.5), or with `lr_decay` = T, lr / sqrt(1 + t / T)."""
        if self.lr_decay is None:
            return self.lr
        return self.lr / math.sqrt(1 + int(self.steps) / self.lr_decay)

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
        self.eta_iterate.sub_(self.step_size() * m_hat / (v_hat.sqrt() + self.eps))
        self.eta_iterate.clamp_(*self.bounds)
        self.eta.mul_(self.ema_rate).add_((1 - self.ema_rate) * self.eta_iterate)


class LagrangianObjective(nn.Module):
    """Turns (rate, distortion) into the weighted loss of eq. (10) and its named terms.

    target='distortion': lambda-optimal (minimise R subject to D <= lambda).
    target='rate':       gamma-optimal (minimise D subject to R <= gamma).
    init=None (default) starts eta where the rate weighs least (`kl_annealing_init`)."""

    def __init__(self, target, value, init=None, **multiplier_kwargs):
        super().__init__()
        if target not in ('distortion', 'rate'):
            raise ConfigError(f"target must be 'distortion' or 'rate', got {target!r}")
        self.target = target
        init = kl_annealing_init(target) if init is None else init
        self.multiplier = LagrangeMultiplier(value, init=init, **multiplier_kwargs)

    def forward(self, rate, distortion):
        """rate, distortion: scalars (batch means, per dimension)."""
        # eta and the target as tensors (float64, cast as a Python float would be), not floats:
        # an ensemble's members (vdvae/ensemble.py) each hold their own
        eta = self.multiplier.eta
        constrained, other = (distortion, rate) if self.target == 'distortion' else (rate, distortion)
        loss = (1 - eta).to(other.dtype) * other + eta.to(constrained.dtype) * constrained
        target = self.multiplier.target_value.to(constrained.dtype)
        return dict(loss=loss, rate=rate, distortion=distortion, eta=eta.float(),
                    constraint_violation=constrained.detach() - target)

    def lagrangian_step(self, stats):
        """Ascent on eta from the (rank-averaged) stats of an applied update."""
        self.multiplier.lagrangian_step(stats[self.target])
