"""Did a model converge? The checks that decide whether an experiment can say anything.

An experiment whose models did not converge proves nothing either way, so every claim of a report
is "inconclusive" when any model behind it fails one of these checks (the failed check is named):
* a lambda-optimal model (stage 1) ends with validation distortion within +-10% of its target;
* a gamma-optimal model ends with validation rate R'_K within +-10% of its target gamma;
* every run behind a claim has a last fifth of at least 50 steps (over a handful of steps any
  model barely moves, converged or not);
* `settled` (the stages experiment): a model trained to a fixed objective moved by less than 2%
  over the last fifth of its training. Tables 1 and 2 judge settledness against the effect they
  measure instead (verdicts.py: over the last fifth the paired difference may not shrink toward
  zero by half itself), since a fixed tolerance can be looser than the effect it supports.
All values are exact means over the validation split with the EMA weights.
"""
from dataclasses import asdict, dataclass

TARGET_TOLERANCE = 0.10
SETTLED_TOLERANCE = 0.02
MIN_WINDOW = 50


@dataclass
class Check:
    """One convergence check of one model: `passed`, with the numbers in `detail`."""
    model: str
    check: str
    passed: bool
    detail: str

    def as_dict(self):
        return asdict(self)


def reaches_target(model, what, value, target, tolerance=TARGET_TOLERANCE):
    """`value` of `what` (e.g. 'D', "R'_K") within +-tolerance of its target."""
    off = value / target - 1
    return Check(model, f'{what} within {tolerance:.0%} of its target', abs(off) <= tolerance,
                 f'{what} {value:.5g} vs target {target:.5g} ({off:+.1%})')


def settled(model, what, before, after, steps, tolerance=SETTLED_TOLERANCE):
    """`what` (e.g. '-ELBO') moved by less than `tolerance` (relative) over the last fifth of a run
    of `steps` steps; `before` is None when the checkpoint at 4/5 of the run does not exist."""
    name = f'{what} moved < {tolerance:.0%} over the last fifth'
    if steps // 5 < MIN_WINDOW:
        return Check(model, name, False, f'the last fifth of {steps} steps is too short to tell '
                                         f'(at least {MIN_WINDOW} steps)')
    if before is None:
        return Check(model, name, False, f'no checkpoint at 4/5 of the run ({steps}) to compare with')
    moved = after / before - 1
    return Check(model, name, abs(moved) < tolerance,
                 f'{what} {before:.5g} -> {after:.5g} ({moved:+.2%})')


def long_enough(model, steps):
    """A run whose last fifth is long enough for its movement over it to mean anything."""
    return Check(model, f'a last fifth of at least {MIN_WINDOW} steps', steps // 5 >= MIN_WINDOW,
                 f'{steps} steps')


def failures(checks):
    return [c for c in checks if not c.passed]


def verdict(held_per_seed, checks):
    """'inconclusive' when a model behind the claim failed a check; else 'held' when the claim
    held on every seed and 'did not hold' when it did not."""
    if failures(checks):
        return 'inconclusive'
    return 'held' if all(held_per_seed) else 'did not hold'


def failure_lines(checks, models=None):
    """'model: check failed (numbers)' for each failed check (of `models` only, when given): what
    an inconclusive verdict names."""
    return [f'{c.model}: {c.check} failed ({c.detail})' for c in failures(checks)
            if models is None or c.model in models]


def describe_failures(checks):
    return '; '.join(failure_lines(checks))
