"""One cross-validated experiment: ``python -m urbansound.run [overrides]``.

Composes the Hydra config in ``conf/``, validates it, indexes the dataset (UrbanSound8K where it
is found, otherwise the built-in demo corpus), extracts features through the shared cache, trains
the model family (``model=mlp`` by default, or a scikit-learn family) on every cross-validation
split and writes into the run directory (the only writer of it):

- ``config.yaml``: the resolved configuration,
- ``results.json``: per-fold metrics, mean and std, per-epoch history, dataset, durations, the
  Comet experiment (written once, atomically, when the run ends or is pruned),
- ``folds.csv``: one row per fold,
- ``figures/``: the run's confusion matrix and epoch curves.

The data flows one way: settings -> :mod:`urbansound.data.index` (index) ->
:mod:`urbansound.features.extraction` -> :mod:`urbansound.data.cv` (splits) ->
:mod:`urbansound.training.cross_validation` -> a typed
:class:`~urbansound.training.results.RunResult` -> sinks (run directory, :mod:`urbansound.tracking`,
the Optuna reporter). The dataset's class figures and audio samples are drawn after the run or sweep
has ended, by :class:`DatasetFiguresCallback`, once per dataset and stage settings.

With ``-m`` it is a sweep (``python -m urbansound.run -m n_mfcc=20,40,60``); the task function
returns the mean cross-validation accuracy, the objective a sweeper maximises.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from urbansound import tracking
from urbansound.config.app import hydra_main
from urbansound.config.checks import settings_from_config
from urbansound.config.settings import FeatureSettings, Settings
from urbansound.errors import TrialPruned, UrbansoundError
from urbansound.training.results import EpochMetrics, RunResult
from urbansound.utils import progress
from urbansound.utils.files import atomic_write, output_error, write_json

log = logging.getLogger("urbansound.run")

FOLD_COLUMNS = ["fold", "accuracy", "loss", "n_train", "n_test"]


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


def _write_folds_csv(path: Path, result: RunResult) -> None:
    import pandas as pd

    assert result.cv is not None
    frame = pd.DataFrame([{k: getattr(f, k) for k in FOLD_COLUMNS} for f in result.cv.folds])
    atomic_write(path, frame.to_csv(index=False, lineterminator="\n"))


@dataclass
class RunOutcome:
    """What :func:`run_experiment` hands to the sinks: the typed result, the figures it drew
    (name -> path in the run directory), and the :class:`TrialPruned` that stopped it, if any."""

    result: RunResult
    figures: dict[str, Path] = field(default_factory=dict)
    pruned: TrialPruned | None = None


def _make_run_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(run_dir, exc) from exc


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
    from urbansound.data import index as data
    from urbansound.data.source import resolve_dataset
    from urbansound.features import extraction as features

    if settings.model.family != "mlp":  # a bad model=sklearn target fails before the features
        from urbansound.training.families import make_estimator

        make_estimator(settings.model, seed=settings.train.seed)
    run_dir = Path(run_dir)
    _make_run_dir(run_dir)
    t_start = time.perf_counter()
    durations: dict[str, float] = {}
    if resolved_config is not None:
        atomic_write(run_dir / "config.yaml", OmegaConf.to_yaml(dict(resolved_config)))

    root, dataset_name = resolve_dataset(settings.data)
    index = data.load_index(root, missing=settings.data.missing, name=dataset_name)
    durations["index"] = time.perf_counter() - t_start
    clips = cv.select_clips(settings.cv, index.clips)
    # A split that cannot be made (cv.folds naming a fold without clips, a random split too small
    # for its classes) is said before the features. Skipped clips can only shrink a random
    # split's input, so it is tried here when no clip can be skipped.
    if settings.cv.name == "folds" or settings.features.on_error == "error":
        folds_of = clips["fold"].to_numpy(dtype=np.int64)
        cv.build_splits(settings.cv, folds_of, clips["classID"].to_numpy(dtype=np.int64))

    t0 = time.perf_counter()
    feats = features.extract_features(list(clips["path"]), settings.features, progress=progress)
    durations["features"] = time.perf_counter() - t0
    log.info(
        "features: %d clips x %d features (%d computed, %d from cache, %d skipped) in %.1f s",
        feats.X.shape[0],
        feats.X.shape[1] if feats.X.ndim == 2 else 0,
        feats.n_computed,
        feats.n_cached,
        len(feats.skipped),
        durations["features"],
    )
    clips = clips[feats.ok]
    y = clips["classID"].to_numpy(dtype=np.int64)
    fold_of = clips["fold"].to_numpy(dtype=np.int64)
    splits = cv.build_splits(settings.cv, fold_of, y)
    if not splits:
        raise UrbansoundError(
            "no cross-validation split has clips to test on: check data.root, cv.folds and "
            "cv.outer_fold"
        )
    result = RunResult(
        status="running",
        dataset=dataset_name,
        data_root=str(root),
        protocol=cv.protocol_label(settings.cv),
        leaky=settings.cv.name == "random_split",
        n_listed=index.n_listed,
        n_clips=len(clips),
        n_missing=len(index.missing),
        empty_folds=list(index.empty_folds),
        leaky_recordings=[dict(r) for r in index.leaky_recordings],
        skipped=list(feats.skipped),
        class_names=list(index.class_names),
        n_features=int(feats.X.shape[1]),
        overrides=list(overrides),
        trial={"study_name": settings.trial.study_name, "number": settings.trial.number},
        # An embedding kind's network: name, file SHA-256, runtime, licence.
        extra={"feature_model": feats.feature_model} if feats.feature_model else {},
    )

    # torch (about 1.5 s to import) only now: a wrong data.root, cv setting or clip is said first
    from urbansound.training import cross_validation as train

    t0 = time.perf_counter()
    pruned: TrialPruned | None = None
    try:
        cv_result = train.cross_validate(
            feats.X,
            y,
            splits,
            n_classes=len(index.class_names),
            model=settings.model,
            train=settings.train,
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
    write_json(run_dir / "results.json", result.to_dict())
    if result.cv is not None:
        _write_folds_csv(run_dir / "folds.csv", result)
        _write_predictions(run_dir / PREDICTIONS, result, clips)
    if pruned is not None:
        log.warning("%s; results.json marks this job as pruned", pruned)
    return RunOutcome(result=result, figures=figures, pruned=pruned)


PREDICTIONS = "predictions.npz"


def _write_predictions(path: Path, result: RunResult, clips: Any) -> None:
    """Every test row's class probabilities, by fold: ``predictions.npz`` in the run directory.

    Arrays (one row per test clip, folds in split order): ``fold`` (str), ``clip`` (the clip's
    ``slice_file_name``), ``index`` (its row in the run's clip table), ``y_true`` (class id),
    ``probabilities`` ``(n, n_classes)`` float32; and ``class_names``. The report averages these
    across configurations (ensembles) under the same folds.
    """
    import io

    assert result.cv is not None
    preds = result.cv.predictions
    index = np.concatenate([p.test_index for p in preds]) if preds else np.zeros(0, np.int64)
    names = clips["slice_file_name"].to_numpy(dtype=str)
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        fold=np.concatenate([np.full(len(p.test_index), str(p.fold)) for p in preds]),
        clip=names[index],
        index=index,
        y_true=clips["classID"].to_numpy(dtype=np.int64)[index],
        probabilities=np.concatenate([p.probabilities for p in preds]).astype(np.float32),
        class_names=np.asarray(result.class_names, dtype=str),
    )
    atomic_write(path, buf.getvalue())


def _run_figures(run_dir: Path, result: RunResult) -> dict[str, Path]:
    """The run's own figures (confusion matrix, epoch curves); a failure costs only them."""
    try:
        from urbansound.experiment import plots

        written = plots.write_run_figures(run_dir, result.to_dict())
    except Exception as exc:  # figures are extras: a finished run is never lost over one
        log.warning("run figures not written: %s", exc)
        return {}
    return {p.stem: p for p in written}


# Libraries whose DEBUG output floods `hydra.verbose=true` (matplotlib's font scan alone is ~150
# lines); left at WARNING unless a user names them (`hydra.verbose=[matplotlib]`).
_CHATTY_LIBRARIES = ("matplotlib", "PIL", "numba", "urllib3", "asyncio", "git", "comet_ml")


def _quiet_chatty_libraries() -> None:
    """Keep third-party DEBUG logging out of ``hydra.verbose=true`` (which sets the root logger
    to DEBUG); a logger the user set explicitly keeps its level."""
    for name in _CHATTY_LIBRARIES:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


def _remove_if_untouched(run_dir: Path) -> None:
    """Remove the run directory Hydra made for a run that stopped before writing anything.

    A config error or a bad dataset stops the run before its first output: what is left is
    Hydra's ``.hydra/`` and an empty log, a directory that would only clutter ``outputs/runs``.
    Anything else in it (a ``config.yaml``, a non-empty log, a user's file) keeps it.
    """
    import re
    import shutil

    try:
        entries = list(run_dir.iterdir())
        if all(
            (p.name == ".hydra" and p.is_dir()) or (p.suffix == ".log" and p.stat().st_size == 0)
            for p in entries
        ):
            shutil.rmtree(run_dir)
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", run_dir.parent.name):  # Hydra's date folder
                run_dir.parent.rmdir()  # when this run was its only one (else: not empty, kept)
    except OSError:
        pass  # not ours to insist on


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


class CometUploadCommand(Callback):
    """Hydra callback: print the ``comet upload`` command once, after a run or a whole sweep.

    Lists the complete offline archives recorded under the run or sweep directory (each run's
    ``results.json``, the class-samples experiment's ``samples.json``; see
    :func:`urbansound.tracking.archives_under`). Registered in ``conf/config.yaml`` under
    ``hydra.callbacks``, before ``dataset_figures`` (end callbacks run in reverse order).
    """

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        _print_upload_command(Path(config.hydra.runtime.output_dir), list_file=None)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        _print_upload_command(sweep_dir, list_file=sweep_dir / "comet_archives.txt")


def _print_upload_command(directory: Path, *, list_file: Path | None) -> None:
    archives = tracking.archives_under(directory) if directory.is_dir() else []
    command = tracking.upload_command(archives, list_file=list_file)
    if command:
        print(
            f"Comet: {len(archives)} offline archive(s); to upload them (COMET_API_KEY set):\n"
            f"  {command}"
        )


class DatasetFiguresCallback(Callback):
    """Hydra callback: the dataset's class overview and one WAV per class, after a run or sweep.

    Off the run's critical path and at most once per sweep: once the run (``on_run_end``) or the
    whole sweep (``on_multirun_end``) has ended, it reads the dataset from a ``results.json`` of
    the run or sweep directory, draws (or finds in the cache beside the feature cache) the figures
    of :func:`urbansound.experiment.plots.dataset_figures` for the dataset and the stage settings,
    links them into ``<run or sweep dir>/figures/dataset/`` and hands them to
    :func:`urbansound.tracking.log_dataset_samples`. Never raises: a failure is one warning.
    Registered in ``conf/config.yaml`` under ``hydra.callbacks``.
    """

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        dataset_samples(config, Path(config.hydra.runtime.output_dir), sweep=False)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        dataset_samples(config, Path(config.hydra.sweep.dir), sweep=True)


def dataset_samples(config: DictConfig, directory: Path, *, sweep: bool) -> Any:
    """Draw (once) and link the dataset figures for the run or sweep in ``directory``.

    Returns the :class:`urbansound.experiment.plots.DatasetFigures` or ``None`` when there is
    nothing to draw (no finished run) or drawing failed (one warning).
    """
    try:
        return _dataset_samples(config, directory, sweep=sweep)
    except Exception as exc:  # the run's results stand; these are extras
        log.warning("dataset figures not drawn: %s", exc)
        return None


def _dataset_samples(config: DictConfig, directory: Path, *, sweep: bool) -> Any:
    import json

    from urbansound.data import index as data
    from urbansound.experiment import plots

    found = sorted(directory.rglob("results.json")) if directory.is_dir() else []
    results = next((r for r in (_read(p, json) for p in found) if r.get("data_root")), None)
    if results is None:
        return None
    cfg = OmegaConf.to_container(config, resolve=False)
    assert isinstance(cfg, dict)
    cfg.pop("hydra", None)
    settings = settings_from_config(OmegaConf.create(cfg))
    index_log = logging.getLogger(data.__name__)
    level = index_log.level
    index_log.setLevel(logging.ERROR)  # the run has already said what the index had to say
    try:
        index = data.load_index(
            Path(results["data_root"]), missing="skip", name=str(results["dataset"])
        )
    finally:
        index_log.setLevel(level)
    drawn = plots.dataset_figures(
        index.clips,
        class_names=list(results.get("class_names") or index.class_names),
        dataset=index.name,
        # the class overview's spectrograms: the run's hand-made settings, else the tutorial's
        features=f if isinstance(f := settings.features, FeatureSettings) else FeatureSettings(),
        cache_dir=Path(settings.features.cache_dir).expanduser().parent / "figures",
        dest=directory / plots.FIGURES_DIR / "dataset",
    )
    if drawn.figures and settings.tracking.mode != "disabled":
        # The trials name this experiment by its tags (``samples`` and ``study:<name>``).
        study = (results.get("trial") or {}).get("study_name")
        tags = [index.name, *(["sweep", f"study:{study}"] if sweep and study else [])]
        key = tracking.log_dataset_samples(
            settings, figures=drawn.figures, samples=drawn.samples, tags=tags
        )
        if key is not None:  # its archive, for the upload command printed after this callback
            archive = tracking.offline_archive(settings, key)
            record = {"experiment_key": key, "archive": str(archive) if archive else None}
            write_json(
                directory / plots.FIGURES_DIR / "dataset" / "samples.json", {"tracking": record}
            )
    return drawn


def _read(path: Path, json: Any) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@hydra_main  # hydra.main over the packaged config (urbansound.conf); config errors: one line
def main(cfg: DictConfig) -> float:
    """Hydra task: one experiment; returns the mean cross-validation accuracy."""
    from hydra.core.hydra_config import HydraConfig

    _quiet_chatty_libraries()
    try:
        settings = settings_from_config(cfg)
        progress.set_default_mode(settings.progress)
        hc = HydraConfig.get()
        run_dir = Path(hc.runtime.output_dir)
        overrides = list(hc.overrides.task)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(resolved, dict)
        swept = None
        if settings.trial.number is not None:  # a job of the urbansound Optuna sweeper
            from urbansound import sweep

            swept = sweep.trial_params(settings.trial)  # what the sampler chose, typed
        tracker = tracking.start(
            settings,
            run_dir=run_dir,
            config=resolved,
            overrides=overrides,
            swept=swept,
        )
        # Comet sees every epoch, including the one after which the pruner stops the trial.
        callbacks: list[Callable[[EpochMetrics], None]] = [tracker.log_epoch]
        if settings.trial.number is not None:  # a job of the urbansound Optuna sweeper
            from urbansound import sweep

            reporter = sweep.epoch_reporter(settings.trial)
            if reporter is not None:
                callbacks.append(reporter)
            # Links from the Optuna trial (dashboard) to this run and its Comet experiment.
            info = tracker.info()
            sweep.set_trial_attrs(
                settings.trial,
                run_dir=str(run_dir),
                comet_experiment_key=info.get("experiment_key"),
                comet_mode=info.get("mode"),
            )
        outcome: RunOutcome | None = None
        error: BaseException | None = None
        try:
            outcome = run_experiment(
                settings,
                run_dir=run_dir,
                resolved_config=resolved,
                overrides=overrides,
                callbacks=callbacks,
                tracking_info=tracker.info,
            )
        except BaseException as exc:
            error = exc
            raise
        finally:  # whatever the outcome; never raises
            tracker.finish(
                outcome.result if outcome is not None else None,
                run_dir=run_dir,
                figures=outcome.figures if outcome is not None else {},
                error=error,
            )
    except UrbansoundError as exc:
        if _is_multirun():
            raise  # the sweeper records the trial as failed, with this message
        _remove_if_untouched(Path(HydraConfig.get().runtime.output_dir))
        print(f"error: {exc}", file=sys.stderr)  # one line, no traceback
        sys.exit(2)
    except KeyboardInterrupt:
        if _is_multirun():
            raise  # the sweeper queues the trial again and says so
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        _remove_if_untouched(run_dir)
        # results.json is written once, at the end: an interrupted run has none to half-write.
        print(
            f"error: interrupted; {run_dir} holds no results.json (its config.yaml and log "
            "stay); run the same command to start again",
            file=sys.stderr,
        )
        sys.exit(130)

    if outcome.pruned is not None:
        raise outcome.pruned
    result = outcome.result
    log.info(
        "%s on %s (%s), %d clips:\n%s\nrun directory: %s",
        "LEAKY random split" if result.leaky else f"{len(result.cv.folds)}-fold CV",
        result.dataset,
        result.protocol,
        result.n_clips,
        fold_table(result),
        run_dir,
    )
    return float(result.mean_accuracy)


if __name__ == "__main__":
    main()
