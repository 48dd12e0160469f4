"""The statistical rule of the experiments' claims (progcode_ext/experiments/verdicts.py)."""
import math

import pytest
from scipy import stats

from progcode_ext.experiments.verdicts import (Verdict, claim_verdict, paired_verdict,
                                               pooled_noise_sd)


def test_noise_of_one_score_from_pairs_of_independent_scores():
    assert pooled_noise_sd([]) is None
    assert pooled_noise_sd([(1.0, 3.0)]) == pytest.approx(math.sqrt(2))
    assert pooled_noise_sd([(1.0, 3.0), (5.0, 5.0)]) == pytest.approx(1.0)


def test_three_seeds_a_one_sided_paired_t_test():
    held = paired_verdict([2.0, 2.5, 3.1])
    assert held.verdict == 'held' and held.n_seeds == 3
    assert held.p_value == pytest.approx(
        stats.ttest_1samp([2.0, 2.5, 3.1], 0, alternative='greater').pvalue)
    assert held.standard_error == pytest.approx(stats.sem([2.0, 2.5, 3.1]))
    assert paired_verdict([-2.0, -2.5, -3.1]).verdict == 'did not hold'
    # a mean clear of zero by less than the seeds' spread: no detectable difference
    assert paired_verdict([4.3, -3.0, 1.0]).verdict == 'no detectable difference'
    # mean - 2 SE > 0 is not enough with 3 seeds: the t distribution has heavier tails
    d = [0.5, 1.6, 2.7]
    assert sum(d) / 3 - 2 * stats.sem(d) > 0
    assert paired_verdict(d).verdict == 'no detectable difference'


def test_one_seed_is_judged_against_the_metrics_noise_and_says_so():
    threshold = 2 * math.sqrt(2) * 1.0
    assert paired_verdict([threshold + 0.01], noise_sd=1.0).verdict == 'held on 1 seed'
    assert paired_verdict([-threshold - 0.01], noise_sd=1.0).verdict == 'did not hold on 1 seed'
    assert paired_verdict([threshold - 0.01], noise_sd=1.0).verdict == \
        'no detectable difference (1 seed)'
    assert paired_verdict([5.0, 0.1], noise_sd=1.0).verdict == 'no detectable difference (2 seeds)'
    with pytest.raises(ValueError, match='noise'):
        paired_verdict([1.0])
    with pytest.raises(ValueError, match='at least one'):
        paired_verdict([])


def test_a_verdict_needs_a_difference_that_did_not_shrink_by_half_itself():
    moving = claim_verdict([2.0, 2.5, 3.1], earlier=[4.0, 3.4, 4.5])
    assert moving.verdict == 'cannot tell (still moving)' and 'toward zero by 1.43' in moving.detail
    assert claim_verdict([2.0, 2.5, 3.1], earlier=[3.0, 3.4, 4.5]).verdict == 'held'
    assert claim_verdict([2.0, 2.5, 3.1], earlier=[-1.0, -2.0, -3.0]).verdict == \
        'cannot tell (still moving)'                                   # it changed sign
    # growing away from zero strengthens the verdict, in either direction
    assert claim_verdict([2.0, 2.5, 3.1], earlier=[0.1, 0.2, 0.3]).verdict == 'held'
    assert claim_verdict([-2.0, -2.5, -3.1], earlier=[-0.1, -0.2, -0.3]).verdict == 'did not hold'
    assert claim_verdict([-2.0, -2.5, -3.1], earlier=[-4.0, -4.5, -5.0]).verdict == \
        'cannot tell (still moving)'
    assert claim_verdict([2.0, 2.5, 3.1]).verdict == 'held'            # not measured: no check
    # no detectable difference needs no settledness: there is no effect to compare with
    assert claim_verdict([4.3, -3.0, 1.0], earlier=[40.0, 30.0, 9.0]).verdict == \
        'no detectable difference'


def test_failed_checks_then_an_untestable_experiment_come_first():
    failed = claim_verdict([5.0], 1.0, failed_checks=['m: D within 10% failed'],
                           untestable='stage 2 has nothing to code')
    assert failed.verdict == 'inconclusive' and 'D within 10%' in failed.detail
    untestable = claim_verdict([5.0], 1.0, untestable='stage 2 has nothing to code')
    assert untestable.verdict == 'not testable here: stage 2 has nothing to code'
    assert not untestable.decided and isinstance(untestable, Verdict)
    assert untestable.as_dict()['verdict'] == untestable.verdict
