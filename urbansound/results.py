"""The typed result of a run: what the trainer returns and every sink (run directory, Comet, the
Optuna reporter, the report) receives.

Plain types only (dataclasses of numbers, strings, lists and numpy arrays), so that a sink can
import this module without importing the pipeline. ``RunResult.to_dict()`` is the content of a run
directory's ``results.json``; its field names are pinned by ``tests/test_results.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "CVResult",
    "EpochCallback",
    "EpochMetrics",
    "FittedMLP",
    "FoldPredictions",
    "FoldResult",
    "RunResult",
    "history_row",
]


@dataclass
class EpochMetrics:
    """Every fold's metrics after one epoch (arrays are in split order)."""

    epoch: int  # 1-based
    folds: list[int | str]
    train_loss: np.ndarray  # (n_splits,) mean training loss over the epoch (dropout on)
    test_loss: np.ndarray  # (n_splits,) on each fold's test part (dropout off)
    test_accuracy: np.ndarray  # (n_splits,)

    @property
    def mean_test_accuracy(self) -> float:
        return float(np.mean(self.test_accuracy))

    @property
    def mean_train_loss(self) -> float:
        return float(np.mean(self.train_loss))

    @property
    def mean_test_loss(self) -> float:
        return float(np.mean(self.test_loss))

    def to_dict(self) -> dict:
        """JSON-ready: lists of floats plus ``mean_test_accuracy``."""
        return {
            "epoch": self.epoch,
            "folds": list(self.folds),
            "train_loss": [float(v) for v in self.train_loss],
            "test_loss": [float(v) for v in self.test_loss],
            "test_accuracy": [float(v) for v in self.test_accuracy],
            "mean_test_accuracy": self.mean_test_accuracy,
        }


EpochCallback = Callable[[EpochMetrics], None]


@dataclass
class FoldResult:
    """One fold's final metrics (after the last epoch) on its test part."""

    fold: int | str
    accuracy: float
    loss: float
    n_train: int
    n_test: int
    per_class_accuracy: list[float | None]  # None for a class absent from the test part
    confusion: list[list[int]]  # n_classes x n_classes, rows = true class


@dataclass
class FoldPredictions:
    """One fold's final model on its test part: the class probabilities of every test row.

    Saved by every run (``predictions.npz``) so that configurations can be ensembled under the
    same folds, and a fitted model checked against the CV run it came from.
    """

    fold: int | str
    test_index: np.ndarray  # (n_test,) int64 row indices into X
    probabilities: np.ndarray  # (n_test, n_classes) float32, each row sums to 1


@dataclass
class FittedMLP:
    """One fold's trained MLP, everything a prediction needs (plain arrays, no torch).

    ``params`` are ``(kernel, bias)`` per layer in Keras layout: kernels ``(fan_in, fan_out)``,
    biases ``(fan_out,)``, float32. ``mean``/``std`` are the standardiser fitted on the fold's
    training part, ``(n_features,)`` float64 (``None`` with ``train.standardize=false``): inputs
    are ``(X - mean) / std`` before the first layer.
    """

    fold: int | str
    params: list[tuple[np.ndarray, np.ndarray]]
    activation: str
    mean: np.ndarray | None = None
    std: np.ndarray | None = None


@dataclass
class CVResult:
    """All folds' final metrics, the per-epoch history, and the mean and std over folds.

    ``predictions`` (one :class:`FoldPredictions` per fold, split order) are always filled by the
    trainer; ``models`` only when asked for (``keep_models=True``). Neither is part of
    ``results.json``.
    """

    folds: list[FoldResult]
    history: list[EpochMetrics] = field(default_factory=list)
    mean_accuracy: float = float("nan")
    std_accuracy: float = float("nan")  # over folds, ddof=0 (0.0 for one fold)
    predictions: list[FoldPredictions] = field(default_factory=list)
    models: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready dict: ``folds``, ``history``, ``mean_accuracy``, ``std_accuracy``."""
        return {
            "folds": [asdict(f) for f in self.folds],
            "history": [h.to_dict() for h in self.history],
            "mean_accuracy": float(self.mean_accuracy),
            "std_accuracy": float(self.std_accuracy),
        }


def history_row(m: EpochMetrics) -> dict[str, Any]:
    """One epoch as ``results.json``'s ``history`` lists it (no ``folds``: ``folds`` says them)."""
    return {
        "epoch": int(m.epoch),
        "train_loss": [float(v) for v in m.train_loss],
        "test_loss": [float(v) for v in m.test_loss],
        "test_accuracy": [float(v) for v in m.test_accuracy],
        "mean_test_accuracy": float(m.mean_test_accuracy),
    }


@dataclass
class RunResult:
    """One run: where its data came from, how it was evaluated, and its :class:`CVResult`.

    ``status`` is ``"complete"`` or ``"pruned"`` (then ``pruned_at_epoch`` is set, ``cv`` is
    ``None``, ``history`` holds the epochs trained and ``mean_accuracy`` is the value reported at
    the last one). ``durations`` are seconds per stage (``index``, ``features``, ``train``,
    ``figures``: the run's own, ``total``). ``leaky_recordings`` lists the recordings whose slices
    the metadata puts in more than one fold (``{"fsID", "folds"}``); ``tracking`` is the
    tracker's :meth:`info` (experiment key, mode, archive) or ``None`` without a tracker.
    """

    status: str
    dataset: str  # "urbansound8k" or "demo"
    data_root: str
    protocol: str  # human label; the random split says LEAKY
    leaky: bool
    n_listed: int
    n_clips: int
    n_missing: int
    empty_folds: list[int]
    skipped: list[str]
    class_names: list[str]
    n_features: int
    overrides: list[str]
    trial: dict[str, Any]  # {"study_name": ..., "number": ...} in a sweep, else Nones
    leaky_recordings: list[dict[str, Any]] = field(default_factory=list)
    cv: CVResult | None = None
    history: list[EpochMetrics] = field(default_factory=list)
    mean_accuracy: float = float("nan")
    std_accuracy: float = float("nan")
    pruned_at_epoch: int | None = None
    durations: dict[str, float] = field(default_factory=dict)
    tracking: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # further JSON-ready fields

    @property
    def epochs(self) -> list[EpochMetrics]:
        """The per-epoch metrics: the CV result's, or those trained before pruning."""
        return self.cv.history if self.cv is not None and self.cv.history else self.history

    def to_dict(self) -> dict[str, Any]:
        """The ``results.json`` payload (JSON-ready); keys pinned by ``tests/test_results.py``."""
        out: dict[str, Any] = {
            "status": self.status,
            "dataset": self.dataset,
            "data_root": self.data_root,
            "protocol": self.protocol,
            "leaky": self.leaky,
            "n_listed": self.n_listed,
            "n_clips": self.n_clips,
            "n_missing": self.n_missing,
            "empty_folds": list(self.empty_folds),
            "leaky_recordings": [dict(r) for r in self.leaky_recordings],
            "skipped": list(self.skipped),
            "class_names": list(self.class_names),
            "n_features": self.n_features,
            "overrides": list(self.overrides),
            "trial": dict(self.trial),
            **self.extra,
        }
        if self.status == "pruned":
            out["pruned_at_epoch"] = self.pruned_at_epoch
        complete = self.cv is not None and self.status == "complete"
        if complete:
            assert self.cv is not None
            out["folds"] = [asdict(f) for f in self.cv.folds]
        out["mean_accuracy"] = float(self.mean_accuracy)
        if complete:
            out["std_accuracy"] = float(self.std_accuracy)
        out["history"] = [history_row(h) for h in self.epochs]
        out["durations"] = dict(self.durations)
        if self.tracking is not None:
            out["tracking"] = dict(self.tracking)
        return out
