"""Classification metrics, each defined once: the loss, the confusion matrix, a fold's result.

Every family, the final fit, the report and the trackers use these, so "loss" and "confusion"
mean one thing everywhere:

- :func:`cross_entropy`: the categorical cross-entropy of Keras (``keras.losses.
  categorical_crossentropy``), the tutorial's loss: the mean of ``-log(p[i, y_i])`` over rows,
  the true class's probability clipped below at :data:`LOSS_EPS` = 1e-7 (Keras' ``epsilon()``),
  so one confident mistake costs at most ``-log(1e-7)`` = 16.12 instead of infinity. The lockstep
  MLP computes the same loss on its device every epoch, from the log-softmax of its logits
  (:func:`urbansound.training.lockstep_group.clipped_nll`: ``min(-log p, -log(LOSS_EPS))``, the
  same clip written in log space, in float32), for its training and test losses.
- :func:`confusion_matrix`: counts, rows = true class, columns = predicted class
  (:func:`sklearn.metrics.confusion_matrix` with every class as a label).
- :func:`fold_result`: one fold's :class:`~urbansound.training.results.FoldResult` from its test
  rows' class probabilities (the prediction is their argmax).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from urbansound.training.results import FoldResult

__all__ = [
    "LOSS_EPS",
    "confusion_matrix",
    "cross_entropy",
    "fold_result",
    "per_class_accuracy",
    "summed_confusion",
]

#: The probability floor of :func:`cross_entropy` (Keras' ``backend.epsilon()``).
LOSS_EPS = 1e-7


def cross_entropy(probabilities: np.ndarray, y_true: np.ndarray) -> float:
    """The mean categorical cross-entropy, Keras' definition (see the module docstring).

    Parameters
    ----------
    probabilities:
        ``(n, n_classes)`` class probabilities, rows summing to 1 (any float dtype; computed in
        float64).
    y_true:
        ``(n,)`` integer class ids in ``[0, n_classes)``.

    Returns
    -------
    float
        In nats; ``nan`` for ``n == 0``.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    if len(y) == 0:
        return float("nan")
    p_true = p[np.arange(len(y)), y]
    return float(-np.mean(np.log(np.clip(p_true, LOSS_EPS, 1.0))))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` int64 counts, rows = true class, columns = predicted class."""
    from sklearn.metrics import confusion_matrix as sk_confusion

    labels = np.arange(n_classes)
    if len(y_true) == 0:
        return np.zeros((n_classes, n_classes), dtype=np.int64)
    return sk_confusion(y_true, y_pred, labels=labels).astype(np.int64)


def per_class_accuracy(confusion: np.ndarray) -> list[float | None]:
    """Each class's recall (its diagonal count over its row sum); ``None`` for a class with no
    test row."""
    cm = np.asarray(confusion)
    support = cm.sum(axis=1)
    return [float(cm[c, c] / support[c]) if support[c] else None for c in range(len(cm))]


def fold_result(
    fold: int | str,
    probabilities: np.ndarray,
    y_true: np.ndarray,
    *,
    n_train: int,
    n_classes: int,
) -> FoldResult:
    """One fold's metrics on its test part from its ``(n_test, n_classes)`` probabilities.

    ``accuracy``, ``per_class_accuracy`` and ``confusion`` are those of the probabilities'
    argmax (the first class on a tie, as :func:`numpy.argmax`); ``loss`` is
    :func:`cross_entropy`.
    """
    y = np.asarray(y_true, dtype=np.int64)
    pred = np.asarray(probabilities).argmax(axis=1)
    cm = confusion_matrix(y, pred, n_classes)
    return FoldResult(
        fold=fold,
        accuracy=float(np.mean(pred == y)) if len(y) else float("nan"),
        loss=cross_entropy(probabilities, y),
        n_train=int(n_train),
        n_test=len(y),
        per_class_accuracy=per_class_accuracy(cm),
        confusion=cm.tolist(),
    )


def summed_confusion(folds: Iterable[FoldResult | dict[str, Any]]) -> np.ndarray:
    """The folds' confusion matrices summed (rows = true class), int64.

    Raises
    ------
    ValueError
        When no fold has a confusion matrix.
    """
    mats = []
    for f in folds:
        conf = f.confusion if isinstance(f, FoldResult) else f.get("confusion")
        if conf:
            mats.append(np.asarray(conf, dtype=np.int64))
    if not mats:
        raise ValueError("no fold has a confusion matrix")
    return np.sum(mats, axis=0)
