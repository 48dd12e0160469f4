"""The Lagrange multiplier of Appendix A.5 on a problem with a closed-form rate-distortion trade-off.

Source x ~ N(0, 1) per dimension, channel z = x + sigma * eps, best decoder E[x | z]:
    D(sigma) = sigma^2 / (1 + sigma^2),   R(sigma) = 0.5 * log(1 + 1 / sigma^2)   (nats/dim)
The "model" is log sigma, trained on the weighted objective of eq. (10) while eta ascends eq. (11).
"""

import math

import pytest
import torch

from progcode_ext.lagrangian import LagrangeMultiplier, LagrangianObjective


def gaussian_rd(log_sigma):
    s2 = torch.exp(2 * log_sigma)
    return 0.5 * torch.log1p(1 / s2), s2 / (1 + s2)        # rate, distortion


def run(target, value, steps=4000, eta_lr=3e-3, init=None, start=1.0):
    objective = LagrangianObjective(target, value, lr=eta_lr, init=init)
    log_sigma = torch.nn.Parameter(torch.tensor(start))
    opt = torch.optim.Adam([log_sigma], lr=1e-2)
    etas = []
    for _ in range(steps):
        rate, distortion = gaussian_rd(log_sigma)
        stats = objective(rate, distortion)
        opt.zero_grad()
        stats['loss'].backward()
        opt.step()
        objective.lagrangian_step({k: v.item() for k, v in stats.items()})
        etas.append(objective.multiplier.weight())
    rate, distortion = gaussian_rd(log_sigma.detach())
    return rate.item(), distortion.item(), etas


@pytest.mark.slow
def test_distortion_target_is_reached_within_5_percent():
    lam = 0.05                                     # optimal rate: 0.5 log(1/lam - ...) finite
    rate, distortion, etas = run('distortion', lam)
    assert abs(distortion - lam) / lam < 0.05, distortion
    assert all(1e-4 <= e <= 0.9999 for e in etas)
    assert etas[0] == pytest.approx(0.9999, abs=1e-6) and etas[-1] < 0.95       # it moved


@pytest.mark.slow
def test_rate_target_is_reached_within_5_percent():
    gamma = 0.5
    rate, distortion, etas = run('rate', gamma)
    assert abs(rate - gamma) / gamma < 0.05, rate
    assert all(1e-4 <= e <= 0.9999 for e in etas)


def test_the_default_start_mimics_kl_annealing_in_both_forms():
    assert LagrangianObjective('distortion', 0.1).multiplier.weight() == pytest.approx(0.9999)
    assert LagrangianObjective('rate', 0.1).multiplier.weight() == pytest.approx(1e-4)
    assert LagrangianObjective('rate', 0.1, init=0.9999).multiplier.weight() == pytest.approx(0.9999)


@pytest.mark.slow
def test_rate_targeted_start_at_the_optimum_kl_annealing_vs_literal_0_9999():
    """Started at the optimum (sigma^2 = 1/9: R = 0.5 log 10 = 1.151, D = 0.1) with A.5's lr 2e-4:
    the KL-annealing start (eta = 1e-4, rate weighed least) stays at gamma; A.5's 0.9999 read
    literally weighs the rate almost alone and drives R far below gamma first."""
    gamma, start = 0.5 * math.log(10), 0.5 * math.log(1 / 9)
    rate, _, _ = run('rate', gamma, steps=2000, eta_lr=2e-4, start=start)
    assert abs(rate / gamma - 1) < 0.01, rate
    rate, _, _ = run('rate', gamma, steps=2000, eta_lr=2e-4, init=0.9999, start=start)
    assert rate / gamma < 0.1, rate


def test_eta_is_projected_onto_its_bounds_and_smoothed():
    m = LagrangeMultiplier(0.1, lr=0.5)
    for _ in range(50):
        m.lagrangian_step(1.0)                     # constraint violated: eta pushed up
    assert float(m.eta_iterate) == pytest.approx(0.9999)
    for _ in range(200):
        m.lagrangian_step(0.0)                     # satisfied: eta pushed down to the floor
    assert float(m.eta_iterate) == pytest.approx(1e-4)
    assert 1e-4 <= m.weight() <= 0.9999
    m2 = LagrangeMultiplier(0.1, lr=0.5)
    m2.lagrangian_step(0.0)
    # the average moves by (1 - 0.99) of the iterate's move
    assert m2.weight() == pytest.approx(0.99 * 0.9999 + 0.01 * float(m2.eta_iterate))


def test_state_round_trips_through_state_dict():
    a = LagrangeMultiplier(0.2, lr=0.05)
    for v in (0.5, 0.1, 0.3):
        a.lagrangian_step(v)
    b = LagrangeMultiplier(0.7)
    b.load_state_dict(a.state_dict())
    a.lagrangian_step(0.25)
    b.lagrangian_step(0.25)
    assert float(a.eta) == float(b.eta) and b.target == pytest.approx(0.2)


def test_lr_decay_shrinks_the_step_as_one_over_sqrt_t():
    m = LagrangeMultiplier(0.1, lr=0.04, lr_decay=100)
    assert m.step_size() == pytest.approx(0.04)
    for _ in range(300):
        m.lagrangian_step(1.0)
    assert m.step_size() == pytest.approx(0.04 / 2)            # 1 + 300 / 100 = 4
    assert LagrangeMultiplier(0.1, lr=0.04).step_size() == 0.04  # A.5: constant
    # the steps Adam takes are that size: a constant-sign gradient moves the iterate by it
    m = LagrangeMultiplier(0.1, init=0.5, lr=0.01, lr_decay=1, ema_rate=0.0)
    m.lagrangian_step(0.0)                          # D < lambda: eta goes down by lr / sqrt(2)
    assert float(m.eta_iterate) == pytest.approx(0.5 - 0.01 / 2 ** 0.5, rel=1e-6)
    for bad in (0, -5, float('nan')):
        with pytest.raises(ValueError, match='lr decay must be a positive number'):
            LagrangeMultiplier(0.1, lr_decay=bad)


@pytest.mark.parametrize('bad', [0.0, -1.0, float('nan'), float('inf')])
def test_nonsense_targets_are_refused(bad):
    with pytest.raises(ValueError, match='positive number'):
        LagrangeMultiplier(bad)


def test_objective_terms():
    obj = LagrangianObjective('distortion', 0.1)
    stats = obj(torch.tensor(2.0), torch.tensor(0.3))
    eta = 0.9999
    assert stats['loss'].item() == pytest.approx((1 - eta) * 2.0 + eta * 0.3, rel=1e-6)
    assert stats['constraint_violation'].item() == pytest.approx(0.2)
    obj = LagrangianObjective('rate', 1.5)                   # starts at eta = 1e-4
    stats = obj(torch.tensor(2.0), torch.tensor(0.3))
    assert stats['loss'].item() == pytest.approx((1 - 1e-4) * 0.3 + 1e-4 * 2.0, rel=1e-6)
    assert stats['constraint_violation'].item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="'distortion' or 'rate'"):
        LagrangianObjective('mse', 0.1)
