"""Paired comparison across folds: corrected resampled t-test and Wilcoxon signed-rank."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from urbansound.report.stats import (
    corrected_resampled_ttest,
    paired_comparison,
    wilcoxon_signed_rank,
)

# d = [0.02, 0.04, 0.00, 0.03, 0.01]: mean 0.02, sample variance (0+4+4+1+1)e-4 / 4 = 2.5e-4.
D = [0.02, 0.04, 0.00, 0.03, 0.01]


def test_corrected_t_matches_hand_computation():
    # n_test/n_train = 1000/4000 = 0.25, J = 5:
    # t = 0.02 / sqrt((1/5 + 0.25) * 2.5e-4) = 0.02 / sqrt(1.125e-4) = 4 / sqrt(4.5) = 1.885618...
    res = corrected_resampled_ttest(D, n_train=4000, n_test=1000)
    assert res.statistic == pytest.approx(4 / math.sqrt(4.5), rel=1e-12)
    assert res.statistic == pytest.approx(1.8856180831641267, rel=1e-12)
    assert res.df == 4
    # two-sided p of Student's t with 4 degrees of freedom at 1.8856: 0.13242
    assert res.pvalue == pytest.approx(0.1324189, abs=1e-6)
    assert res.pvalue == pytest.approx(2 * st.t.sf(4 / math.sqrt(4.5), 4), rel=1e-12)


def test_without_correction_it_is_scipys_paired_t_test():
    rng = np.random.default_rng(3)
    a = rng.uniform(0.5, 0.8, 10)
    b = a - rng.normal(0.01, 0.02, 10)
    ours = corrected_resampled_ttest(a - b, n_train=900, n_test=0)
    ref = st.ttest_rel(a, b)
    assert ours.statistic == pytest.approx(float(ref.statistic), rel=1e-10)
    assert ours.pvalue == pytest.approx(float(ref.pvalue), rel=1e-10)


def test_correction_shrinks_t_by_the_variance_factor():
    # 10-fold CV: n_test/n_train = 1/9, so t_corrected = t_paired * sqrt((1/10) / (1/10 + 1/9)).
    rng = np.random.default_rng(7)
    d = rng.normal(0.01, 0.02, 10)
    plain = st.ttest_1samp(d, 0.0).statistic
    corrected = corrected_resampled_ttest(d, n_train=900, n_test=100)
    assert corrected.statistic == pytest.approx(plain * math.sqrt(0.1 / (0.1 + 1 / 9)), rel=1e-10)
    assert corrected.pvalue > st.ttest_1samp(d, 0.0).pvalue


def test_per_fold_sizes_use_the_mean_ratio():
    # ratios 100/900 and 300/700 -> mean (1/9 + 3/7) / 2
    res = corrected_resampled_ttest([0.01, 0.03], n_train=[900, 700], n_test=[100, 300])
    ratio = (1 / 9 + 3 / 7) / 2
    var = np.var([0.01, 0.03], ddof=1)
    assert res.statistic == pytest.approx(0.02 / math.sqrt((0.5 + ratio) * var), rel=1e-12)


def test_zero_variance():
    same = corrected_resampled_ttest([0.0, 0.0, 0.0], n_train=9, n_test=1)
    assert (same.statistic, same.pvalue) == (0.0, 1.0)
    shifted = corrected_resampled_ttest([0.02, 0.02, 0.02], n_train=9, n_test=1)
    assert shifted.statistic == math.inf and shifted.pvalue == 0.0
    assert corrected_resampled_ttest([-0.02] * 3, n_train=9, n_test=1).statistic == -math.inf


def test_wilcoxon_hand_value_and_scipy():
    # The zero is dropped; the 4 remaining differences are all positive: W = 0 and the exact
    # two-sided p is 2 / 2^4 = 0.125.
    res = wilcoxon_signed_rank(D)
    assert res.statistic == 0.0
    assert res.pvalue == pytest.approx(0.125, abs=1e-12)
    rng = np.random.default_rng(11)
    d = rng.normal(0.0, 0.02, 10)
    ref = st.wilcoxon(d)
    ours = wilcoxon_signed_rank(d)
    assert (ours.statistic, ours.pvalue) == pytest.approx((ref.statistic, ref.pvalue))


def test_wilcoxon_all_zero_is_no_difference():
    res = wilcoxon_signed_rank([0.0, 0.0, 0.0, 0.0])
    assert (res.statistic, res.pvalue) == (0.0, 1.0)


def test_paired_comparison_differences_and_tests():
    a = [0.70, 0.65, 0.72, 0.68, 0.66]
    b = [x - d for x, d in zip(a, D, strict=True)]
    cmp = paired_comparison(a, b, folds=[1, 2, 3, 4, 5], n_train=4000, n_test=1000)
    assert cmp.differences == pytest.approx(D)
    assert cmp.mean_difference == pytest.approx(0.02)
    assert cmp.std_difference == pytest.approx(math.sqrt(2.5e-4))
    assert cmp.test_train_ratio == pytest.approx(0.25)
    assert cmp.ttest.statistic == pytest.approx(1.8856180831641267)
    assert cmp.wilcoxon.pvalue == pytest.approx(0.125)
    d = cmp.to_dict()
    assert d["ttest"]["name"] == "corrected_t" and d["folds"] == [1, 2, 3, 4, 5]


def test_errors():
    with pytest.raises(ValueError, match="at least two folds"):
        corrected_resampled_ttest([0.1], n_train=9, n_test=1)
    with pytest.raises(ValueError, match="same length"):
        paired_comparison([0.1, 0.2], [0.1], folds=[1, 2], n_train=9, n_test=1)
    with pytest.raises(ValueError, match="n_train must be positive"):
        corrected_resampled_ttest([0.1, 0.2], n_train=0, n_test=1)
