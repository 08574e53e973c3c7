"""The run directory: the one writer and reader of the files a run or a fit leaves there.

A run (``python -m urbansound.run``; each job of a sweep) writes:

- ``config.yaml``: the resolved configuration (:func:`write_config`, :func:`read_config`);
- ``results.json``: :meth:`RunResult.to_dict <urbansound.training.results.RunResult.to_dict>`
  (:func:`write_results`), read back with every value checked by
  :meth:`RunResult.from_dict <urbansound.training.results.RunResult.from_dict>`
  (:func:`read_results`);
- ``folds.csv``: one row per fold, :data:`FOLD_COLUMNS` (:func:`write_folds`);
- ``predictions.npz``: every test clip's class probabilities (:class:`Predictions`,
  :func:`write_predictions`, :func:`read_predictions`).

A fit (``python -m urbansound.fit``) writes ``config.yaml``, ``predictions.npz`` (the same
arrays, its test part as one fold) and ``fit.json`` (:func:`write_fit_summary`) beside its model
file. Every file is written atomically (:func:`urbansound.utils.files.atomic_write`): a reader
sees the old file or the new one, never half of one. Everything read is checked: a file that is
missing, unreadable or malformed is a :class:`~urbansound.errors.DataError` whose one line names
it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from urbansound.errors import DataError
from urbansound.training.results import FoldPredictions, RunResult
from urbansound.utils.files import atomic_write, output_error, write_json

__all__ = [
    "CONFIG_FILE",
    "FIT_FILE",
    "FOLDS_FILE",
    "FOLD_COLUMNS",
    "PREDICTIONS_FILE",
    "RESULTS_FILE",
    "Predictions",
    "make_run_dir",
    "read_config",
    "read_predictions",
    "read_results",
    "write_config",
    "write_fit_summary",
    "write_folds",
    "write_predictions",
    "write_results",
]

CONFIG_FILE = "config.yaml"
RESULTS_FILE = "results.json"
FOLDS_FILE = "folds.csv"
PREDICTIONS_FILE = "predictions.npz"
FIT_FILE = "fit.json"
#: The columns of ``folds.csv`` (and of the per-fold table a run prints).
FOLD_COLUMNS = ("fold", "accuracy", "loss", "n_train", "n_test")
_AGAIN = "the file is damaged or was not written by urbansound: run that run or trial again"


def make_run_dir(run_dir: str | Path) -> Path:
    """Create ``run_dir`` (and its parents) if needed; return it.

    Raises
    ------
    OutputError
        It cannot be made (a file in the way, read-only, a full disk).
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(run_dir, exc) from exc
    return run_dir


# --------------------------------------------------------------------------------------------
# config.yaml


def write_config(run_dir: str | Path, config: Mapping[str, Any]) -> Path:
    """Write the resolved configuration (plain containers) as ``config.yaml``; return its path."""
    from omegaconf import OmegaConf

    return atomic_write(Path(run_dir) / CONFIG_FILE, OmegaConf.to_yaml(dict(config)))


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The configuration a run directory's ``config.yaml`` holds, as plain containers.

    Nothing in it is instantiated or trusted: check it with
    :func:`urbansound.config.checks.settings_from_config` before use.

    Raises
    ------
    DataError
        The file is missing, unreadable, not YAML or holds no mapping; the message names it.
    """
    import yaml

    path = Path(run_dir) / CONFIG_FILE
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())
        raise DataError(f"cannot read {path} ({reason})") from None
    if not isinstance(config, dict):
        raise DataError(f"{path} holds no configuration")
    return config


# --------------------------------------------------------------------------------------------
# results.json and folds.csv


def write_results(run_dir: str | Path, result: RunResult) -> Path:
    """Write ``result.to_dict()`` as ``results.json`` (once, atomically); return its path."""
    return write_json(Path(run_dir) / RESULTS_FILE, result.to_dict())


def read_results(run_dir: str | Path) -> RunResult:
    """The :class:`~urbansound.training.results.RunResult` of a run directory's
    ``results.json``, every value checked.

    Raises
    ------
    DataError
        The file is missing, unreadable, not JSON, or a key is missing or of the wrong type;
        one line naming the file (and the key).
    """
    path = Path(run_dir) / RESULTS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path} not found: the run did not finish; run it again") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path} ({exc}); {_AGAIN}") from None
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise DataError(f"{path} is not JSON ({exc}); {_AGAIN}") from None
    return RunResult.from_dict(payload, where=str(path))


def write_folds(run_dir: str | Path, result: RunResult) -> Path:
    """Write ``folds.csv``: one row per fold of a complete run, :data:`FOLD_COLUMNS`."""
    import pandas as pd

    if result.cv is None:
        raise ValueError("a run without a CV result has no folds")
    frame = pd.DataFrame([{k: getattr(f, k) for k in FOLD_COLUMNS} for f in result.cv.folds])
    return atomic_write(Path(run_dir) / FOLDS_FILE, frame.to_csv(index=False, lineterminator="\n"))


# --------------------------------------------------------------------------------------------
# predictions.npz


@dataclass(frozen=True)
class Predictions:
    """Every test clip's class probabilities, by fold: ``predictions.npz``.

    One row per test clip, folds in split order (a fit: its test part as one fold). The report
    averages these across configurations (ensembles) under the same folds; a fitted model is
    checked against the CV run it came from.

    Attributes
    ----------
    fold:
        ``(n,)`` str: the label of the split that tested the clip (``"1"`` .. ``"10"``,
        ``"random"``; a fit's ``"all"`` or its held-out fold).
    clip:
        ``(n,)`` str: the clip's ``slice_file_name``.
    index:
        ``(n,)`` int64: the clip's row in the run's table of clips with features.
    y_true:
        ``(n,)`` int64: the true class id.
    probabilities:
        ``(n, n_classes)`` float32: the class probabilities, rows summing to 1.
    class_names:
        ``(n_classes,)`` str: the class names by class id.
    """

    fold: np.ndarray
    clip: np.ndarray
    index: np.ndarray
    y_true: np.ndarray
    probabilities: np.ndarray
    class_names: np.ndarray

    @classmethod
    def of_folds(
        cls,
        folds: Sequence[FoldPredictions],
        *,
        clips: Sequence[str] | np.ndarray,
        y: np.ndarray,
        class_names: Sequence[str],
    ) -> Predictions:
        """The rows of the trainer's per-fold predictions; ``clips`` ``(n_clips,)`` and ``y``
        ``(n_clips,)`` are the names and class ids of the clips the folds index."""
        n_classes = len(class_names)
        index = np.concatenate([np.zeros(0, np.int64), *(p.test_index for p in folds)])
        probabilities = np.concatenate(
            [np.zeros((0, n_classes), np.float32), *(p.probabilities for p in folds)]
        )
        labels = [np.full(len(p.test_index), str(p.fold)) for p in folds]
        return cls(
            fold=np.concatenate(labels) if labels else np.zeros(0, dtype=str),
            clip=np.asarray(clips, dtype=str)[index],
            index=index.astype(np.int64),
            y_true=np.asarray(y, dtype=np.int64)[index],
            probabilities=probabilities.astype(np.float32),
            class_names=np.asarray(list(class_names), dtype=str),
        )


_PREDICTION_ARRAYS = ("fold", "clip", "index", "y_true", "probabilities", "class_names")


def write_predictions(run_dir: str | Path, predictions: Predictions) -> Path:
    """Write ``predictions.npz`` (compressed, atomically); return its path."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: getattr(predictions, k) for k in _PREDICTION_ARRAYS})
    return atomic_write(Path(run_dir) / PREDICTIONS_FILE, buf.getvalue())


def read_predictions(run_dir: str | Path) -> Predictions:
    """The :class:`Predictions` of a run directory's ``predictions.npz``, checked.

    Raises
    ------
    DataError
        The file is missing, not an npz, lacks an array, or its arrays disagree in length, kind
        or class count; one line naming the file.
    """
    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        raise DataError(f"{path} not found: a run writes it when it completes; run it again")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k in _PREDICTION_ARRAYS}
    except Exception as exc:  # truncated or not an npz: BadZipFile, EOFError, ValueError, ...
        raise DataError(f"cannot read {path} ({type(exc).__name__}: {exc}); {_AGAIN}") from None
    missing = [k for k in _PREDICTION_ARRAYS if k not in arrays]
    if missing:
        raise DataError(f"{path} is no run's predictions (no {', '.join(missing)}); {_AGAIN}")
    kinds = {"fold": "U", "clip": "U", "index": "iu", "y_true": "iu", "class_names": "U"}
    wrong = [k for k, kd in kinds.items() if arrays[k].ndim != 1 or arrays[k].dtype.kind not in kd]
    probabilities = arrays["probabilities"]
    n = len(arrays["index"])
    if (
        wrong
        or probabilities.ndim != 2
        or probabilities.dtype.kind != "f"
        or probabilities.shape[1] != len(arrays["class_names"])
        or any(len(arrays[k]) != n for k in ("fold", "clip", "y_true", "probabilities"))
    ):
        raise DataError(
            f"{path}: its arrays disagree in length or kind (or probabilities is not clips x "
            f"classes); {_AGAIN}"
        )
    return Predictions(
        fold=arrays["fold"],
        clip=arrays["clip"],
        index=arrays["index"].astype(np.int64),
        y_true=arrays["y_true"].astype(np.int64),
        probabilities=probabilities.astype(np.float32, copy=False),
        class_names=arrays["class_names"],
    )


# --------------------------------------------------------------------------------------------
# fit.json


def write_fit_summary(run_dir: str | Path, summary: Mapping[str, Any]) -> Path:
    """Write a fit's summary as ``fit.json`` (atomically); return its path."""
    return write_json(Path(run_dir) / FIT_FILE, dict(summary))
