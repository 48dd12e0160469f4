"""The statistical rule every claim of the experiments is judged by, and its stated error rate.

A claim compares two kinds of model (e.g. progressive and conventional) on one metric. Its
evidence is the paired difference per seed, signed so that a positive difference is the claimed
direction (`d_s = metric(worse-claimed) - metric(better-claimed)` for a metric where lower is
better). Every rule is two-sided at ALPHA = 0.05: when there is no true difference, a verdict in
either direction ("held" or "reversed") comes at most 5% of the time (2.5% each way); the tests
simulate each rule under no difference and check it (tests/test_verdicts.py).

* 3 seeds or more: a two-sided paired t-test of the differences (`scipy.stats.ttest_1samp`,
  n - 1 degrees of freedom).
* 1 or 2 seeds: one seed's difference varies by the spread between trainings and by the noise of
  the metric. The spread is not measured by the run itself: it is the seed-to-seed standard
  deviation of the same paired difference measured by a protocol with 3 seeds or more (`Spread`,
  kept in `seed_spread.json` with where it came from), which already holds that protocol's metric
  noise; this run's metric noise (`Noise`: the same models scored twice, independently) is added.
  The mean difference is compared with t(nu) standard errors, nu the smaller of the two
  estimates' degrees of freedom. Without a measured spread a 1-seed verdict cannot be given.
* A measured noise pooled from P pairs of scores has P degrees of freedom; every critical value
  is the t distribution's for the degrees of freedom actually used (`critical_value`).

Settled: a verdict in either direction must also rest on a difference that has stopped moving
toward zero. The paired difference is measured at several checkpoints of the last part of
training (`Trajectory`: 6/10, 8/10 and the end of the runs in the experiments); its least-squares slope, with the larger of the known measurement noise
and the scatter about the line as its error, is extrapolated over one more fifth of the run. If
the one-sided 95% upper bound of that extrapolated move toward zero reaches half the difference,
or the fitted difference had the other sign at the window's start, the verdict is **cannot tell
(still moving)**. A difference that grows away from zero only strengthens its verdict. This can
only withhold a verdict, never create one, so it keeps the error rate above.

Verdicts come only from models that met their constraints: a failed convergence check makes a
claim **inconclusive**, and a claim its experiment cannot test reads **not testable here: REASON**.
"""
import json
import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

ALPHA = 0.05               # two-sided: a false verdict in either direction at most this often
SETTLED_FRACTION = 0.5     # the move toward zero over one more fifth must stay below half of it
SETTLED_CONFIDENCE = 0.95  # ... by the one-sided upper bound at this confidence
HELD, REVERSED, NO_DIFFERENCE = 'held', 'reversed', 'no detectable difference'
STILL_MOVING = 'cannot tell (still moving)'
# The rule in a report's words
RULE = ('Verdicts (progcode_ext/experiments/verdicts.py), each two-sided at a 5% false-positive '
        'rate under no true difference (simulated in the tests): with 3 seeds or more a paired '
        't-test; with one seed the difference against the seed-to-seed spread of that difference '
        "measured by 3 seeds of the same protocol (seed_spread.json) plus this run's metric noise "
        '(each model scored twice), in t units for their degrees of freedom (**held**: the '
        'claimed direction, **reversed**: the opposite one, significantly, else **no detectable '
        'difference**); either way the paired difference, measured at 6/10, 8/10 and the end of '
        'the runs, must not be heading toward zero fast enough to lose half itself in one more fifth '
        '(95% upper bound of the fitted slope), else **cannot tell (still moving)**.')


@dataclass(frozen=True)
class Noise:
    """The standard deviation of one score (as the claim uses it), with its degrees of freedom."""
    sd: float
    df: int


@dataclass(frozen=True)
class Spread:
    """The seed-to-seed standard deviation of a paired difference (one seed's difference), measured
    by a protocol with `df` + 1 seeds; `source` says which run of which commit."""
    sd: float
    df: int
    source: str


@dataclass
class Trajectory:
    """The mean paired difference at checkpoints `steps` of runs of `total_steps` steps (the last
    at the end); `point_sd`: the measurement noise of one of those values."""
    steps: list
    values: list
    point_sd: float
    total_steps: int


@dataclass
class Verdict:
    """The verdict of one claim and the numbers behind it."""
    verdict: str
    n_seeds: int
    mean_difference: float
    standard_error: float = float('nan')
    p_value: float = float('nan')
    threshold: float = float('nan')
    detail: str = ''
    differences: list = field(default_factory=list)

    def as_dict(self):
        return asdict(self)

    @property
    def decided(self):
        return self.verdict.startswith((HELD, REVERSED))


def critical_value(df):
    """The two-sided critical value of the t distribution with `df` degrees of freedom."""
    return float(stats.t.ppf(1 - ALPHA / 2, df))


def pooled_noise_sd(pairs):
    """`Noise` of one score from pairs of independent scores of the same models:
    sd = sqrt(mean((a - b)^2) / 2), one degree of freedom per pair. None without pairs."""
    pairs = [(float(a), float(b)) for a, b in pairs]
    if not pairs:
        return None
    return Noise(math.sqrt(sum((a - b) ** 2 for a, b in pairs) / (2 * len(pairs))), len(pairs))


def mean_noise(noise, k=2):
    """The `Noise` of a score that is the mean of k independent draws of `noise`."""
    return Noise(noise.sd / math.sqrt(k), noise.df)


def one_seed_error(noise, spread, n):
    """(standard error of the mean of n one-seed differences, its degrees of freedom): the spread
    between trainings plus the noise of the two scores of a difference, with the smaller of the
    two estimates' degrees of freedom. (Welch-Satterthwaite's df, computed from the estimates
    themselves, grows exactly when the spread's estimate comes out small: its false-positive
    rate reached 6.5% in the tests' simulation.)"""
    variance = spread.sd ** 2 + 2 * noise.sd ** 2
    return math.sqrt(variance / n), min(spread.df, noise.df)


def paired_verdict(differences, noise=None, spread=None):
    """The rule above, before the settledness and convergence conditions."""
    d = np.asarray([float(x) for x in differences])
    n = len(d)
    if n == 0:
        raise ValueError('a claim needs at least one paired difference')
    mean = float(d.mean())
    seeds = f'{n} seed{"s" * (n > 1)}'
    if n >= 3:
        se = float(d.std(ddof=1) / math.sqrt(n))
        if se == 0:
            return Verdict(HELD if mean > 0 else REVERSED if mean < 0 else NO_DIFFERENCE, n, mean,
                           se, 0.0 if mean else 1.0, differences=d.tolist(),
                           detail=f'all {n} differences equal ({mean:.4g})')
        p = float(stats.ttest_1samp(d, 0.0).pvalue)
        return Verdict(_direction(mean, p < ALPHA), n, mean, se, p, differences=d.tolist(),
                       threshold=critical_value(n - 1) * se,
                       detail=f'paired difference {mean:.4g} ± {se:.2g} (SE, {seeds}), two-sided '
                              f't-test p = {p:.3g}')
    if noise is None:
        raise ValueError("with fewer than 3 seeds the metric's measurement noise is needed")
    if spread is None:
        return Verdict(f'no verdict on {seeds}: no measured seed-to-seed spread', n, mean,
                       differences=d.tolist(),
                       detail=f'difference {mean:.4g}; the spread between trainings of this '
                              'comparison was never measured with 3 seeds (seed_spread.json)')
    se, df = one_seed_error(noise, spread, n)
    threshold = critical_value(df) * se
    p = float(2 * stats.t.sf(abs(mean) / se, df)) if se > 0 else 0.0
    verdict = _direction(mean, abs(mean) > threshold)
    return Verdict(verdict + f' on {seeds}' * (verdict != NO_DIFFERENCE)
                   + f' ({seeds})' * (verdict == NO_DIFFERENCE), n, mean, se, p,
                   threshold=threshold, differences=d.tolist(),
                   detail=f'difference {mean:.4g} against ±{threshold:.2g} = t({df:.1f}) x '
                          f'{se:.2g}: seed-to-seed spread {spread.sd:.2g} ({spread.source}) and '
                          f"one score's noise {noise.sd:.2g}; p = {p:.3g}")


def _direction(mean, significant):
    if not significant or mean == 0:
        return NO_DIFFERENCE
    return HELD if mean > 0 else REVERSED


def settled(trajectory, difference):
    """(settled?, why) of a paired difference by the rule above."""
    steps = np.asarray(trajectory.steps, float)
    values = np.asarray(trajectory.values, float)
    if len(steps) < 3:          # (a run too short, or trained before checkpoints at every tenth)
        return False, (f'the difference was measured at {len(steps)} checkpoint'
                       f'{"s" * (len(steps) != 1)}; judging whether it settled needs 3')
    slope, intercept = np.polyfit(steps, values, 1)
    residual = values - (slope * steps + intercept)
    scatter = math.sqrt(float(residual @ residual) / (len(steps) - 2)) if len(steps) > 2 else 0.0
    sd = max(trajectory.point_sd, scatter)
    se_slope = sd / math.sqrt(float(((steps - steps.mean()) ** 2).sum()))
    fifth = trajectory.total_steps / 5
    toward = -math.copysign(1.0, difference) * slope * fifth      # > 0: toward zero
    upper = toward + stats.norm.ppf(SETTLED_CONFIDENCE) * se_slope * fifth
    start = slope * steps[0] + intercept
    where = (f'over {len(steps)} checkpoints from {steps[0] / steps[-1]:.0%} of the runs to '
             f'their end the difference moves {toward:+.3g} toward zero per fifth of the runs '
             f'(95% bound {upper:+.3g}; half the difference: {abs(difference) / 2:.3g})')
    if start * difference <= 0:
        return False, where + '; it had the other sign at the window\'s start'
    return upper < SETTLED_FRACTION * abs(difference), where


def claim_verdict(differences, noise=None, trajectory=None, failed_checks=(), untestable=None,
                  spread=None):
    """The whole rule: inconclusive, not testable, cannot tell, or the paired verdict.
    `trajectory`: the difference at the checkpoints of the last part (None: not measured)."""
    if failed_checks:           # (then the precondition's own numbers are unsettled too)
        return Verdict('inconclusive', len(differences), float(np.mean(differences)),
                       detail='; '.join(failed_checks))
    if untestable:
        return Verdict(f'not testable here: {untestable}', len(differences),
                       float(np.mean(differences)), detail=untestable)
    v = paired_verdict(differences, noise, spread)
    if trajectory is not None:
        ok, why = settled(trajectory, v.mean_difference)
        v.detail += f'; {why}'
        if v.decided and not ok:
            v.verdict = STILL_MOVING
    return v


def stated(v, claimed, opposite):
    """The verdict in words that say which way the difference went, e.g. 'reversed: progressive
    has the better -ELBO (p = 0.01)'."""
    p = f' (p = {v.p_value:.2g})' if math.isfinite(v.p_value) else ''
    if v.verdict.startswith(HELD):
        return f'{v.verdict}: {claimed}{p}'
    if v.verdict.startswith(REVERSED):
        return f'{v.verdict}: {opposite}{p}'
    if v.verdict.startswith(NO_DIFFERENCE) or v.verdict == STILL_MOVING:
        lead = claimed if v.mean_difference > 0 else opposite
        return f'{v.verdict} (the difference leans: {lead}{p})'
    return v.verdict


SPREADS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'seed_spread.json')


def measured_spread(preset, steps, comparison, fallback=None):
    """The `Spread` kept in seed_spread.json for `comparison` (e.g. 'table2/headline/elbo') of runs
    of `steps` steps on `preset`, else for `fallback`; None where none was measured."""
    with open(SPREADS) as f:
        table = json.load(f).get(preset, {}).get(f'steps {steps}', {})
    entry = table.get(comparison) or (table.get(fallback) if fallback else None)
    return Spread(float(entry['sd']), int(entry['df']), entry['source']) if entry else None


def spread_of(v):
    """{'sd', 'df'} of the per-seed differences behind a verdict of 3 seeds or more, else None."""
    if len(v.differences) < 3:
        return None
    return dict(sd=float(np.std(v.differences, ddof=1)), df=len(v.differences) - 1)


def record_spreads(preset, steps, spreads, source, path=SPREADS):
    """Keep measured spreads ({comparison: {'sd', 'df'}}) in seed_spread.json under `preset` and
    'steps N', each with `source`; the other entries stay."""
    with open(path) as f:
        table = json.load(f)
    entries = table.setdefault(preset, {}).setdefault(f'steps {steps}', {})
    entries.update({k: dict(v, source=source) for k, v in spreads.items()})
    with open(path, 'w') as f:
        json.dump(table, f, indent=1, ensure_ascii=False)
        f.write('\n')
