"""What a cross-validated training is asked to do, given once: :class:`CVProblem`.

:func:`urbansound.training.cross_validation.cross_validate` takes a :class:`CVProblem` and hands
it to the trainer of ``model.family`` (every one a :data:`Trainer`): the lockstep MLP
(:func:`urbansound.training.lockstep.train_folds`) or a scikit-learn pipeline
(:func:`urbansound.training.families.cross_validate_sklearn`). The inputs are checked once, when
the problem is made, so no trainer checks them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from urbansound.config.settings import AnyModelSettings, TrainSettings
from urbansound.data.cv import Split
from urbansound.errors import DataError
from urbansound.training.metrics import fold_result
from urbansound.training.results import CVResult, EpochCallback, EpochMetrics, FoldPredictions

__all__ = ["CVProblem", "Trainer"]


@dataclass(frozen=True, eq=False)  # arrays: compared by identity, not element-wise
class CVProblem:
    """Features, labels and splits, and the model and training settings to cross-validate.

    Made with the caller's arrays; :meth:`__post_init__` checks them and stores ``X`` as float32
    and ``y`` as int64 (copies only where the dtype differs) and ``splits`` as a tuple.

    Attributes
    ----------
    X:
        Features, ``(n_clips, n_features)`` float32, every value finite.
    y:
        Class ids, ``(n_clips,)`` int64 in ``[0, n_classes)``.
    splits:
        The partitions to train and test (:func:`~urbansound.data.cv.fold_splits`,
        :func:`~urbansound.data.cv.random_split`), each with training and test rows of ``X``.
    n_classes:
        The output width; classes absent from the data are allowed.
    model, train:
        The ``model`` (any family's settings) and ``train`` config groups.

    Raises
    ------
    DataError
        Shapes that do not match, NaN or infinite features (the rows named), labels outside
        ``0..n_classes-1``, no split, a split with an empty part, or indices outside ``X``.
    """

    X: np.ndarray
    y: np.ndarray
    splits: Sequence[Split]
    n_classes: int
    model: AnyModelSettings
    train: TrainSettings

    def __post_init__(self) -> None:
        X, y = np.asarray(self.X), np.asarray(self.y)
        if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
            raise DataError(
                "features must be (n_clips, n_features) matching labels (n_clips,); "
                f"got X {X.shape}, y {y.shape}"
            )
        finite = np.isfinite(X).all(axis=1) if X.size else np.ones(len(X), dtype=bool)
        if not finite.all():  # extract_features names the clips; this guards other callers
            rows = np.flatnonzero(~finite)
            shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
            raise DataError(
                f"features of {len(rows)} row(s) of X are NaN or infinite (rows {shown}); "
                "drop those clips or fix their features before training"
            )
        if len(y) and (y.min() < 0 or y.max() >= self.n_classes):
            raise DataError(f"labels must lie in 0..{self.n_classes - 1}, got {y.min()}..{y.max()}")
        splits = tuple(self.splits)
        if not splits:
            raise DataError(
                "no train/test split to evaluate (are there clips in the selected folds?)"
            )
        for s in splits:
            if len(s.train) == 0 or len(s.test) == 0:
                raise DataError(
                    f"fold {s.fold}: {len(s.train)} training and {len(s.test)} test clips; "
                    "both parts need clips"
                )
            for part in (s.train, s.test):
                if part.min() < 0 or part.max() >= len(X):
                    raise DataError(f"fold {s.fold}: indices outside 0..{len(X) - 1}")
        object.__setattr__(self, "X", X.astype(np.float32, copy=False))
        object.__setattr__(self, "y", y.astype(np.int64, copy=False))
        object.__setattr__(self, "splits", splits)
        object.__setattr__(self, "n_classes", int(self.n_classes))

    def result(
        self,
        probabilities: Sequence[np.ndarray],
        *,
        history: list[EpochMetrics],
        models: list[Any],
    ) -> CVResult:
        """The :class:`~urbansound.training.results.CVResult` of trained models, from each
        split's test probabilities ``(n_test, n_classes)`` (split order).

        Every fold's metrics are :func:`~urbansound.training.metrics.fold_result` of its
        probabilities, which are kept as its :class:`~urbansound.training.results.
        FoldPredictions`; the accuracies' mean and standard deviation (ddof=0) are over folds.
        """
        folds, predictions = [], []
        for s, p in zip(self.splits, probabilities, strict=True):
            folds.append(
                fold_result(
                    s.fold, p, self.y[s.test], n_train=len(s.train), n_classes=self.n_classes
                )
            )
            predictions.append(
                FoldPredictions(fold=s.fold, test_index=s.test.copy(), probabilities=p)
            )
        accs = np.array([f.accuracy for f in folds])
        return CVResult(
            folds=folds,
            history=history,
            mean_accuracy=float(accs.mean()),
            std_accuracy=float(accs.std(ddof=0)),
            predictions=predictions,
            models=models,
        )


class Trainer(Protocol):
    """The call every family's trainer answers: one :class:`CVProblem` in, a
    :class:`~urbansound.training.results.CVResult` out.

    ``callbacks`` get every epoch's (or stage's) :class:`~urbansound.training.results.
    EpochMetrics`, and an exception one raises (:class:`~urbansound.errors.TrialPruned`) stops
    training and propagates; ``progress`` shows a progress bar; ``keep_models`` also returns every
    split's trained model (``CVResult.models``).
    """

    def __call__(
        self,
        problem: CVProblem,
        *,
        callbacks: Sequence[EpochCallback],
        progress: bool,
        keep_models: bool,
    ) -> CVResult: ...
