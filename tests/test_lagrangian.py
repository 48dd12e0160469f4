"""The Lagrange multiplier of Appendix A.5 on a problem with a closed-form rate-distortion trade-off.

Source x ~ N(0, 1) per dimension, channel z = x + sigma * eps, best decoder E[x | z]:
    D(sigma) = sigma^2 / (1 + sigma^2),   R(sigma) = 0.5 * log(1 + 1 / sigma^2)   (nats/dim)
The "model" is log sigma, trained on the weighted objective of eq. (10) while eta ascends eq. (11).
"""

import pytest
import torch

from progcode_ext.lagrangian import LagrangeMultiplier, LagrangianObjective


def gaussian_rd(log_sigma):
    s2 = torch.exp(2 * log_sigma)
    return 0.5 * torch.log1p(1 / s2), s2 / (1 + s2)        # rate, distortion


def run(target, value, steps=4000, eta_lr=3e-3):
    objective = LagrangianObjective(target, value, lr=eta_lr)
    log_sigma = torch.nn.Parameter(torch.tensor(1.0))
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


def test_distortion_target_is_reached_within_5_percent():
    lam = 0.05                                     # optimal rate: 0.5 log(1/lam - ...) finite
    rate, distortion, etas = run('distortion', lam)
    assert abs(distortion - lam) / lam < 0.05, distortion
    assert all(1e-4 <= e <= 0.9999 for e in etas)
    assert etas[0] == pytest.approx(0.9999, abs=1e-6) and etas[-1] < 0.95       # it moved


def test_rate_target_is_reached_within_5_percent():
    gamma = 0.5
    rate, distortion, etas = run('rate', gamma)
    assert abs(rate - gamma) / gamma < 0.05, rate
    assert all(1e-4 <= e <= 0.9999 for e in etas)


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
    obj = LagrangianObjective('rate', 1.5)
    stats = obj(torch.tensor(2.0), torch.tensor(0.3))
    assert stats['loss'].item() == pytest.approx((1 - eta) * 0.3 + eta * 2.0, rel=1e-6)
    assert stats['constraint_violation'].item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="'distortion' or 'rate'"):
        LagrangianObjective('mse', 0.1)
