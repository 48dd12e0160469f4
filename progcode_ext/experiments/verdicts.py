"""The statistical rule every claim of the experiments is judged by.

A claim compares two kinds of model (e.g. progressive and conventional) on one metric. Its
evidence is the paired difference per seed, signed so that a positive difference is the claimed
direction (`d_s = metric(worse-claimed) - metric(better-claimed)` for a metric where lower is
better).

* 3 seeds or more: a one-sided paired t-test of the differences (scipy.stats.ttest_1samp) at
  ALPHA = 0.05. **held** when the claimed direction is significant, **did not hold** when the
  opposite direction is, else **no detectable difference**.
* 1 or 2 seeds: the spread between seeds is unknown, so the measurement noise of the metric
  stands in for it (the same models scored twice, independently: `noise_sd`, the standard
  deviation of one model's score). The claim **held on N seeds** when every seed's difference
  exceeds 2 standard deviations of a difference of two scores in the claimed direction, **did
  not hold on N seeds** when every one does in the opposite direction, else **no detectable
  difference (N seeds)**. Training noise is then not measured, and the verdict says on how
  many seeds it rests.

A verdict of either direction must also rest on a difference that has settled relative to
itself: measured again at 4/5 of the runs (`earlier`), the difference must have had the same
sign then, and must not have come toward zero by half of itself or more over the last fifth, else
the verdict is **cannot tell (still moving)**. A difference that grew away from zero only strengthens the verdict it
supports. The claims compare two trainings at an equal budget (as the paper's A.4 does), so what
could overturn a verdict with more training is a change of the difference, and that is what is
measured; how much each model itself still moved is reported beside it. Verdicts come only from
models that met their constraints: a failed convergence check (a lambda- or gamma-optimal model
off its target) makes a claim **inconclusive**, and a claim whose experiment cannot test it
(`untestable`, with the reason) reads **not testable here: REASON**.
"""
import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

ALPHA = 0.05
NOISE_SDS = 2.0            # 1-2 seeds: a difference must exceed 2 sd of a difference of scores
SETTLED_FRACTION = 0.5     # over the last fifth the difference shrinks by less than half itself
# The rule in a report's words (demo.py and table2.py say it alike)
RULE = ('Verdicts (progcode_ext/experiments/verdicts.py): with 3 seeds or more a one-sided paired '
        f't-test at {ALPHA} (**held**, **did not hold**, else **no detectable difference**); with '
        'one seed the difference must clear twice the standard deviation of a difference of two '
        'scores, measured by scoring the same models twice (**held on 1 seed**, ...); either way '
        'the difference must not have shrunk toward zero by half itself or more over the last '
        'fifth of the runs, else **cannot tell (still moving)**.')


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
        return self.verdict.startswith(('held', 'did not hold'))


def pooled_noise_sd(pairs):
    """The standard deviation of one score, from pairs of independent scores of the same models:
    sqrt(mean((a - b)^2) / 2). None without pairs."""
    pairs = [(float(a), float(b)) for a, b in pairs]
    if not pairs:
        return None
    return math.sqrt(sum((a - b) ** 2 for a, b in pairs) / (2 * len(pairs)))


def paired_verdict(differences, noise_sd=None):
    """The rule above, before the settledness and convergence conditions."""
    d = np.asarray([float(x) for x in differences])
    n = len(d)
    if n == 0:
        raise ValueError('a claim needs at least one paired difference')
    mean = float(d.mean())
    if n >= 3:
        se = float(d.std(ddof=1) / math.sqrt(n))
        if se == 0:
            verdict = 'held' if mean > 0 else 'did not hold' if mean < 0 else \
                'no detectable difference'
            return Verdict(verdict, n, mean, se, 0.0 if mean else 1.0, differences=d.tolist(),
                           detail=f'all {n} differences equal ({mean:.4g})')
        p_greater = float(stats.ttest_1samp(d, 0.0, alternative='greater').pvalue)
        p_less = float(stats.ttest_1samp(d, 0.0, alternative='less').pvalue)
        if p_greater < ALPHA:
            verdict, p = 'held', p_greater
        elif p_less < ALPHA:
            verdict, p = 'did not hold', p_less
        else:
            verdict, p = 'no detectable difference', min(p_greater, p_less)
        return Verdict(verdict, n, mean, se, p, differences=d.tolist(),
                       detail=f'paired difference {mean:.4g} ± {se:.2g} (SE, {n} seeds), '
                              f'one-sided t-test p = {p:.3g}')
    if noise_sd is None:
        raise ValueError('with fewer than 3 seeds the metric\'s measurement noise is needed')
    threshold = NOISE_SDS * math.sqrt(2) * noise_sd
    seeds = f'{n} seed{"s" * (n > 1)}'
    if all(x > threshold for x in d):
        verdict = f'held on {seeds}'
    elif all(x < -threshold for x in d):
        verdict = f'did not hold on {seeds}'
    else:
        verdict = f'no detectable difference ({seeds})'
    return Verdict(verdict, n, mean, threshold=threshold, differences=d.tolist(),
                   detail=f'difference {mean:.4g} against the noise threshold ±{threshold:.2g} '
                          f'(2 sd of a difference; one score\'s sd {noise_sd:.2g})')


def claim_verdict(differences, noise_sd=None, earlier=None, failed_checks=(), untestable=None):
    """The whole rule: inconclusive, not testable, cannot tell, or the paired verdict.
    `earlier`: the same paired differences at 4/5 of the runs (None: not measured, no check)."""
    if failed_checks:           # (then the precondition's own numbers are unsettled too)
        return Verdict('inconclusive', len(differences), float(np.mean(differences)),
                       detail='; '.join(failed_checks))
    if untestable:
        return Verdict(f'not testable here: {untestable}', len(differences),
                       float(np.mean(differences)), detail=untestable)
    v = paired_verdict(differences, noise_sd)
    if earlier is not None:
        before = float(np.mean([float(x) for x in earlier]))
        moved = v.mean_difference - before
        v.detail += f'; the difference was {before:.4g} at 4/5 of the runs'
        toward_zero = -moved if v.mean_difference > 0 else moved
        crossed = before * v.mean_difference <= 0
        if v.decided and (crossed or not toward_zero < SETTLED_FRACTION * abs(v.mean_difference)):
            v.verdict = 'cannot tell (still moving)'
            v.detail += (': it had the other sign then' if crossed else
                         f': it came toward zero by {abs(moved):.3g} over the last fifth, not '
                         'less than half itself')
    return v
