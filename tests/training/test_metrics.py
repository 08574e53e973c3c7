"""urbansound.training.metrics: one loss (Keras' clipped cross-entropy), one confusion matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest

from urbansound.training import metrics


def test_cross_entropy_is_keras_categorical_crossentropy() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0]])
    y = np.array([0, 0, 2])
    # Keras: -log(clip(p_true, 1e-7, 1)) averaged; p_true = 0.7, 0 -> 1e-7, 0 -> 1e-7
    expected = -(math.log(0.7) + 2 * math.log(1e-7)) / 3
    assert metrics.cross_entropy(p, y) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(metrics.cross_entropy(np.zeros((0, 3)), np.zeros(0, np.int64)))


def test_confusion_rows_are_true_classes_and_every_class_has_a_row() -> None:
    cm = metrics.confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert metrics.per_class_accuracy(cm) == [0.5, 1.0, None, None]


def test_fold_result_from_probabilities() -> None:
    p = np.array([[0.6, 0.4], [0.3, 0.7], [0.9, 0.1]], dtype=np.float32)
    r = metrics.fold_result(3, p, np.array([0, 0, 1]), n_train=10, n_classes=2)
    assert (r.fold, r.n_train, r.n_test) == (3, 10, 3)
    assert r.accuracy == pytest.approx(1 / 3)
    assert r.confusion == [[1, 1], [1, 0]]
    assert r.loss == pytest.approx(metrics.cross_entropy(p, np.array([0, 0, 1])))


def test_summed_confusion_skips_folds_without_one_and_refuses_none() -> None:
    a = metrics.fold_result(1, np.eye(2), np.array([0, 1]), n_train=2, n_classes=2)
    total = metrics.summed_confusion([a, {"confusion": []}, a.__dict__])
    assert total.tolist() == [[2, 0], [0, 2]]
    with pytest.raises(ValueError, match="no fold"):
        metrics.summed_confusion([{"confusion": None}])
