"""Paired comparison of two configurations across the same cross-validation folds.

Fold accuracies of two configurations evaluated on the same folds are paired: fold ``j`` gives
each one the same test clips and the same training clips. Two tests of "is A really better than
B" are offered:

* the **corrected resampled t-test** of Nadeau and Bengio (2003, "Inference for the
  generalization error", Machine Learning 52): the ordinary paired t statistic treats the ``J``
  fold differences as independent, but their training sets overlap, so the variance of their mean
  is underestimated. Nadeau and Bengio replace the ``1/J`` factor of the variance by
  ``1/J + n_test/n_train``::

      t = mean(d) / sqrt((1/J + n_test/n_train) * var(d, ddof=1)),   df = J - 1

  For k-fold CV every fold tests on about ``1/k`` of the data, so ``n_test/n_train`` is about
  ``1/(k - 1)`` (Bouckaert and Frank, 2004, used the same correction for k-fold CV). With
  UrbanSound8K's unequal folds the ratio is the mean of the per-fold ratios.
* the **Wilcoxon signed-rank test** on the same differences (no normality assumption; with ten
  folds its smallest two-sided p-value is 2/1024, about 0.002).

Both are two-sided. Differences are ``a - b``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as _st

__all__ = [
    "PairedComparison",
    "TestResult",
    "corrected_resampled_ttest",
    "paired_comparison",
    "wilcoxon_signed_rank",
]


@dataclass(frozen=True)
class TestResult:
    """One test's outcome.

    Attributes
    ----------
    name:
        ``"corrected_t"`` or ``"wilcoxon"``.
    statistic:
        t statistic, or Wilcoxon's W (the smaller rank sum).
    pvalue:
        Two-sided p-value.
    df:
        Degrees of freedom (t-test only).
    """

    __test__ = False  # not a pytest class despite its name

    name: str
    statistic: float
    pvalue: float
    df: int | None = None


@dataclass(frozen=True)
class PairedComparison:
    """Per-fold differences of two configurations and both tests on them."""

    folds: list[int | str]
    a: list[float]
    b: list[float]
    differences: list[float]
    mean_difference: float
    std_difference: float  # ddof=1
    test_train_ratio: float
    ttest: TestResult
    wilcoxon: TestResult

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


def _ratio(n_train: float | Sequence[float], n_test: float | Sequence[float], j: int) -> float:
    tr = np.broadcast_to(np.asarray(n_train, dtype=float), (j,))
    te = np.broadcast_to(np.asarray(n_test, dtype=float), (j,))
    if np.any(tr <= 0) or np.any(te < 0):
        raise ValueError("n_train must be positive and n_test non-negative")
    return float(np.mean(te / tr))


def corrected_resampled_ttest(
    differences: Sequence[float],
    *,
    n_train: float | Sequence[float],
    n_test: float | Sequence[float],
) -> TestResult:
    """Nadeau–Bengio corrected resampled t-test on paired per-fold differences.

    Parameters
    ----------
    differences:
        ``a_j - b_j`` for each fold ``j`` (at least two).
    n_train, n_test:
        Training and test set sizes: one number for all folds, or one per fold (the ratio used
        is the mean of the per-fold ``n_test / n_train``). ``n_test=0`` gives the ordinary paired
        t-test.

    Returns
    -------
    TestResult
        t statistic, two-sided p-value and ``df = J - 1``. When every difference is equal the
        variance is zero: t is 0 with p = 1 if they are all zero, else ±inf with p = 0.
    """
    d = np.asarray(differences, dtype=float)
    j = d.size
    if j < 2:
        raise ValueError(f"a paired t-test needs at least two folds, got {j}")
    ratio = _ratio(n_train, n_test, j)
    mean = float(d.mean())
    var = float(d.var(ddof=1))
    if var <= 0.0 or math.isclose(var, 0.0, abs_tol=1e-30):
        if mean == 0.0:
            return TestResult("corrected_t", 0.0, 1.0, j - 1)
        return TestResult("corrected_t", math.copysign(math.inf, mean), 0.0, j - 1)
    t = mean / math.sqrt((1.0 / j + ratio) * var)
    p = float(2.0 * _st.t.sf(abs(t), df=j - 1))
    return TestResult("corrected_t", float(t), p, j - 1)


def wilcoxon_signed_rank(differences: Sequence[float]) -> TestResult:
    """Two-sided Wilcoxon signed-rank test on paired differences (zero differences dropped).

    Returns p = 1 (statistic 0) when every difference is zero.
    """
    d = np.round(np.asarray(differences, dtype=float), 12)
    if d.size < 1:
        raise ValueError("a Wilcoxon test needs at least one difference")
    if not np.any(d):
        return TestResult("wilcoxon", 0.0, 1.0)
    res = _st.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return TestResult("wilcoxon", float(res.statistic), float(res.pvalue))


def paired_comparison(
    a: Sequence[float],
    b: Sequence[float],
    *,
    folds: Sequence[int | str],
    n_train: float | Sequence[float],
    n_test: float | Sequence[float],
) -> PairedComparison:
    """Compare configuration ``a`` with ``b`` on the same folds (differences ``a - b``).

    Parameters
    ----------
    a, b:
        Per-fold accuracies, aligned with ``folds``.
    folds:
        Fold labels.
    n_train, n_test:
        Training and test set sizes per fold (or one number each), for the t-test's correction.
    """
    av = np.asarray(a, dtype=float)
    bv = np.asarray(b, dtype=float)
    if av.shape != bv.shape or av.ndim != 1 or av.size != len(folds):
        raise ValueError(
            f"a, b and folds must have the same length, got {av.size}, {bv.size}, {len(folds)}"
        )
    d = av - bv
    return PairedComparison(
        folds=list(folds),
        a=av.tolist(),
        b=bv.tolist(),
        differences=d.tolist(),
        mean_difference=float(d.mean()) if d.size else math.nan,
        std_difference=float(d.std(ddof=1)) if d.size > 1 else math.nan,
        test_train_ratio=_ratio(n_train, n_test, d.size),
        ttest=corrected_resampled_ttest(d, n_train=n_train, n_test=n_test),
        wilcoxon=wilcoxon_signed_rank(d),
    )
