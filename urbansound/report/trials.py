"""A study's trials ready to report: :class:`TrialRecord` and :class:`Sweep`.

A :class:`TrialRecord` is one trial (or one evaluation run) in plain values: its Optuna fields
and what its run directory holds (``results.json`` as a typed
:class:`~urbansound.training.results.RunResult`, the resolved ``config.yaml``). A
:class:`Sweep` is a study's records plus the run directories given besides them;
:mod:`urbansound.report.load` builds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from urbansound.sweep.records import StudyRecords, StudyTrial, is_leaky
from urbansound.training.results import FoldResult, RunResult

__all__ = ["LEAKY", "Sweep", "TrialRecord", "finite", "fmt_param"]

#: The word every output puts beside a run on the random 80/20 split.
LEAKY = "LEAKY"


@dataclass
class TrialRecord:
    """One trial (or one evaluation run): its Optuna fields and its run directory's content."""

    number: int | None
    state: str  # COMPLETE | PRUNED | FAIL | RUNNING | WAITING
    value: float | None
    params: dict[str, Any] = field(default_factory=dict)
    duration_s: float | None = None
    run_dir: Path | None = None
    results: RunResult | None = None
    config: dict[str, Any] | None = None
    error: str | None = None

    @property
    def leaky(self) -> bool:
        """True for the random-split protocol (slices of one recording in train and test)."""
        return is_leaky(self.results, self.config, self.params)

    @property
    def outer_fold(self) -> int | None:
        """The fold held out of the search (``cv.outer_fold``), if any."""
        cv = (self.config or {}).get("cv") or {}
        k = cv.get("outer_fold")
        return int(k) if k is not None else None

    @property
    def folds(self) -> list[FoldResult]:
        """The run's per-fold results (empty when it has none: pruned, or no results)."""
        if self.results is None or self.results.cv is None:
            return []
        return list(self.results.cv.folds)

    @property
    def std(self) -> float | None:
        """Standard deviation of the per-fold accuracies (``results.json``'s ``std_accuracy``)."""
        return finite(self.results.std_accuracy) if self.results is not None else None

    @property
    def pooled_accuracy(self) -> float | None:
        """Accuracy over all test clips of all folds (each clip counts once; the objective is the
        unweighted mean over folds, which small folds sway as much as large ones)."""
        n = sum(f.n_test for f in self.folds)
        if not n:
            return None
        return sum(f.accuracy * f.n_test for f in self.folds) / n

    @property
    def dataset(self) -> str | None:
        """The run's dataset (``urbansound8k`` or ``demo``); None without results."""
        return self.results.dataset if self.results is not None else None

    @property
    def name(self) -> str:
        return f"#{self.number}" if self.number is not None else (self.run_dir or Path("?")).name

    def label(self) -> str:
        """Short text naming the configuration (its swept parameters)."""
        text = ", ".join(f"{k}={fmt_param(v)}" for k, v in sorted(self.params.items()))
        return text or "defaults"

    def protocol(self) -> str:
        """Protocol text as shown in tables (the LEAKY split says so)."""
        if self.results is not None and self.results.protocol:
            text = self.results.protocol
        else:
            text = "random_split" if self.leaky else "folds"
        if self.leaky and LEAKY not in text:
            text += f" ({LEAKY})"
        return text

    def study_trial(self) -> StudyTrial:
        """The record as a plain Optuna trial (per-epoch values from ``results.json``)."""
        epochs = self.results.epochs if self.results is not None else []
        return StudyTrial(
            number=self.number if self.number is not None else -1,
            state=self.state,
            value=self.value,
            params=dict(self.params),
            intermediate_values={m.epoch: m.mean_test_accuracy for m in epochs},
            duration_s=self.duration_s,
        )


@dataclass
class Sweep:
    """A study's trials, ready to report.

    ``study`` holds the Optuna side in plain values (from the storage, or rebuilt from the run
    directories); ``records`` adds each trial's run directory, plus run directories given besides
    the study's own (``number`` None: compared, never ranked).
    """

    name: str
    source: str
    direction: str
    records: list[TrialRecord]
    study: StudyRecords
    storage: str | None = None
    fixed: dict[str, Any] = field(default_factory=dict)  # overrides shared by every job
    paths: list[Path] = field(default_factory=list)  # the directories given on the command line

    @property
    def trials(self) -> list[TrialRecord]:
        """The study's trials (records with a number)."""
        return [r for r in self.records if r.number is not None]


def fmt_param(v: Any) -> str:
    """A parameter value as shown: floats with 4 significant digits (``0.003162``)."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def finite(value: float | None) -> float | None:
    """``value`` when it is a finite number, else None (a NaN or infinite figure is no figure)."""
    return value if value is not None and math.isfinite(value) else None
