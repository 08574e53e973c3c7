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

The run directory holds ``config.yaml`` (the configuration trained), ``model.safetensors``
(:mod:`urbansound.inference.modelfile`), ``fit.json`` (what was trained on, the evaluation, the
source and its CV figures, durations, Comet) and ``predictions.npz`` (the ensemble's probabilities
on the test part, as a run's). With tracking on, the fit is a Comet experiment and the model file is
logged as its model.
"""

from __future__ import annotations

import io
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from urbansound.config.checks import settings_from_config
from urbansound.config.settings import Settings
from urbansound.errors import ConfigError, DataError, UrbansoundError
from urbansound.experiment.fit_source import (
    FitOptions,
    Source,
    apply_overrides,
    fit_options,
    resolve_source,
)
from urbansound.inference.modelfile import (
    MODEL_FILE,
    Member,
    ModelFile,
    feature_settings_dict,
    save_model,
)
from urbansound.training import metrics
from urbansound.training.results import CVResult, EpochMetrics, RunResult
from urbansound.utils.files import atomic_write, output_error, write_json

log = logging.getLogger("urbansound.fit")

__all__ = [
    "FIT_CONFIG_NAME",
    "FitOptions",
    "FitOutcome",
    "Source",
    "apply_overrides",
    "fit_model",
    "fit_options",
    "main",
    "resolve_source",
]

FIT_CONFIG_NAME = "fit"
FIT_JSON = "fit.json"
PREDICTIONS = "predictions.npz"
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
    ``callbacks`` see the first member's epochs.

    Raises
    ------
    UrbansoundError
        Bad configuration or data (one line naming the key or file), an unwritable run
        directory (:class:`~urbansound.errors.OutputError`).
    """
    from omegaconf import OmegaConf

    from urbansound.data import index as data
    from urbansound.data.cv import Split
    from urbansound.data.source import resolve_dataset
    from urbansound.features import extraction as features
    from urbansound.training import cross_validation as train

    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(run_dir, exc) from exc
    if config is not None:
        atomic_write(run_dir / "config.yaml", OmegaConf.to_yaml(dict(config)))
    seeds = [settings.train.seed] if seeds is None else [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("fit.seeds must list at least one seed")
    if settings.cv.name != "folds" or settings.cv.folds is not None:
        log.info("a final fit trains on every fold (cv.name and cv.folds do not apply)")
    durations: dict[str, float] = {}

    root, dataset_name = resolve_dataset(settings.data)
    index = data.load_index(root, missing=settings.data.missing, name=dataset_name)
    durations["index"] = time.perf_counter() - t_start
    held = settings.cv.outer_fold
    if held is not None and held not in set(index.clips["fold"].tolist()):
        raise DataError(
            f"cv.outer_fold={held} names a fold with no clips in this dataset (folds with "
            f"clips: {sorted(set(index.clips['fold'].tolist()))}); choose one or set "
            "cv.outer_fold=null to fit on every fold"
        )
    t0 = time.perf_counter()
    feats = features.extract_features(
        list(index.clips["path"]), settings.features, progress=progress
    )
    durations["features"] = time.perf_counter() - t0
    clips = index.clips[feats.ok].reset_index(drop=True)
    y = clips["classID"].to_numpy(dtype=np.int64)
    fold_of = clips["fold"].to_numpy(dtype=np.int64)
    if held is None:
        train_idx = np.arange(len(clips))
        test_idx, label, tested_on = train_idx, "all", "training data"
    else:
        train_idx = np.flatnonzero(fold_of != held)
        test_idx, label, tested_on = np.flatnonzero(fold_of == held), held, f"fold {held}"
        if len(test_idx) == 0:
            raise DataError(
                f"cv.outer_fold={held}: none of its clips has features (all skipped); "
                "choose another fold"
            )
    if len(train_idx) == 0:
        raise DataError("no clip to train on: check data.root and cv.outer_fold")
    split = Split(fold=label, train=train_idx, test=test_idx)
    n_classes = len(index.class_names)
    trained_folds = sorted({int(f) for f in fold_of[train_idx]})
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
        res = train.cross_validate(
            feats.X,
            y,
            [split],
            n_classes=n_classes,
            model=settings.model,
            train=replace(settings.train, seed=seed),
            callbacks=list(callbacks) if i == 0 else [],
            progress=progress,
            keep_models=True,
        )
        results.append(res)
        members.append(_member(res.models[0], seed=seed, fold=label, family=family))
    durations["train"] = time.perf_counter() - t0
    probs = [r.predictions[0].probabilities for r in results]
    if len(probs) == 1:
        ensemble = probs[0]
    else:
        ensemble = (np.sum([p.astype(np.float64) for p in probs], axis=0) / len(probs)).astype(
            np.float32
        )
    y_test = y[test_idx]
    accuracy = float((ensemble.argmax(axis=1) == y_test).mean())
    evaluation = {
        "fold": label,
        "on": tested_on,
        "n_clips": len(test_idx),
        "accuracy": accuracy,
        "member_accuracies": [float(r.folds[0].accuracy) for r in results],
        "held_out": held is not None,
    }
    counts = np.bincount(y[train_idx], minlength=n_classes)
    metadata: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "family": family,
        "class_names": list(index.class_names),
        "window_s": _window_s(clips.iloc[train_idx]),
        "features": {
            "settings": feature_settings_dict(settings.features),
            "names": features.feature_names(settings.features),
            "n_features": int(feats.X.shape[1]),
            "stage": _stage(),
        },
        "model": _plain(settings.model),
        "train": {**_plain(settings.train), "seeds": seeds},
        "training_data": {
            "dataset": dataset_name,
            "data_root": str(root),
            "n_clips": len(train_idx),
            "folds": trained_folds,
            "held_out_fold": held,
            "clips_per_class": {n: int(c) for n, c in zip(index.class_names, counts, strict=True)},
            "skipped": list(feats.skipped),
        },
        "evaluation": evaluation,
        "source": source.describe() if source is not None else None,
        "config": dict(config) if config is not None else None,
        "versions": _versions(),
    }
    model_path = save_model(run_dir / MODEL_FILE, members, metadata)
    model = ModelFile(members=members, metadata=metadata, path=model_path)

    paths = clips["path"].to_numpy(dtype=str)
    _write_predictions(
        run_dir / PREDICTIONS,
        fold=label,
        clips=clips,
        index=test_idx,
        probabilities=ensemble,
        class_names=index.class_names,
    )
    fold_result = metrics.fold_result(
        label, ensemble, y_test, n_train=len(train_idx), n_classes=n_classes
    )
    result = RunResult(
        status="complete",
        dataset=dataset_name,
        data_root=str(root),
        protocol=f"final fit on folds {', '.join(map(str, trained_folds))}; tested on {tested_on}",
        leaky=False,
        n_listed=index.n_listed,
        n_clips=len(clips),
        n_missing=len(index.missing),
        empty_folds=list(index.empty_folds),
        skipped=list(feats.skipped),
        class_names=list(index.class_names),
        n_features=int(feats.X.shape[1]),
        overrides=[],
        trial={"study_name": None, "number": None},
        cv=CVResult(folds=[fold_result], history=results[0].history),
    )
    durations["total"] = time.perf_counter() - t_start
    summary = {
        "status": "complete",
        "model_file": str(model_path),
        "class_names": list(index.class_names),
        "n_features": int(feats.X.shape[1]),
        "window_s": metadata["window_s"],
        "seeds": seeds,
        "training_data": metadata["training_data"],
        "evaluation": evaluation,
        "source": metadata["source"],
        "durations": durations,
    }
    write_json(run_dir / FIT_JSON, summary)
    return FitOutcome(
        model=model,
        model_path=model_path,
        summary=summary,
        members=results,
        probabilities=ensemble,
        test_paths=list(paths[test_idx]),
        y_true=y_test,
        result=result,
    )


def _member(fitted: Any, *, seed: int, fold: int | str, family: str) -> Member:
    """A trained split's model as a model-file member: the MLP's arrays (:class:`FittedMLP`),
    or another family's fitted scikit-learn Pipeline (stored with skops)."""
    from urbansound.training.results import FittedMLP

    if not isinstance(fitted, FittedMLP):
        return Member(seed=seed, fold=fold, family=family, estimator=fitted)
    return Member(
        seed=seed,
        fold=fold,
        family="mlp",
        params=[(np.asarray(w), np.asarray(b)) for w, b in fitted.params],
        activation=fitted.activation,
        mean=fitted.mean,
        std=fitted.std,
    )


def _stage() -> dict[str, Any]:
    from urbansound.inference.modelfile import feature_stage

    return feature_stage()


def _plain(obj: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(obj).items()}


def _write_predictions(
    path: Path,
    *,
    fold: int | str,
    clips: Any,
    index: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
) -> None:
    """``predictions.npz`` as a run writes it, plus ``path`` (each test clip's audio file)."""
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        fold=np.full(len(index), str(fold)),
        clip=clips["slice_file_name"].to_numpy(dtype=str)[index],
        path=clips["path"].to_numpy(dtype=str)[index],
        index=index,
        y_true=clips["classID"].to_numpy(dtype=np.int64)[index],
        probabilities=probabilities.astype(np.float32),
        class_names=np.asarray(class_names, dtype=str),
    )
    atomic_write(path, buf.getvalue())


# --------------------------------------------------------------------------------------------
# The entry point


#: Group choices added to the command line for Hydra's composition only (the source's model
#: family): :func:`_configuration` does not apply them as overrides.
_SOURCE_CHOICES: list[str] = []


def _source_choices(argv: Sequence[str]) -> list[str]:
    """``model=<family>`` of the source that ``fit.from`` (``fit.study``, ``fit.trial``) in
    ``argv`` names, when it is no MLP and the command line chooses no model: so that Hydra
    composes the overrides (``model.n_estimators=500``) against that family's schema, as the
    README's key-by-key promise needs. Empty when there is no usable source (the task then says
    what is wrong with it)."""
    from urbansound.config.overrides import parse_all

    try:
        parsed = parse_all([a for a in argv if "=" in a])
    except ConfigError:
        return []
    given = {o.key_or_group: o.value() for o in parsed if not o.is_delete()}
    if "model" in given or given.get("fit.from") is None:
        return []
    try:
        opts = fit_options(
            {k.removeprefix("fit."): v for k, v in given.items() if k.startswith("fit.")}
        )
        source = resolve_source(opts)
    except Exception:  # reported by the task, in one line
        return []
    family = (source.config.get("model") or {}).get("family", "mlp")
    import importlib.resources

    if not isinstance(family, str) or family == "mlp":
        return []
    known = (importlib.resources.files("urbansound.conf") / "model" / f"{family}.yaml").is_file()
    return [f"model={family}"] if known else []


def hydra_fit_main(task_function: Callable[[Any], Any]) -> Callable[..., Any]:
    """:func:`urbansound.config.app.hydra_main` on the primary config ``fit``: a bad config or an
    :class:`UrbansoundError` is one ``error: ...`` line, exit status 2. The source's model family
    is chosen for the composition (:func:`_source_choices`)."""
    import functools

    from urbansound.config.app import hydra_main

    decorated = hydra_main(task_function, config_name=FIT_CONFIG_NAME)

    @functools.wraps(task_function)
    def main(cfg_passthrough: Any = None) -> Any:
        if cfg_passthrough is None and not any(a.startswith("-") for a in sys.argv[1:]):
            logging.disable(logging.INFO)  # resolving the source is said again by the task
            try:
                _SOURCE_CHOICES[:] = _source_choices(sys.argv[1:])
            finally:
                logging.disable(logging.NOTSET)
            sys.argv[1:1] = _SOURCE_CHOICES
        return decorated(cfg_passthrough)

    return main


def _configuration(cfg: Any, overrides: Sequence[str]) -> tuple[FitOptions, Source | None, dict]:
    """The fit options, the source (if any) and the resolved configuration to train."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(plain, dict)
    opts = fit_options(plain.pop("fit", None))
    plain.pop("hydra", None)
    if opts.source is None:
        resolved = OmegaConf.to_container(OmegaConf.create(plain), resolve=True)
        assert isinstance(resolved, dict)
        return opts, None, resolved
    source = resolve_source(opts)
    log.info(
        "fitting the configuration of %s%s",
        source.run_dir,
        f" (trial {source.trial} of study {source.study_name})" if source.trial is not None else "",
    )
    return opts, source, apply_overrides(source.config, cfg, overrides)


def _without_cv_folds(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with ``cv.folds`` null: a fit trains on every fold (but ``cv.outer_fold``), so
    the folds a CV run tested on (``cv.folds=[10]``) neither apply nor clash with
    ``cv.outer_fold``."""
    cv = config.get("cv")
    if isinstance(cv, dict) and cv.get("folds") is not None:
        log.info("cv.folds=%s does not apply to a fit: it trains on every fold", cv["folds"])
        config = {**config, "cv": {**cv, "folds": None}}
    return config


@hydra_fit_main
def main(cfg: Any) -> None:
    """Hydra task: one final fit (see the module docstring); a user error is one line, exit 2."""
    try:
        _main(cfg)
    except UrbansoundError as exc:
        print(f"error: {exc}", file=sys.stderr)  # one line, no traceback
        sys.exit(2)
    except KeyboardInterrupt:
        from hydra.core.hydra_config import HydraConfig

        run_dir = Path(HydraConfig.get().runtime.output_dir)
        # model.safetensors, fit.json and predictions.npz are written at the end, atomically.
        print(
            f"error: interrupted; {run_dir} holds no model file (its config.yaml and log stay); "
            "run the same command to fit again",
            file=sys.stderr,
        )
        sys.exit(130)


def _main(cfg: Any) -> None:
    from hydra.core.hydra_config import HydraConfig

    from urbansound import tracking
    from urbansound.utils import progress

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    overrides = [o for o in hc.overrides.task if o not in _SOURCE_CHOICES]
    opts, source, config = _configuration(cfg, overrides)
    config = _without_cv_folds(config)
    settings = settings_from_config(config)
    progress.set_default_mode(settings.progress)
    shown = [o for o in overrides if not o.lstrip("+~").startswith("fit.")]
    tracker = tracking.start(settings, run_dir=run_dir, config=config, overrides=shown)
    outcome: FitOutcome | None = None
    error: BaseException | None = None
    try:
        outcome = fit_model(
            settings,
            run_dir=run_dir,
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
            run_dir=run_dir,
            figures={},
            error=error,
        )
    if outcome is not None:
        info = tracker.info()
        if info.get("mode") not in (None, "disabled"):
            outcome.summary["tracking"] = info
            write_json(run_dir / FIT_JSON, outcome.summary)
        ev = outcome.summary["evaluation"]
        cv = (outcome.summary["source"] or {}).get("cv") or {}
        lines = [
            f"model: {outcome.model_path}",
            f"trained on {outcome.summary['training_data']['n_clips']} clips "
            f"(folds {', '.join(map(str, outcome.summary['training_data']['folds']))}), "
            f"{len(outcome.members)} seed(s)",
            f"accuracy on {ev['on']} ({ev['n_clips']} clips): {ev['accuracy']:.4f}",
        ]
        if cv.get("mean_accuracy") is not None:
            lines.append(
                f"the configuration's CV accuracy ({cv.get('protocol')}): "
                f"{cv['mean_accuracy']:.4f} ± {cv.get('std_accuracy') or 0.0:.4f}"
            )
        lines.append(f"predict with: python -m urbansound.predict {outcome.model_path} AUDIO...")
        upload = tracking.upload_command([info["archive"]] if info.get("archive") else [])
        if upload:  # the Hydra callback lists only the archives that results.json files name
            lines.append(f"Comet: to upload the offline archive (COMET_API_KEY set):\n  {upload}")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
