"""Cross-validated training: :func:`cross_validate` turns features, labels and splits into a
typed :class:`~urbansound.training.results.CVResult`.

``model.family`` chooses what is trained: every family but the MLP is a scikit-learn pipeline
(:mod:`urbansound.training.families`, same splits, same result type). For the MLP (``model=mlp``,
the default), it trains one Keras-equivalent MLP per :class:`~urbansound.data.cv.Split` and
evaluates every model on its test part after every epoch, so a run yields a per-epoch
cross-validation curve (for pruning and tracking) as well as the final per-fold metrics. The folds'
models train together as one stacked model (:mod:`urbansound.training.lockstep`), each exactly the
model Keras would train on its own.

Features are standardised per fold with the mean and standard deviation of that fold's training
part only (``train.standardize``; the ``tutorial`` preset turns it off). A ``train.batch_size``
larger than every fold's training part is clipped to the largest one (one log line): a batch
cannot hold more clips than there are, and the trainer's buffers grow with the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from urbansound.config.settings import AnyModelSettings, TrainSettings
from urbansound.data.cv import Split
from urbansound.errors import DataError
from urbansound.training.lockstep import train_folds
from urbansound.training.results import CVResult, EpochCallback

logger = logging.getLogger(__name__)

__all__ = ["cross_validate"]


def _check_inputs(
    X: np.ndarray, y: np.ndarray, splits: Sequence[Split], n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise DataError(
            f"features must be (n_clips, n_features) matching labels; got X {X.shape}, y {y.shape}"
        )
    finite = np.isfinite(X).all(axis=1) if X.size else np.ones(len(X), dtype=bool)
    if not finite.all():  # extract_features names the clips; this guards other callers
        rows = np.flatnonzero(~finite)
        shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        raise DataError(
            f"features of {len(rows)} row(s) of X are NaN or infinite (rows {shown}); "
            "drop those clips or fix their features before training"
        )
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(f"labels must lie in 0..{n_classes - 1}, got {y.min()}..{y.max()}")
    if not splits:
        raise DataError("no train/test split to evaluate (are there clips in the selected folds?)")
    for s in splits:
        if len(s.train) == 0 or len(s.test) == 0:
            raise DataError(
                f"fold {s.fold}: {len(s.train)} training and {len(s.test)} test clips; "
                "both parts need clips"
            )
        for part in (s.train, s.test):
            if part.min() < 0 or part.max() >= len(X):
                raise DataError(f"fold {s.fold}: indices outside 0..{len(X) - 1}")
    return X.astype(np.float32, copy=False), y.astype(np.int64, copy=False)


def cross_validate(
    X: np.ndarray,
    y: np.ndarray,
    splits: Sequence[Split],
    *,
    n_classes: int,
    model: AnyModelSettings,
    train: TrainSettings,
    callbacks: Sequence[EpochCallback] = (),
    progress: bool = True,
    keep_models: bool = False,
) -> CVResult:
    """Train one model per split and evaluate each on its test part every epoch (or stage).

    ``model.family`` chooses the trainer: the MLP trains all splits in lockstep
    (:mod:`urbansound.training.lockstep`), every other family is a scikit-learn pipeline fitted per
    split (:func:`urbansound.training.families.cross_validate_sklearn`, which documents its stages).

    Parameters
    ----------
    X, y:
        Features ``(n_clips, n_features)`` and class ids ``(n_clips,)``.
    splits:
        The partitions to train and test (:func:`fold_splits`, :func:`random_split`).
    n_classes:
        Number of classes (the output width; classes absent from the data are allowed).
    model, train:
        The ``model`` (any family's settings) and ``train`` config groups.
    callbacks:
        Called with the :class:`EpochMetrics` of every epoch; an exception raised by one
        (:class:`~urbansound.errors.TrialPruned`) stops training and propagates.
    progress:
        Show a progress bar over epochs with the mean test accuracy.
    keep_models:
        Also return every split's trained model (``CVResult.models``: :class:`FittedMLP` for
        the MLP, the fitted scikit-learn ``Pipeline`` for the other families).

    Returns
    -------
    CVResult
        Final per-fold metrics (after the last epoch), the per-epoch history, the mean and
        standard deviation of the folds' accuracies, and every fold's test probabilities.
    """
    X, y = _check_inputs(X, y, splits, n_classes)
    if model.family != "mlp":
        from urbansound.training.families import cross_validate_sklearn

        return cross_validate_sklearn(
            X,
            y,
            splits,
            n_classes=n_classes,
            model=model,
            train=train,
            callbacks=callbacks,
            progress=progress,
            keep_models=keep_models,
        )
    largest = max(len(s.train) for s in splits)
    if train.batch_size > largest:
        logger.warning(
            "train.batch_size=%d is larger than the largest training part (%d clips): "
            "clipped to %d (every fold trains on one full batch per epoch)",
            train.batch_size,
            largest,
            largest,
        )
        train = replace(train, batch_size=largest)
    return train_folds(
        X,
        y,
        splits,
        n_classes=n_classes,
        model=model,
        train=train,
        callbacks=callbacks,
        progress=progress,
        keep_models=keep_models,
    )
