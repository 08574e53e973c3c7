"""The typed result of a run: what the trainer returns and every sink (run directory, Comet, the
Optuna reporter, the report) receives.

Plain types only (dataclasses of numbers, strings, lists and numpy arrays), so that a sink can
import this module without importing the pipeline. ``RunResult.to_dict()`` is the content of a run
directory's ``results.json``; its field names are pinned by ``tests/training/test_results.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from urbansound.errors import DataError

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


# --------------------------------------------------------------------------------------------
# Reading back: results.json is read from disk, so every value is checked before it is trusted.


def _get(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``d[key]`` when it has type ``kind`` (an int is a float too; a bool is no number)."""
    if key not in d:
        raise DataError(f"{where}: no {key!r}")
    value = d[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and bool not in kinds:
        raise DataError(f"{where}: {key!r} must be {_names(kinds)}, got {value!r}")
    if not isinstance(value, kinds):
        raise DataError(f"{where}: {key!r} must be {_names(kinds)}, got {type(value).__name__}")
    return value


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)


def _floats(d: Mapping[str, Any], key: str, where: str) -> np.ndarray:
    values = _get(d, key, list, where)
    out = []
    for v in values:
        if v is None:  # a NaN written by an older json encoder as null
            out.append(math.nan)
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out.append(float(v))
        else:
            raise DataError(f"{where}: {key!r} must be a list of numbers, got {v!r}")
    return np.asarray(out, dtype=np.float64)


def _mapping(value: Any, key: str, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise DataError(f"{where}: {key!r} must list mappings, got {value!r}")
    return dict(value)


def _fold_label(value: Any, where: str) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise DataError(f"{where}: a fold label must be an integer or a string, got {value!r}")
    return value


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

    @classmethod
    def from_dict(
        cls, d: Mapping[str, Any], *, folds: list[int | str] | None = None, where: str = "history"
    ) -> EpochMetrics:
        """The inverse of :meth:`to_dict`, and of :func:`history_row` given the run's ``folds``.

        Raises
        ------
        DataError
            A missing key or a value of the wrong type, naming it.
        """
        if not isinstance(d, Mapping):
            raise DataError(f"{where}: an epoch must be a mapping, got {type(d).__name__}")
        if "folds" in d:
            labels = [_fold_label(f, where) for f in _get(d, "folds", list, where)]
        else:
            labels = list(folds or [])
        metrics = cls(
            epoch=_get(d, "epoch", int, where),
            folds=labels,
            train_loss=_floats(d, "train_loss", where),
            test_loss=_floats(d, "test_loss", where),
            test_accuracy=_floats(d, "test_accuracy", where),
        )
        n = len(metrics.test_accuracy)
        if len(metrics.train_loss) != n or len(metrics.test_loss) != n:
            raise DataError(f"{where}: epoch {metrics.epoch} has lists of different lengths")
        if labels and len(labels) != n:
            raise DataError(
                f"{where}: epoch {metrics.epoch} has {n} values for {len(labels)} folds"
            )
        return metrics


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

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "folds") -> FoldResult:
        """The inverse of ``dataclasses.asdict``: one entry of ``results.json``'s ``folds``.

        Raises
        ------
        DataError
            A missing key, a value of the wrong type, or a confusion matrix that is not square
            with one row per class, naming it.
        """
        if not isinstance(d, Mapping):
            raise DataError(f"{where}: a fold must be a mapping, got {type(d).__name__}")
        per_class = _get(d, "per_class_accuracy", list, where)
        if any(v is not None and not isinstance(v, int | float) for v in per_class):
            raise DataError(f"{where}: 'per_class_accuracy' must list numbers or nulls")
        confusion = _get(d, "confusion", list, where)
        n = len(confusion)
        if any(
            not isinstance(row, list)
            or len(row) != n
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in row)
            for row in confusion
        ):
            raise DataError(f"{where}: 'confusion' must be a square matrix of counts")
        if per_class and n and len(per_class) != n:
            raise DataError(f"{where}: {len(per_class)} per-class accuracies for {n} classes")
        return cls(
            fold=_fold_label(_get(d, "fold", (int, str), where), where),
            accuracy=_get(d, "accuracy", float, where),
            loss=_get(d, "loss", (float, type(None)), where),
            n_train=_get(d, "n_train", int, where),
            n_test=_get(d, "n_test", int, where),
            per_class_accuracy=[None if v is None else float(v) for v in per_class],
            confusion=[list(row) for row in confusion],
        )


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
    skipped: list[dict[str, Any]]  # {"path", "error"} of each clip left out (on_error=skip)
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
        """The ``results.json`` payload (JSON-ready); keys pinned by
        ``tests/training/test_results.py``."""
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

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "results.json") -> RunResult:
        """The inverse of :meth:`to_dict`: ``RunResult.from_dict(r.to_dict()).to_dict()`` equals
        ``r.to_dict()``. Keys :meth:`to_dict` does not write go to ``extra``; ``cv`` is rebuilt
        for a complete run (its ``predictions`` and ``models`` are not in ``results.json``).

        Raises
        ------
        DataError
            A missing key or a value of the wrong type, naming it (``where`` names the file).
        """
        if not isinstance(d, Mapping):
            raise DataError(f"{where}: not a JSON object")
        status = _get(d, "status", str, where)
        folds = [
            FoldResult.from_dict(f, where=f"{where}: folds[{i}]")
            for i, f in enumerate(_get(d, "folds", list, where) if "folds" in d else [])
        ]
        labels = [f.fold for f in folds]
        history = [
            EpochMetrics.from_dict(h, folds=labels, where=f"{where}: history[{i}]")
            for i, h in enumerate(_get(d, "history", list, where) if "history" in d else [])
        ]
        mean = (
            _get(d, "mean_accuracy", (float, type(None)), where) if "mean_accuracy" in d else None
        )
        std = _get(d, "std_accuracy", (float, type(None)), where) if "std_accuracy" in d else None
        mean = math.nan if mean is None else mean
        std = math.nan if std is None else std
        cv = None
        if status == "complete" and "folds" in d:
            cv = CVResult(folds=folds, history=history, mean_accuracy=mean, std_accuracy=std)
        tracking = d.get("tracking")
        if tracking is not None and not isinstance(tracking, Mapping):
            raise DataError(f"{where}: 'tracking' must be a mapping")
        durations = _get(d, "durations", dict, where) if "durations" in d else {}
        if any(not isinstance(v, int | float) or isinstance(v, bool) for v in durations.values()):
            raise DataError(f"{where}: 'durations' must map stages to seconds")
        pruned_at = d.get("pruned_at_epoch")
        if pruned_at is not None and (
            isinstance(pruned_at, bool) or not isinstance(pruned_at, int)
        ):
            raise DataError(f"{where}: 'pruned_at_epoch' must be an integer")
        trial = _get(d, "trial", dict, where)
        known = {f.name for f in fields(cls)} | {"folds"}
        return cls(
            status=status,
            dataset=_get(d, "dataset", str, where),
            data_root=_get(d, "data_root", str, where),
            protocol=_get(d, "protocol", str, where),
            leaky=_get(d, "leaky", bool, where),
            n_listed=_get(d, "n_listed", int, where),
            n_clips=_get(d, "n_clips", int, where),
            n_missing=_get(d, "n_missing", int, where),
            empty_folds=list(_get(d, "empty_folds", list, where)),
            skipped=[_mapping(v, "skipped", where) for v in _get(d, "skipped", list, where)],
            class_names=[str(v) for v in _get(d, "class_names", list, where)],
            n_features=_get(d, "n_features", int, where),
            overrides=[str(v) for v in _get(d, "overrides", list, where)],
            trial=dict(trial),
            leaky_recordings=[
                _mapping(r, "leaky_recordings", where) for r in d.get("leaky_recordings") or []
            ],
            cv=cv,
            history=[] if cv is not None else history,
            mean_accuracy=mean,
            std_accuracy=std,
            pruned_at_epoch=pruned_at,
            durations={str(k): float(v) for k, v in durations.items()},
            tracking=dict(tracking) if tracking is not None else None,
            extra={k: v for k, v in d.items() if k not in known},
        )
