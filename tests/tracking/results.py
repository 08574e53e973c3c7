"""Typed results as the run hands them to the tracker, for the tracking tests."""

from __future__ import annotations

import numpy as np

from urbansound.training.results import CVResult, EpochMetrics, FoldResult, RunResult

CLASSES = ["air_conditioner", "car_horn", "siren"]


def epoch_metrics(epoch: int, acc: list[float]) -> EpochMetrics:
    """One epoch's metrics over ``len(acc)`` folds, with test accuracies ``acc``."""
    n = len(acc)
    return EpochMetrics(
        epoch=epoch,
        folds=list(range(1, n + 1)),
        train_loss=np.linspace(1.0, 0.5, n) / epoch,
        test_loss=np.linspace(1.2, 0.6, n) / epoch,
        test_accuracy=np.array(acc),
    )


def run_result(
    status: str = "complete", *, epochs: int = 2, trial: dict | None = None
) -> RunResult:
    confusions = [[[2, 1, 0], [0, 3, 0], [0, 0, 1]], [[1, 0, 0], [1, 2, 0], [0, 1, 2]]]
    folds = [
        FoldResult(
            fold=k + 1,
            accuracy=float(np.trace(cm) / np.sum(cm)),
            loss=0.5 + k,
            n_train=20,
            n_test=int(np.sum(cm)),
            per_class_accuracy=[cm[i][i] / sum(cm[i]) for i in range(3)],
            confusion=cm,
        )
        for k, cm in enumerate(confusions)
    ]
    history = [epoch_metrics(e, [0.5 + 0.1 * e, 0.4 + 0.1 * e]) for e in range(1, epochs + 1)]
    accs = [f.accuracy for f in folds]
    return RunResult(
        status=status,
        dataset="demo",
        data_root="/data/demo",
        protocol="2-fold CV (official folds)",
        leaky=False,
        n_listed=15,
        n_clips=15,
        n_missing=0,
        empty_folds=[],
        skipped=[],
        class_names=CLASSES,
        n_features=40,
        overrides=["n_mfcc=13"],
        trial=trial or {"study_name": None, "number": None},
        cv=CVResult(folds=folds, history=history, mean_accuracy=float(np.mean(accs))),
        mean_accuracy=float(np.mean(accs)) if status == "complete" else 0.55,
        std_accuracy=float(np.std(accs)),
        pruned_at_epoch=epochs if status == "pruned" else None,
    )
