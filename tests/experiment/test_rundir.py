"""The run directory's one writer and reader: results.json through RunResult, predictions.npz in
the run's schema, config.yaml; every file read back is checked and named when it is not right."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from urbansound.errors import DataError
from urbansound.experiment.rundir import (
    FOLD_COLUMNS,
    Predictions,
    read_config,
    read_predictions,
    read_results,
    write_config,
    write_folds,
    write_predictions,
    write_results,
)
from urbansound.training.results import (
    CVResult,
    EpochMetrics,
    FoldPredictions,
    FoldResult,
    RunResult,
)

CLASSES = ["a", "b", "c"]


def _result() -> RunResult:
    folds = [
        FoldResult(1, 0.5, 0.9, 4, 2, [1.0, 0.0, None], [[1, 1, 0], [0, 0, 0], [0, 0, 0]]),
        FoldResult(2, 1.0, 0.1, 4, 2, [None, 1.0, 1.0], [[0, 0, 0], [0, 1, 0], [0, 0, 1]]),
    ]
    history = [
        EpochMetrics(e, [1, 2], np.array([1.0, 0.9]), np.array([1.1, 0.8]), np.array([0.5, 1.0]))
        for e in (1, 2)
    ]
    return RunResult(
        status="complete",
        dataset="demo",
        data_root="/data",
        protocol="folds",
        leaky=False,
        n_listed=6,
        n_clips=6,
        n_missing=0,
        empty_folds=[3],
        skipped=[],
        class_names=CLASSES,
        n_features=13,
        overrides=["n_mfcc=13"],
        trial={"study_name": None, "number": None},
        cv=CVResult(folds=folds, history=history, mean_accuracy=0.75, std_accuracy=0.25),
        mean_accuracy=0.75,
        std_accuracy=0.25,
        durations={"index": 0.1, "total": 1.0},
    )


def test_results_json_reads_back_as_the_result_it_was_written_from(tmp_path: Path) -> None:
    result = _result()
    path = write_results(tmp_path, result)
    assert path == tmp_path / "results.json"
    assert json.loads(path.read_text()) == json.loads(json.dumps(result.to_dict()))
    back = read_results(tmp_path)
    assert back.to_dict() == result.to_dict()
    assert [f.accuracy for f in back.cv.folds] == [0.5, 1.0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"results\.json not found: the run did not finish"),
        ("{not json", r"results\.json is not JSON"),
        ("[1, 2]", r"results\.json: not a JSON object"),
        ("DROP n_clips", r"results\.json: no 'n_clips'"),
        ("SET leaky=yes", r"results\.json: 'leaky' must be bool, got str"),
    ],
)
def test_a_results_json_that_is_not_right_is_one_line_naming_it(
    tmp_path: Path, content: str | None, message: str
) -> None:
    payload = _result().to_dict()
    if content is not None and content.startswith("DROP "):
        payload.pop(content.removeprefix("DROP "))
        content = json.dumps(payload)
    elif content is not None and content.startswith("SET "):
        key, value = content.removeprefix("SET ").split("=")
        content = json.dumps({**payload, key: value})
    if content is not None:
        (tmp_path / "results.json").write_text(content)
    with pytest.raises(DataError, match=message) as info:
        read_results(tmp_path)
    assert str(tmp_path / "results.json") in str(info.value) and "\n" not in str(info.value)


def test_folds_csv_has_one_row_per_fold(tmp_path: Path) -> None:
    path = write_folds(tmp_path, _result())
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(FOLD_COLUMNS)
    assert lines[1:] == ["1,0.5,0.9,4,2", "2,1.0,0.1,4,2"]


def _predictions() -> Predictions:
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=6).astype(np.float32)
    folds = [
        FoldPredictions(2, np.array([3, 4, 5]), probs[3:]),
        FoldPredictions(1, np.array([0, 1, 2]), probs[:3]),
    ]
    clips = [f"c{i}.wav" for i in range(6)]
    return Predictions.of_folds(
        folds, clips=clips, y=np.array([0, 1, 2, 0, 1, 2]), class_names=CLASSES
    )


def test_predictions_are_the_trainers_rows_in_split_order_and_read_back(tmp_path: Path) -> None:
    preds = _predictions()
    assert preds.fold.tolist() == ["2", "2", "2", "1", "1", "1"]
    assert preds.index.tolist() == [3, 4, 5, 0, 1, 2]
    assert preds.clip.tolist() == ["c3.wav", "c4.wav", "c5.wav", "c0.wav", "c1.wav", "c2.wav"]
    assert preds.y_true.tolist() == [0, 1, 2, 0, 1, 2]
    assert preds.probabilities.dtype == np.float32 and preds.probabilities.shape == (6, 3)
    path = write_predictions(tmp_path, preds)
    with np.load(path) as z:  # the run's schema, and nothing else
        assert sorted(z.files) == sorted(
            ["fold", "clip", "index", "y_true", "probabilities", "class_names"]
        )
    back = read_predictions(tmp_path)
    for name in ("fold", "clip", "index", "y_true", "probabilities", "class_names"):
        np.testing.assert_array_equal(getattr(back, name), getattr(preds, name))


def test_predictions_that_are_not_right_are_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "predictions.npz"
    with pytest.raises(DataError, match=r"predictions\.npz not found"):
        read_predictions(tmp_path)
    path.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(DataError, match=r"cannot read .*predictions\.npz .*damaged"):
        read_predictions(tmp_path)
    preds = _predictions()
    arrays = {k: getattr(preds, k) for k in ("fold", "clip", "index", "y_true", "class_names")}
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=r"is no run's predictions \(no probabilities\)"):
        read_predictions(tmp_path)
    np.savez(path, **arrays, probabilities=preds.probabilities[:5])
    with pytest.raises(DataError, match=r"its arrays disagree in length"):
        read_predictions(tmp_path)
    np.savez(
        path, **{**arrays, "class_names": np.array(["a", "b"])}, probabilities=preds.probabilities
    )
    with pytest.raises(DataError, match=r"not clips x classes") as info:
        read_predictions(tmp_path)
    assert str(path) in str(info.value)


def test_config_yaml_reads_back_and_holds_a_mapping(tmp_path: Path) -> None:
    config = {"n_mfcc": 13, "model": {"hidden": [64, 32]}}
    write_config(tmp_path, config)
    assert read_config(tmp_path) == config
    (tmp_path / "config.yaml").write_text("- a list\n")
    with pytest.raises(DataError, match=r"config\.yaml holds no configuration"):
        read_config(tmp_path)
    (tmp_path / "config.yaml").write_text("a: [unclosed\n")
    with pytest.raises(DataError, match=r"cannot read .*config\.yaml") as info:
        read_config(tmp_path)
    assert "\n" not in str(info.value)
