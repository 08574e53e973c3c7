"""results.json's fields, pinned: what a run writes today is what sinks and the report read."""

from __future__ import annotations

import json

import numpy as np
import pytest

from urbansound.errors import DataError
from urbansound.training.results import CVResult, EpochMetrics, FoldResult, RunResult
from urbansound.utils.files import write_json

HEAD = [
    "status",
    "dataset",
    "data_root",
    "protocol",
    "leaky",
    "n_listed",
    "n_clips",
    "n_missing",
    "empty_folds",
    "leaky_recordings",
    "skipped",
    "class_names",
    "n_features",
    "overrides",
    "trial",
]
COMPLETE_KEYS = [*HEAD, "folds", "mean_accuracy", "std_accuracy", "history", "durations"]
PRUNED_KEYS = [*HEAD, "pruned_at_epoch", "mean_accuracy", "history", "durations"]
HISTORY_KEYS = ["epoch", "train_loss", "test_loss", "test_accuracy", "mean_test_accuracy"]
FOLD_KEYS = ["fold", "accuracy", "loss", "n_train", "n_test", "per_class_accuracy", "confusion"]
TRACKING_KEYS = {"mode", "experiment_key", "archive"}


def _epoch(e: int) -> EpochMetrics:
    return EpochMetrics(
        epoch=e,
        folds=[1, 2],
        train_loss=np.array([1.0, 1.5]) / e,
        test_loss=np.array([1.2, 1.3]) / e,
        test_accuracy=np.array([0.5, 0.7]),
    )


def _result(status: str) -> RunResult:
    r = RunResult(
        status=status,
        dataset="demo",
        data_root="/data",
        protocol="folds",
        leaky=False,
        n_listed=4,
        n_clips=4,
        n_missing=0,
        empty_folds=[3],
        skipped=[{"path": "/data/x.wav", "error": "not a sound file"}],
        class_names=["a", "b"],
        n_features=13,
        overrides=["n_mfcc=13"],
        trial={"study_name": None, "number": None},
        leaky_recordings=[{"fsID": 7, "folds": [1, 2]}],
        durations={"index": 0.1, "features": 0.2, "train": 0.3, "figures": 0.1, "total": 0.7},
        tracking={"mode": "offline", "experiment_key": "k", "archive": "/a/k.zip"},
    )
    history = [_epoch(1), _epoch(2)]
    if status == "complete":
        folds = [
            FoldResult(k, 0.5 + 0.2 * i, 1.0, 2, 2, [0.5, None], [[1, 1], [0, 0]])
            for i, k in enumerate((1, 2))
        ]
        r.cv = CVResult(folds=folds, history=history, mean_accuracy=0.6, std_accuracy=0.1)
        r.mean_accuracy, r.std_accuracy = 0.6, 0.1
    else:
        r.history, r.pruned_at_epoch, r.mean_accuracy = history, 2, 0.6
    return r


def test_complete_run_keys_are_pinned(tmp_path) -> None:
    path = write_json(tmp_path / "results.json", _result("complete").to_dict())
    out = json.loads(path.read_text())
    assert list(out) == [*COMPLETE_KEYS, "tracking"]
    assert [list(h) for h in out["history"]] == [HISTORY_KEYS, HISTORY_KEYS]
    assert list(out["folds"][0]) == FOLD_KEYS
    assert set(out["tracking"]) >= TRACKING_KEYS
    assert out["leaky_recordings"] == [{"fsID": 7, "folds": [1, 2]}]
    assert out["history"][1]["train_loss"] == [0.5, 0.75]
    assert out["history"][0]["mean_test_accuracy"] == 0.6
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_pruned_run_keys_are_pinned() -> None:
    out = _result("pruned").to_dict()
    assert list(out) == [*PRUNED_KEYS, "tracking"]
    assert out["pruned_at_epoch"] == 2
    assert [h["epoch"] for h in out["history"]] == [1, 2]


def test_without_a_tracker_there_is_no_tracking_field() -> None:
    r = _result("complete")
    r.tracking = None
    assert list(r.to_dict()) == COMPLETE_KEYS


@pytest.mark.parametrize("status", ["complete", "pruned"])
def test_from_dict_reads_back_what_to_dict_wrote(tmp_path, status) -> None:
    r = _result(status)
    r.extra = {"note": "kept"}
    path = write_json(tmp_path / "results.json", r.to_dict())
    back = RunResult.from_dict(json.loads(path.read_text()))
    assert back.to_dict() == r.to_dict()
    assert back.extra == {"note": "kept"}
    if status == "complete":
        assert back.cv is not None and [f.fold for f in back.cv.folds] == [1, 2]
        assert back.epochs[1].folds == [1, 2]
        np.testing.assert_array_equal(back.epochs[1].train_loss, [0.5, 0.75])
    else:
        assert back.cv is None and back.pruned_at_epoch == 2


def test_epoch_from_dict_is_the_inverse_of_to_dict() -> None:
    e = _epoch(3)
    back = EpochMetrics.from_dict(e.to_dict())
    assert back.to_dict() == e.to_dict()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("status"), "no 'status'"),
        (lambda d: d.update(n_clips="4"), "'n_clips' must be int, got str"),
        (lambda d: d.update(leaky=1), "'leaky' must be bool"),
        (lambda d: d["folds"][1].update(confusion=[[1, 1]]), r"folds\[1\]: 'confusion' must be"),
        (lambda d: d["folds"][0].update(accuracy=True), "'accuracy' must be float, got True"),
        (lambda d: d["history"][0].update(test_loss=[1.0]), r"history\[0\]: epoch 1 has lists"),
        (lambda d: d.update(durations={"total": "1 s"}), "'durations' must map"),
    ],
)
def test_from_dict_names_what_is_wrong(change, message) -> None:
    d = _result("complete").to_dict()
    change(d)
    with pytest.raises(DataError, match=message):
        RunResult.from_dict(d, where="run/results.json")
