"""The tracker of one open Comet experiment: what a run logs during and at its end.

:class:`Tracker` turns the run's typed result and the files it already wrote into Comet calls
(the package docstring lists what an experiment holds), each guarded so that tracking never
costs a result. :mod:`urbansound.tracking.experiments` opens the experiments.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from urbansound.tracking.archives import is_complete_archive, remove_incomplete
from urbansound.tracking.comet import CometSettings, comet_quiet
from urbansound.tracking.naming import (
    OBJECTIVE,
    finite,
    metric_key,
    reason,
    samples_tags,
)
from urbansound.training.metrics import summed_confusion
from urbansound.training.results import EpochMetrics, RunResult

if TYPE_CHECKING:
    from urbansound.config.settings import Settings

__all__ = ["MODEL_NAME", "MODEL_SUFFIXES", "WHERE_ARCHIVES_GO", "Tracker"]

#: What the warnings about an unwritable offline directory say to do.
WHERE_ARCHIVES_GO = "tracking.offline_dir (or COMET_OFFLINE_DIRECTORY) chooses another directory"

log = logging.getLogger("urbansound.tracking")

#: The run directory's files logged as assets, with their asset names.
_RUN_FILES = {
    "config.yaml": "config.yaml",
    ".hydra/config.yaml": "hydra/config.yaml",
    ".hydra/hydra.yaml": "hydra/hydra.yaml",
    ".hydra/overrides.yaml": "hydra/overrides.yaml",
    "results.json": "results.json",
    "folds.csv": "folds.csv",
    "fit.json": "fit.json",  # a final fit's summary (urbansound.fit)
}


#: Model files in the run directory that ``tracking.log_model`` logs, and their Comet model name.
MODEL_SUFFIXES = (".pt", ".pth", ".onnx", ".safetensors")


MODEL_NAME = "urbansound-mlp"


class Tracker:
    """The Comet experiment of one run; every method is safe to call and never raises.

    Attributes
    ----------
    mode:
        ``"online"``, ``"offline"``, ``"disabled"`` (``tracking.mode=disabled``) or ``"failed"``
        (the experiment could not be created; nothing is tracked).
    experiment_key:
        Comet's experiment key (``None`` when nothing is tracked).
    archive:
        The offline archive's path, ``None`` online; written by :meth:`finish`, and ``None``
        after it when it could not be written completely.
    url:
        The experiment's page, online.
    errors:
        One line per kind of logging that failed.
    """

    def __init__(
        self,
        experiment: Any = None,
        *,
        mode: str,
        settings: Settings | None = None,
        comet: CometSettings | None = None,
        swept: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        self._exp = experiment
        self.mode = mode
        self._settings = settings
        self._comet = comet
        self._swept = dict(swept or {})
        self.errors: list[str] = [error] if error else []
        self._failed: set[str] = set()
        self._ended = False
        self._last_epoch = 0
        self.experiment_key: str | None = None
        self.archive: Path | None = None
        self.url: str | None = None
        self._models: set[Path] = set()  # model files logged by log_model
        if experiment is not None:
            self.experiment_key = str(experiment.get_key())
            if mode == "offline":
                self.archive = Path(experiment.offline_directory) / f"{self.experiment_key}.zip"
            else:
                self.url = getattr(experiment, "url", None)

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether an experiment is open for logging."""
        return self._exp is not None and not self._ended

    def info(self) -> dict[str, Any]:
        """What ``run.py`` records in ``results.json`` under ``tracking``.

        Fields: ``mode`` (as :attr:`mode`), ``experiment_key``, ``archive`` (the offline archive's
        path, which :meth:`finish` writes; ``None`` online or when nothing is tracked), ``url``
        (online), ``project_name`` and ``workspace`` (as resolved, :func:`comet_settings`),
        ``samples_experiment`` (the tags that find the class-samples experiment of this run's
        sweep or dataset, e.g. ``["samples", "study:mfcc_grid"]``; ``None`` when nothing is
        tracked) and ``errors`` (the warnings so far, one line each).
        """
        tracked = self.experiment_key is not None and self._settings is not None
        return {
            "mode": self.mode,
            "experiment_key": self.experiment_key,
            "archive": str(self.archive) if self.archive is not None else None,
            "url": self.url,
            "project_name": self._comet.project_name if self._comet else None,
            "workspace": self._comet.workspace if self._comet else None,
            "samples_experiment": samples_tags(self._settings) if tracked else None,
            "errors": list(self.errors),
        }

    def _warn(self, message: str) -> None:
        self.errors.append(message)
        log.warning("%s", message)

    def _attempt(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call ``fn``; on failure warn once per ``what`` and return ``None``."""
        if not self.active:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            message = f"Comet: could not log {what} ({type(exc).__name__}: {exc})"
            if what not in self._failed:
                self._failed.add(what)
                self._warn(f"{message}; the run goes on without it")
            else:
                log.debug("%s", message)
            return None

    # -- during the run ---------------------------------------------------------------------

    def log_epoch(self, metrics: EpochMetrics) -> None:
        """The trainer's epoch callback (:data:`urbansound.training.results.EpochCallback`); step =
        epoch."""
        self._attempt("the epoch metrics", self._log_epoch, metrics)

    def _log_epoch(self, m: EpochMetrics) -> None:
        epoch = int(m.epoch)
        values: dict[str, float | None] = {
            "train_loss": finite(m.mean_train_loss),
            "test_loss": finite(m.mean_test_loss),
            "test_accuracy": finite(m.mean_test_accuracy),
        }
        for i, fold in enumerate(m.folds):
            k = metric_key(fold)
            values[f"train_loss_fold_{k}"] = finite(m.train_loss[i])
            values[f"test_loss_fold_{k}"] = finite(m.test_loss[i])
            values[f"test_accuracy_fold_{k}"] = finite(m.test_accuracy[i])
        kept = {name: v for name, v in values.items() if v is not None}
        self._exp.log_metrics(kept, step=epoch, epoch=epoch)
        self._last_epoch = max(self._last_epoch, epoch)

    def log_model(
        self, path: str | Path, *, name: str, metadata: Mapping[str, Any] | None = None
    ) -> bool:
        """Log a model file as the experiment's model ``name`` (Comet's ``log_model``), with
        JSON-able ``metadata``; whether it was logged. Never raises (one warning on failure);
        :meth:`finish` does not log the same file again under ``tracking.log_model``.
        """
        path = Path(path)

        def log_it() -> bool:
            self._exp.log_model(
                name,
                str(_existing(path)),
                file_name=path.name,
                metadata=json.loads(json.dumps(dict(metadata or {}), default=str)),
            )
            self._models.add(path.absolute())
            return True

        return bool(self._attempt("the model", log_it))

    # -- at the end -------------------------------------------------------------------------

    def log_results(self, result: RunResult) -> None:
        """Status and tags, per-fold and per-class metrics, confusion matrices, objective.

        ``result`` is complete or pruned; a pruned run has no ``mean_cv_accuracy`` and no
        optimization fields (its value is the one the pruner saw, in the epoch curve).
        """
        self._attempt("the run's status", self._log_status, result)
        self._attempt("the per-fold metrics", self._log_fold_metrics, result)
        self._attempt("the confusion matrix", self._log_confusion, result)
        if result.status == "complete":
            self._attempt("the optimization fields", self._log_optimization, result)

    def _step(self, result: RunResult) -> int:
        history = result.cv.history if result.cv is not None else []
        return max([self._last_epoch, *(int(h.epoch) for h in history)])

    def _folds(self, result: RunResult) -> list[Any]:
        if result.cv is None or result.status != "complete":
            return []
        return list(result.cv.folds)

    def _log_status(self, result: RunResult) -> None:
        tags = [result.dataset] if result.dataset else []
        if result.leaky:
            tags.append("leaky-split")
        if result.status != "complete":
            tags.append(result.status)
        if tags:
            self._exp.add_tags(tags)
        others = {
            "status": result.status,
            "dataset": result.dataset,
            "data_root": result.data_root,
            "protocol": result.protocol,
            "n_clips": result.n_clips,
            "n_missing": result.n_missing,
            "n_features": result.n_features,
            "pruned_at_epoch": result.pruned_at_epoch,
        }
        self._exp.log_others({k: v for k, v in others.items() if v is not None})

    def _log_fold_metrics(self, result: RunResult) -> None:
        step = self._step(result)
        values: dict[str, float | None] = {}
        folds = self._folds(result)
        for fold in folds:
            k = metric_key(fold.fold)
            values[f"accuracy_fold_{k}"] = finite(fold.accuracy)
            values[f"loss_fold_{k}"] = finite(fold.loss)
        if result.status == "complete":
            values[OBJECTIVE] = finite(result.mean_accuracy)
            values["std_cv_accuracy"] = finite(result.std_accuracy)
        total = summed_confusion(folds).tolist() if any(f.confusion for f in folds) else None
        if total is not None and len(result.class_names) == len(total):
            for i, (name, row) in enumerate(zip(result.class_names, total, strict=True)):
                if sum(row):
                    values[f"class_accuracy_{name}"] = row[i] / sum(row)
        kept = {name: v for name, v in values.items() if v is not None}
        if kept:
            self._exp.log_metrics(kept, step=step, epoch=step or None)

    def _log_confusion(self, result: RunResult) -> None:
        folds = [f for f in self._folds(result) if f.confusion]
        if not folds:
            return
        total = summed_confusion(folds).tolist()
        names = [str(n) for n in result.class_names]
        labels = names if len(names) == len(total) else [str(i) for i in range(len(total))]
        step = self._step(result)
        self._exp.log_confusion_matrix(
            matrix=total,
            labels=labels,
            title=f"Confusion matrix, summed over {len(folds)} test folds",
            file_name="confusion-matrix.json",
            step=step,
        )
        for fold in folds:
            self._exp.log_confusion_matrix(
                matrix=[[int(v) for v in row] for row in fold.confusion],
                labels=labels,
                title=f"Confusion matrix, test fold {fold.fold}",
                file_name=f"confusion-matrix-fold-{metric_key(fold.fold)}.json",
                step=step,
            )

    def _log_optimization(self, result: RunResult) -> None:
        settings = self._settings
        if settings is None or settings.trial.study_name is None:
            return
        value = finite(result.mean_accuracy)
        if value is None:
            return
        self._exp.log_optimization(
            optimization_id=settings.trial.study_name,
            metric_name=OBJECTIVE,
            metric_value=value,
            parameters=self._swept,
            objective="maximize",
        )

    def _log_run_files(self, run_dir: Path) -> None:
        for rel, name in _RUN_FILES.items():
            path = run_dir / rel
            if path.is_file():
                self._exp.log_asset(str(path), file_name=name)
        for path in sorted(run_dir.glob("*.log")):
            self._exp.log_asset(str(path), file_name=path.name)
        if self._settings is not None and self._settings.tracking.log_model:
            for path in sorted(p for p in run_dir.iterdir() if p.suffix in MODEL_SUFFIXES):
                if path.absolute() not in self._models:
                    self._exp.log_model(MODEL_NAME, str(path), file_name=path.name)

    def _log_figures(self, figures: Mapping[str, Path]) -> None:
        for name, path in figures.items():
            self._exp.log_image(str(_existing(path)), name=name)

    def log_figures(self, figures: Mapping[str, Path]) -> None:
        """Log images (name -> PNG path); never raises (one warning on failure)."""
        self._attempt("the figures", self._log_figures, dict(figures))

    def log_audio(self, class_name: str, path: Path) -> None:
        """Log a WAV file as audio with its class name in its metadata; never raises."""

        def log_it() -> None:
            wav = _existing(path)
            self._exp.log_audio(str(wav), file_name=wav.name, metadata={"class": class_name})

        self._attempt("the audio samples", log_it)

    def log_identity(self, parameters: Mapping[str, Any], others: Mapping[str, Any]) -> None:
        """Log the run's parameters (flattened config) and its identity as "others" (``None``
        values left out); never raises."""
        self._attempt("the parameters", self._exp.log_parameters, dict(parameters))
        kept = {k: v for k, v in others.items() if v is not None}
        self._attempt("the run's identity", self._exp.log_others, kept)

    def _log_failure(self, error: BaseException | None) -> None:
        self._exp.add_tags(["failed"])
        self._exp.log_other("status", "failed")
        if error is not None:
            self._exp.log_other("error", f"{type(error).__name__}: {error}"[:1000])

    def finish(
        self,
        result: RunResult | None,
        *,
        run_dir: str | Path,
        figures: Mapping[str, Path],
        error: BaseException | None = None,
    ) -> None:
        """Log the run's outcome and files, then end the experiment; never raises.

        Parameters
        ----------
        result:
            The run's result (complete or pruned), or ``None`` when the run failed.
        run_dir:
            The run directory: ``config.yaml``, ``.hydra/*.yaml`` (as ``hydra/...``),
            ``results.json``, ``folds.csv`` and ``*.log`` there are logged as assets (and model
            files with ``tracking.log_model``).
        figures:
            Image name -> PNG path of the figures the run drew, logged as images.
        error:
            The exception that ended the run, if any: the experiment is tagged ``failed``
            (when there is no result) and the error is recorded in its ``error`` other.
        """
        try:
            if self.active:
                if result is not None:
                    self.log_results(result)
                    if error is not None:
                        self._attempt(
                            "the run's error", self._exp.log_other, "error", reason(error)
                        )
                else:
                    self._attempt("the run's status", self._log_failure, error)
                self._attempt("the run directory's files", self._log_run_files, Path(run_dir))
                self.log_figures(figures)
            self.end()
        except Exception as exc:  # never into the run
            self._warn(f"Comet: could not finish the experiment ({reason(exc)})")

    def end(self) -> dict[str, Any]:
        """End the experiment (offline: write its archive); returns :meth:`info`. Idempotent.

        An archive that could not be written completely is deleted, with one warning line
        (:attr:`archive` becomes ``None``).
        """
        if not self.active:
            return self.info()
        with comet_quiet() as lines:
            self._attempt("the end of the experiment", self._exp.end)
        self._ended = True
        if self.archive is None:
            return self.info()
        written = Path(getattr(self._exp, "offline_directory", self.archive.parent))
        written /= self.archive.name
        why = next((ln for ln in lines if ln), "Comet did not write it")
        if written != self.archive and is_complete_archive(written):  # Comet's own fallback
            remove_incomplete(self.archive)
            self._warn(
                f"Comet: cannot write the offline archive to {self.archive.parent} ({why}); "
                f"it was written to {written} instead"
            )
            self.archive = written
        elif not is_complete_archive(self.archive):
            remove_incomplete(self.archive)
            remove_incomplete(written)
            self._warn(
                f"Comet: the offline archive {self.archive} could not be written ({why}); "
                f"{WHERE_ARCHIVES_GO}"
            )
            self.archive = None
        return self.info()


def _existing(path: str | Path) -> Path:
    """``path`` if it is a file (Comet would only say so later, on its own thread)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such file: {path}")
    return Path(path)
