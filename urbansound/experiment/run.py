"""One cross-validated experiment: ``python -m urbansound.run [overrides]``.

:func:`run_experiment` takes validated settings through the pipeline
(:func:`urbansound.experiment.pipeline.prepare_data`: the dataset's clips, as ``cv`` selects them,
their features, labels and folds), builds the cross-validation splits
(:func:`urbansound.data.cv.build_splits`), trains the model family on all of them
(:func:`urbansound.training.cross_validation.cross_validate`: ``model=mlp`` by default, or a
scikit-learn family) and hands the typed :class:`~urbansound.training.results.RunResult` to its
sinks: the run directory (:mod:`urbansound.experiment.rundir`: ``config.yaml``, ``results.json``,
``folds.csv``, ``predictions.npz``; ``figures/`` with the confusion matrix and epoch curves),
Comet (:mod:`urbansound.tracking`) and, in a sweep, the Optuna trial (per-epoch reports for the
pruner).

:func:`task` is the Hydra task (:func:`urbansound.config.app.hydra_main` handles its failures);
with ``-m`` it is a sweep (``python -m urbansound.run -m n_mfcc=20,40,60``) and its return value,
the mean cross-validation accuracy, is the objective a sweeper maximises. The dataset's figures are
drawn after the run or the sweep by the Hydra callbacks of :mod:`urbansound.experiment.callbacks`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from urbansound.config.app import TaskContext, hydra_main
from urbansound.config.checks import settings_from_config
from urbansound.config.settings import Settings
from urbansound.errors import TrialPruned, UrbansoundError
from urbansound.experiment.pipeline import prepare_data
from urbansound.experiment.rundir import (
    FOLD_COLUMNS,
    Predictions,
    make_run_dir,
    write_config,
    write_folds,
    write_predictions,
    write_results,
)
from urbansound.training.results import EpochMetrics, RunResult
from urbansound.utils import progress

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("urbansound.run")

__all__ = ["RunOutcome", "fold_table", "main", "run_experiment", "task"]


def fold_table(result: RunResult) -> str:
    """The per-fold table printed at the end of a run (pandas), with mean ± std."""
    import pandas as pd

    assert result.cv is not None
    frame = pd.DataFrame([{k: getattr(f, k) for k in FOLD_COLUMNS} for f in result.cv.folds])
    table = frame.to_string(index=False, float_format=lambda v: f"{v:.4f}")
    n = len(result.cv.folds)
    return (
        f"{table}\nmean {result.mean_accuracy:.4f} ± {result.std_accuracy:.4f} (std over {n} folds)"
    )


@dataclass
class RunOutcome:
    """What :func:`run_experiment` hands to the sinks: the typed result, the figures it drew
    (name -> path in the run directory), and the :class:`TrialPruned` that stopped it, if any."""

    result: RunResult
    figures: dict[str, Path] = field(default_factory=dict)
    pruned: TrialPruned | None = None


def _cv_clips(settings: Settings, clips: pd.DataFrame) -> pd.DataFrame:
    """A run's clips (``cv.folds``, ``cv.outer_fold``); a split that cannot be made (a listed
    fold without clips, a random split too small for its classes) is said before the features.
    Skipped clips can only shrink a random split's input, so it is tried here when no clip can
    be skipped."""
    from urbansound.data import cv

    clips = cv.select_clips(settings.cv, clips)
    if settings.cv.name == "folds" or settings.features.on_error == "error":
        folds = clips["fold"].to_numpy(dtype=np.int64)
        cv.build_splits(settings.cv, folds, clips["classID"].to_numpy(dtype=np.int64))
    return clips


def run_experiment(
    settings: Settings,
    *,
    run_dir: Path,
    resolved_config: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    callbacks: Sequence[Callable[[EpochMetrics], None]] = (),
    tracking_info: Callable[[], Mapping[str, Any]] | None = None,
    progress: bool = True,
) -> RunOutcome:
    """Run one experiment and write its outputs into ``run_dir``.

    ``callbacks`` see every epoch's :class:`EpochMetrics`; one raising :class:`TrialPruned` stops
    training: ``results.json`` then says ``status: "pruned"`` and the outcome carries the
    exception (the caller re-raises it after the sinks). ``tracking_info`` is called once, just
    before ``results.json`` is written, for its ``tracking`` field. ``results.json`` is written
    once, atomically: a failed write leaves no partial file and raises :class:`OutputError`.

    Raises
    ------
    UrbansoundError
        Bad configuration or data (one line naming the key or file), or an unwritable run
        directory (:class:`~urbansound.errors.OutputError`).
    """
    from urbansound.data import cv

    if settings.model.family != "mlp":  # a bad model=sklearn target fails before the features
        from urbansound.training.families import make_estimator

        make_estimator(settings.model, seed=settings.train.seed)
    run_dir = make_run_dir(run_dir)
    t_start = time.perf_counter()
    if resolved_config is not None:
        write_config(run_dir, resolved_config)
    data = prepare_data(settings, select=functools.partial(_cv_clips, settings), progress=progress)
    splits = cv.build_splits(settings.cv, data.folds, data.y)
    if not splits:
        raise UrbansoundError(
            "no cross-validation split has clips to test on: check data.root, cv.folds and "
            "cv.outer_fold"
        )
    result = RunResult(
        status="running",
        dataset=data.dataset,
        data_root=str(data.root),
        protocol=cv.protocol_label(settings.cv),
        leaky=settings.cv.name == "random_split",
        n_listed=data.n_listed,
        n_clips=data.n_clips,
        n_missing=len(data.missing),
        empty_folds=list(data.empty_folds),
        leaky_recordings=[dict(r) for r in data.leaky_recordings],
        skipped=list(data.skipped),
        class_names=list(data.class_names),
        n_features=data.n_features,
        overrides=list(overrides),
        trial={"study_name": settings.trial.study_name, "number": settings.trial.number},
    )

    # torch (about 1.5 s to import) only now: a wrong data.root, cv setting or clip is said first
    from urbansound.training.cross_validation import cross_validate
    from urbansound.training.problem import CVProblem

    durations = dict(data.durations)
    t0 = time.perf_counter()
    pruned: TrialPruned | None = None
    try:
        cv_result = cross_validate(
            CVProblem(
                data.X,
                data.y,
                splits,
                n_classes=len(data.class_names),
                model=settings.model,
                train=settings.train,
            ),
            callbacks=[result.history.append, *callbacks],
            progress=progress,
        )
    except TrialPruned as exc:
        pruned = exc
        result.status, result.pruned_at_epoch, result.mean_accuracy = "pruned", exc.epoch, exc.value
    else:
        result.status, result.cv = "complete", cv_result
        result.mean_accuracy = float(cv_result.mean_accuracy)
        result.std_accuracy = float(cv_result.std_accuracy)
    durations["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    figures = _run_figures(run_dir, result)
    durations["figures"] = time.perf_counter() - t0
    durations["total"] = time.perf_counter() - t_start
    result.durations = durations
    log.debug("durations (s): %s", ", ".join(f"{k} {v:.3f}" for k, v in durations.items()))
    if tracking_info is not None:
        result.tracking = dict(tracking_info())
    write_results(run_dir, result)
    if result.cv is not None:
        write_folds(run_dir, result)
        predictions = Predictions.of_folds(
            result.cv.predictions,
            clips=data.clips["slice_file_name"].to_numpy(dtype=str),
            y=data.y,
            class_names=data.class_names,
        )
        write_predictions(run_dir, predictions)
    if pruned is not None:
        log.warning("%s; results.json marks this job as pruned", pruned)
    return RunOutcome(result=result, figures=figures, pruned=pruned)


def _run_figures(run_dir: Path, result: RunResult) -> dict[str, Path]:
    """The run's own figures (confusion matrix, epoch curves); a failure costs only them."""
    try:
        from urbansound.experiment.plots import write_run_figures

        written = write_run_figures(run_dir, result)
    except Exception as exc:  # figures are extras: a finished run is never lost over one
        log.warning("run figures not written: %s", exc)
        return {}
    return {p.stem: p for p in written}


def task(cfg: Any, context: TaskContext) -> float:
    """Hydra task: one experiment into ``context.run_dir``; returns the mean CV accuracy.

    A pruned trial re-raises the :class:`TrialPruned` after its outputs are written, so that the
    sweeper records it as pruned.
    """
    from omegaconf import OmegaConf

    from urbansound.tracking.experiments import start as start_tracking

    settings = settings_from_config(cfg)
    progress.set_default_mode(settings.progress)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    in_sweep = settings.trial.number is not None  # a job of the urbansound Optuna sweeper
    swept = None
    if in_sweep:
        from urbansound.sweep.job import trial_params

        swept = trial_params(settings.trial)  # what the sampler chose, typed
    tracker = start_tracking(
        settings,
        run_dir=context.run_dir,
        config=resolved,
        overrides=list(context.overrides),
        swept=swept,
    )
    # Comet sees every epoch, including the one after which the pruner stops the trial.
    callbacks: list[Callable[[EpochMetrics], None]] = [tracker.log_epoch]
    if in_sweep:
        from urbansound.sweep.job import epoch_reporter, set_trial_attrs

        reporter = epoch_reporter(settings.trial)
        if reporter is not None:
            callbacks.append(reporter)
        # Links from the Optuna trial (dashboard) to this run and its Comet experiment.
        info = tracker.info()
        set_trial_attrs(
            settings.trial,
            run_dir=str(context.run_dir),
            comet_experiment_key=info.get("experiment_key"),
            comet_mode=info.get("mode"),
        )
    outcome: RunOutcome | None = None
    error: BaseException | None = None
    try:
        outcome = run_experiment(
            settings,
            run_dir=context.run_dir,
            resolved_config=resolved,
            overrides=context.overrides,
            callbacks=callbacks,
            tracking_info=tracker.info,
        )
    except BaseException as exc:
        error = exc
        raise
    finally:  # whatever the outcome; never raises
        tracker.finish(
            outcome.result if outcome is not None else None,
            run_dir=context.run_dir,
            figures=outcome.figures if outcome is not None else {},
            error=error,
        )
    if outcome.pruned is not None:
        raise outcome.pruned
    result = outcome.result
    assert result.cv is not None
    log.info(
        "%s on %s (%s), %d clips:\n%s\nrun directory: %s",
        "LEAKY random split" if result.leaky else f"{len(result.cv.folds)}-fold CV",
        result.dataset,
        result.protocol,
        result.n_clips,
        fold_table(result),
        context.run_dir,
    )
    return float(result.mean_accuracy)


#: ``python -m urbansound.run`` and the ``urbansound`` console script.
main = hydra_main(
    task,
    interrupted="{run_dir} holds no results.json (its config.yaml and log stay); run the same "
    "command to start again",
)

if __name__ == "__main__":
    main()
