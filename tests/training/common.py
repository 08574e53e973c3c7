"""Data and settings shared by the training tests."""

from __future__ import annotations

import os

import numpy as np

from urbansound.config.settings import ModelSettings, TrainSettings
from urbansound.training.cross_validation import cross_validate
from urbansound.training.problem import CVProblem
from urbansound.training.results import CVResult

N_CLASSES = 4
SMALL = ModelSettings(hidden=(32, 16), dropout=0.25)


def blobs(n: int = 240, d: int = 6, *, seed: int = 0, n_folds: int = 4):
    """Separable-ish Gaussian classes with unequal, shuffled fold sizes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n)
    centers = rng.normal(size=(N_CLASSES, d)) * 1.5
    X = (centers[y] + rng.normal(size=(n, d))) * 4.0 + 10.0
    folds = rng.choice(
        np.arange(1, n_folds + 1),
        size=n,
        p=np.linspace(1, 2, n_folds) / np.linspace(1, 2, n_folds).sum(),
    )
    return X.astype(np.float32), y, folds


# The device the trainer's tests train on: the CPU here and in CI; on a GPU machine
# `URBANSOUND_TEST_DEVICE=cuda python -m pytest tests/training/test_train.py` runs them on the GPU
# (the tests of child processes and thread groups name the CPU themselves).
DEVICE = os.environ.get("URBANSOUND_TEST_DEVICE", "cpu")


def cv(X, y, splits, *, n_classes, model, train, **options) -> CVResult:
    """``cross_validate`` of the problem (X, y, splits, n_classes, model, train)."""
    problem = CVProblem(X, y, splits, n_classes=n_classes, model=model, train=train)
    return cross_validate(problem, **options)


def quick_train(**kw) -> TrainSettings:
    """Train settings for a quick test: 3 epochs, batch 16, seed 5, on :data:`DEVICE`."""
    base = {"epochs": 3, "batch_size": 16, "seed": 5, "device": DEVICE}
    base.update(kw)
    return TrainSettings(**base)
