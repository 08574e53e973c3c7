"""Final fit: ``python -m urbansound.fit [overrides]`` trains one configuration into a model file.

A Hydra entry point beside :mod:`urbansound.run`, on the same config tree (the primary config
``conf/fit.yaml`` is ``config.yaml`` plus the ``fit`` node), with its own run directory
(``outputs/fits/<date>/<time>``). Where the configuration comes from:

- the command line, as for ``run`` (``python -m urbansound.fit n_mfcc=20 train.epochs=50``);
- ``fit.from=<run directory>``: that run's ``config.yaml``;
- ``fit.from=<sweep directory>`` (its ``study.json``, or its job directories) or
  ``fit.from=<storage URL or journal file>`` (plus ``fit.study=<name>`` when the storage holds
  several studies): a trial's run directory, read through :mod:`urbansound.sweep.records`;
  ``fit.trial=<n>`` chooses the trial, by default the best COMPLETE trial that was not
  evaluated on the LEAKY random split.

Overrides on the command line win over the source's configuration, key by key (a group choice
such as ``features=logmel`` replaces the whole group). The ``trial`` node is cleared: a fit is
no trial.

What it trains: the same code as a CV run,
:func:`urbansound.training.cross_validation.cross_validate` with ``keep_models=True`` on one
:class:`~urbansound.data.cv.Split` whose training part is every clip (``cv.outer_fold`` unset) or
every clip outside fold ``k`` (``cv.outer_fold=k``); ``cv.folds`` and ``cv=random_split`` do not
apply. The split's label derives the random streams
(:func:`urbansound.training.lockstep.fold_seeds`): with ``cv.outer_fold=k`` the label is ``k``, so
the model is the CV run's fold-``k`` model (``python -m urbansound.run cv.folds=[k]``), tested on
fold ``k``; on every fold the label is ``"all"`` and it is tested on its training data (training
accuracy, labelled so). ``fit.seeds=[0,1,2]`` trains one model per ``train.seed`` value, an ensemble
whose class probabilities are averaged.

The data come from the same pipeline as a run's
(:func:`urbansound.experiment.pipeline.prepare_data`, every clip). The run directory holds
``config.yaml`` (the configuration trained), ``model.safetensors``
(:mod:`urbansound.inference.modelfile`), ``fit.json`` (what was trained on, the evaluation, the
source and its CV figures, durations, Comet) and ``predictions.npz`` (the ensemble's probabilities
on the test part, as a run's: :class:`~urbansound.experiment.rundir.Predictions`), written by
:mod:`urbansound.experiment.rundir`. With tracking on, the fit is a Comet experiment and the model
file is logged as its model. Where the configuration comes from is
:mod:`urbansound.experiment.fit_config`; :func:`task` is the Hydra task
(:func:`urbansound.config.app.hydra_main` handles its failures).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from urbansound.config.app import FIT_CONFIG_NAME, TaskContext, hydra_main
from urbansound.config.checks import settings_from_config
from urbansound.config.settings import Settings
from urbansound.errors import ConfigError, DataError
from urbansound.experiment.costs import model_member
from urbansound.experiment.fit_config import fit_configuration, source_model_choice
from urbansound.experiment.fit_source import Source
from urbansound.experiment.pipeline import prepare_data
from urbansound.experiment.rundir import (
    Predictions,
    make_run_dir,
    write_config,
    write_fit_summary,
    write_predictions,
)
from urbansound.inference.modelfile import MODEL_FILE, Member, ModelFile, save_model
from urbansound.inference.stage import feature_settings_dict, feature_stage
from urbansound.training import metrics
from urbansound.training.results import CVResult, EpochMetrics, FoldPredictions, RunResult

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("urbansound.fit")

__all__ = ["FitOutcome", "fit_model", "main", "task"]

#: The clip length of UrbanSound8K (and of the demo corpus): the window when the metadata says
#: nothing.
DEFAULT_WINDOW_S = 4.0


# --------------------------------------------------------------------------------------------
# The fit


@dataclass
class FitOutcome:
    """What :func:`fit_model` trained and wrote.

    ``probabilities`` ``(n_test, n_classes)`` float32 are the ensemble's on the test part
    (``test_paths``, ``y_true``): the held-out fold, or the training clips themselves.
    ``members`` holds each seed's :class:`CVResult` (one fold each).
    """

    model: ModelFile
    model_path: Path
    summary: dict[str, Any]
    members: list[CVResult]
    probabilities: np.ndarray
    test_paths: list[str]
    y_true: np.ndarray
    result: RunResult
    figures: dict[str, Path] = field(default_factory=dict)


def _window_s(clips: Any) -> float:
    """The training clips' length: the longest ``end - start`` of the metadata, to the ms."""
    try:
        span = (clips["end"].astype(float) - clips["start"].astype(float)).max()
    except (KeyError, TypeError, ValueError):
        return DEFAULT_WINDOW_S
    return round(float(span), 3) if math.isfinite(span) and span > 0 else DEFAULT_WINDOW_S


def _versions() -> dict[str, str]:
    import platform

    import torch

    import urbansound

    return {
        "urbansound": getattr(urbansound, "__version__", "unknown"),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def _fit_clips(held: int | None, clips: pd.DataFrame) -> pd.DataFrame:
    """A fit's clips: every clip; a held-out fold (``cv.outer_fold``) must have clips."""
    present = sorted(set(clips["fold"].tolist()))
    if held is not None and held not in present:
        raise DataError(
            f"cv.outer_fold={held} names a fold with no clips in this dataset (folds with "
            f"clips: {present}); choose one or set cv.outer_fold=null to fit on every fold"
        )
    return clips


def fit_model(
    settings: Settings,
    *,
    run_dir: Path,
    seeds: Sequence[int] | None = None,
    source: Source | None = None,
    config: Mapping[str, Any] | None = None,
    callbacks: Sequence[Callable[[EpochMetrics], None]] = (),
    progress: bool = True,
) -> FitOutcome:
    """Train ``settings``' model on every fold (or every fold but ``cv.outer_fold``) and write
    ``model.safetensors``, ``fit.json``, ``predictions.npz`` (and ``config.yaml`` when
    ``config`` is given) into ``run_dir``.

    ``seeds``: the ``train.seed`` of each ensemble member (default ``[train.seed]``).
    ``callbacks`` see the first member's epochs. ``source`` is recorded in the model file and
    ``fit.json``.

    Raises
    ------
    UrbansoundError
        Bad configuration or data (one line naming the key or file), an unwritable run
        directory (:class:`~urbansound.errors.OutputError`), an estimator a model file could not
        hold (a user's own class: :class:`~urbansound.errors.ConfigError`, before anything is
        written or trained).
    """
    from urbansound.data.cv import Split
    from urbansound.features.extraction import feature_names
    from urbansound.training.cross_validation import cross_validate
    from urbansound.training.problem import CVProblem

    t_start = time.perf_counter()
    seeds = [settings.train.seed] if seeds is None else [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("fit.seeds must list at least one seed")
    _check_storable(settings)  # before anything is written or trained, not after training
    run_dir = make_run_dir(run_dir)
    if config is not None:
        write_config(run_dir, config)
    if settings.cv.name != "folds" or settings.cv.folds is not None:
        log.info("a final fit trains on every fold (cv.name and cv.folds do not apply)")
    held = settings.cv.outer_fold
    data = prepare_data(settings, select=functools.partial(_fit_clips, held), progress=progress)
    durations = dict(data.durations)
    if held is None:
        train_idx = np.arange(data.n_clips)
        test_idx, label, tested_on = train_idx, "all", "training data"
    else:
        train_idx = np.flatnonzero(data.folds != held)
        test_idx, label, tested_on = np.flatnonzero(data.folds == held), held, f"fold {held}"
        if len(test_idx) == 0:
            raise DataError(
                f"cv.outer_fold={held}: none of its clips has features (all skipped); "
                "choose another fold"
            )
    if len(train_idx) == 0:
        raise DataError("no clip to train on: check data.root and cv.outer_fold")
    split = Split(fold=label, train=train_idx, test=test_idx)
    n_classes = len(data.class_names)
    trained_folds = sorted({int(f) for f in data.folds[train_idx]})
    log.info(
        "final fit of %d model(s) (seeds %s) on %d clips of folds %s; tested on %s (%d clips)",
        len(seeds),
        ", ".join(map(str, seeds)),
        len(train_idx),
        ", ".join(map(str, trained_folds)),
        tested_on,
        len(test_idx),
    )

    t0 = time.perf_counter()
    family = str(getattr(settings.model, "family", "mlp"))
    results: list[CVResult] = []
    members: list[Member] = []
    for i, seed in enumerate(seeds):
        res = cross_validate(
            CVProblem(
                data.X,
                data.y,
                [split],
                n_classes=n_classes,
                model=settings.model,
                train=replace(settings.train, seed=seed),
            ),
            callbacks=list(callbacks) if i == 0 else [],
            progress=progress,
            keep_models=True,
        )
        results.append(res)
        members.append(model_member(res.models[0], seed=seed, fold=label, family=family))
    durations["train"] = time.perf_counter() - t0
    probs = [r.predictions[0].probabilities for r in results]
    if len(probs) == 1:
        ensemble = probs[0]
    else:
        ensemble = (np.sum([p.astype(np.float64) for p in probs], axis=0) / len(probs)).astype(
            np.float32
        )
    y_test = data.y[test_idx]
    accuracy = float((ensemble.argmax(axis=1) == y_test).mean())
    evaluation = {
        "fold": label,
        "on": tested_on,
        "n_clips": len(test_idx),
        "accuracy": accuracy,
        "member_accuracies": [float(r.folds[0].accuracy) for r in results],
        "held_out": held is not None,
    }
    counts = np.bincount(data.y[train_idx], minlength=n_classes)
    metadata: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "family": family,
        "class_names": list(data.class_names),
        "window_s": _window_s(data.clips.iloc[train_idx]),
        "features": {
            "settings": feature_settings_dict(settings.features),
            "names": feature_names(settings.features),
            "n_features": data.n_features,
            "stage": feature_stage(),
            # an embedding kind's network: file, SHA-256, runtime, licence (None: hand-made)
            **({"model": data.feature_model} if data.feature_model else {}),
        },
        "model": _plain(settings.model),
        "train": {**_plain(settings.train), "seeds": seeds},
        "training_data": {
            "dataset": data.dataset,
            "data_root": str(data.root),
            "n_clips": len(train_idx),
            "folds": trained_folds,
            "held_out_fold": held,
            "clips_per_class": {n: int(c) for n, c in zip(data.class_names, counts, strict=True)},
            "skipped": list(data.skipped),
        },
        "evaluation": evaluation,
        "source": source.describe() if source is not None else None,
        "config": dict(config) if config is not None else None,
        "versions": _versions(),
    }
    model_path = save_model(run_dir / MODEL_FILE, members, metadata)
    model = ModelFile(members=members, metadata=metadata, path=model_path)

    tested = FoldPredictions(fold=label, test_index=test_idx, probabilities=ensemble)
    predictions = Predictions.of_folds(
        [tested],
        clips=data.clips["slice_file_name"].to_numpy(dtype=str),
        y=data.y,
        class_names=data.class_names,
    )
    write_predictions(run_dir, predictions)
    fold_result = metrics.fold_result(
        label, ensemble, y_test, n_train=len(train_idx), n_classes=n_classes
    )
    result = RunResult(
        status="complete",
        dataset=data.dataset,
        data_root=str(data.root),
        protocol=f"final fit on folds {', '.join(map(str, trained_folds))}; tested on {tested_on}",
        leaky=False,
        n_listed=data.n_listed,
        n_clips=data.n_clips,
        n_missing=len(data.missing),
        empty_folds=list(data.empty_folds),
        skipped=list(data.skipped),
        class_names=list(data.class_names),
        n_features=data.n_features,
        overrides=[],
        trial={"study_name": None, "number": None},
        cv=CVResult(folds=[fold_result], history=results[0].history),
    )
    durations["total"] = time.perf_counter() - t_start
    summary = {
        "status": "complete",
        "model_file": str(model_path),
        "class_names": list(data.class_names),
        "n_features": data.n_features,
        "window_s": metadata["window_s"],
        "seeds": seeds,
        "training_data": metadata["training_data"],
        "evaluation": evaluation,
        "source": metadata["source"],
        "durations": durations,
    }
    write_fit_summary(run_dir, summary)
    return FitOutcome(
        model=model,
        model_path=model_path,
        summary=summary,
        members=results,
        probabilities=ensemble,
        test_paths=list(data.clips["path"].to_numpy(dtype=str)[test_idx]),
        y_true=y_test,
        result=result,
    )


def _check_storable(settings: Settings) -> None:
    """Refuse, before anything is trained, an estimator a model file could not hold: its types
    (those of an unfitted instance, written by skops) must be on the model file's allowlist
    (:mod:`urbansound.inference.allowlist`). A user's own classifier class trains and is
    evaluated by ``run`` and sweeps; only a model file of it is refused.

    Raises
    ------
    ConfigError
        One line naming ``model._target_`` (or the family) and the types refused.
    """
    model = settings.model
    if model.family == "mlp":
        return
    import skops.io

    from urbansound.inference.allowlist import untrusted_types
    from urbansound.training.families import make_estimator, make_pipeline

    estimator = make_estimator(model, seed=settings.train.seed, n_jobs=1)
    pipeline = make_pipeline(estimator, standardize=settings.train.standardize)
    try:
        refused = untrusted_types(skops.io.dumps(pipeline))
    except Exception as exc:  # skops cannot write it at all (a lock, a generator, a lambda)
        refused = [f"something skops cannot write ({type(exc).__name__}: {exc})"]
    if refused:
        name = (
            f"model._target_={model.target}"
            if model.family == "sklearn"
            else f"model={model.family}"
        )
        raise ConfigError(
            f"{name} cannot be stored in a model file, which holds only scikit-learn's "
            f"classifiers and the types of their fitted state (it holds {', '.join(refused[:3])})"
            "; `python -m urbansound.run` trains and evaluates it, `fit` cannot save it: "
            "nothing was trained"
        )


def _plain(obj: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(obj).items()}


# --------------------------------------------------------------------------------------------
# The Hydra task


def task(cfg: Any, context: TaskContext) -> None:
    """Hydra task: one final fit (module docstring) into ``context.run_dir``; prints where the
    model file is and how it did."""
    from urbansound.tracking.archives import upload_command
    from urbansound.tracking.experiments import start as start_tracking
    from urbansound.tracking.naming import FitOrigin
    from urbansound.utils import progress

    opts, source, config = fit_configuration(cfg, context.overrides)
    settings = settings_from_config(config)
    progress.set_default_mode(settings.progress)
    origin = FitOrigin()  # named, tagged and re-run as a fit of its source (tracking.naming)
    if source is not None:
        origin = FitOrigin(source.location, source.kind, source.study_name, source.trial,
                           str(source.run_dir))  # fmt: skip
    tracker = start_tracking(
        settings, run_dir=context.run_dir, config=config, overrides=context.overrides, fit=origin
    )
    outcome: FitOutcome | None = None
    error: BaseException | None = None
    try:
        outcome = fit_model(
            settings,
            run_dir=context.run_dir,
            seeds=opts.seeds,
            source=source,
            config=config,
            callbacks=[tracker.log_epoch],
        )
        tracker.log_model(
            outcome.model_path,
            name=f"urbansound-{outcome.model.metadata['family']}",
            metadata={
                "evaluation": outcome.summary["evaluation"],
                "training_data": {
                    k: v
                    for k, v in outcome.summary["training_data"].items()
                    if k not in ("skipped",)
                },
            },
        )
    except BaseException as exc:
        error = exc
        raise
    finally:
        tracker.finish(
            outcome.result if outcome is not None else None,
            run_dir=context.run_dir,
            figures={},
            error=error,
        )
    info = tracker.info()
    if info.get("mode") not in (None, "disabled"):
        outcome.summary["tracking"] = info
        write_fit_summary(context.run_dir, outcome.summary)
    lines = _summary_lines(outcome)
    upload = upload_command([info["archive"]] if info.get("archive") else [])
    if upload:  # the Hydra callback lists only the archives that results.json files name
        lines.append(f"Comet: to upload the offline archive (COMET_API_KEY set):\n  {upload}")
    print("\n".join(lines))


def _summary_lines(outcome: FitOutcome) -> list[str]:
    """What a fit prints: the model file, what it trained on and how it did."""
    summary = outcome.summary
    ev = summary["evaluation"]
    cv = (summary["source"] or {}).get("cv") or {}
    training = summary["training_data"]
    lines = [
        f"model: {outcome.model_path}",
        f"trained on {training['n_clips']} clips "
        f"(folds {', '.join(map(str, training['folds']))}), {len(outcome.members)} seed(s)",
        f"accuracy on {ev['on']} ({ev['n_clips']} clips): {ev['accuracy']:.4f}",
    ]
    if cv.get("mean_accuracy") is not None:
        lines.append(
            f"the configuration's CV accuracy ({cv.get('protocol')}): "
            f"{cv['mean_accuracy']:.4f} ± {cv.get('std_accuracy') or 0.0:.4f}"
        )
    lines.append(f"predict with: python -m urbansound.predict {outcome.model_path} AUDIO...")
    return lines


#: ``python -m urbansound.fit``.
main = hydra_main(
    task,
    config_name=FIT_CONFIG_NAME,
    interrupted="{run_dir} holds no model file (its config.yaml and log stay); run the same "
    "command to fit again",
    composition_choices=source_model_choice,
)

if __name__ == "__main__":
    main()
