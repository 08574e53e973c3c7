"""One cross-validated experiment: ``python -m urbansound.run [overrides]``.

Composes the Hydra config in ``conf/``, validates it, indexes the dataset (UrbanSound8K where it
is found, otherwise the built-in demo corpus), extracts features through the shared cache, trains
the MLP on every cross-validation split and writes into the run directory:

- ``config.yaml``: the resolved configuration,
- ``results.json``: per-fold metrics, mean and std, per-epoch history, dataset, durations,
- ``folds.csv``: one row per fold.

With ``-m`` it is a sweep (``python -m urbansound.run -m n_mfcc=20,40,60``); the task function
returns the mean cross-validation accuracy, the objective a sweeper maximises.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from urbansound import tracking
from urbansound.config import CVSettings, Settings, hydra_main, settings_from_config
from urbansound.errors import TrialPruned, UrbansoundError

log = logging.getLogger("urbansound.run")


def build_splits(cv: CVSettings, folds: np.ndarray, y: np.ndarray) -> list[Any]:
    """The train/test splits of the configured protocol over clips with fold labels ``folds``.

    ``cv.outer_fold`` must already have been removed from ``folds`` by the caller, except with
    ``cv.evaluate_outer``: then the one split trains on every other fold and tests on fold k.
    """
    from urbansound import train

    if cv.name == "random_split":
        return train.random_split(len(y), test_size=cv.test_size, seed=cv.seed, stratify=y)
    if cv.evaluate_outer:  # a search's winner, tested once on the fold the search never saw
        return train.fold_splits(folds, test_folds=[cv.outer_fold])
    return train.fold_splits(folds, test_folds=cv.folds)


def protocol_label(cv: CVSettings) -> str:
    """How the protocol is named in every output; the leaky random split says so."""
    if cv.name == "random_split":
        return "random_split (LEAKY: slices of one recording in train and test)"
    if cv.evaluate_outer:
        return f"folds (outer fold {cv.outer_fold} evaluation: trained on the other folds)"
    if cv.outer_fold is not None:
        return f"folds (outer fold {cv.outer_fold} held out)"
    return "folds"


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _write_folds_csv(path: Path, folds: list[dict[str, Any]]) -> None:
    fields = ["fold", "accuracy", "loss", "n_train", "n_test"]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(folds)


def format_fold_table(folds: list[dict[str, Any]], mean: float, std: float) -> str:
    """The per-fold table printed at the end of a run."""
    lines = [f"{'fold':>8} {'accuracy':>9} {'loss':>8} {'n_train':>8} {'n_test':>7}"]
    for f in folds:
        lines.append(
            f"{f['fold']!s:>8} {f['accuracy']:9.4f} {f['loss']:8.4f} "
            f"{f['n_train']:8d} {f['n_test']:7d}"
        )
    lines.append(f"{'mean':>8} {mean:9.4f} ± {std:.4f} (std over {len(folds)} folds)")
    return "\n".join(lines)


def _history_row(m: Any) -> dict[str, Any]:
    return {
        "epoch": int(m.epoch),
        "train_loss": [float(v) for v in m.train_loss],
        "test_loss": [float(v) for v in m.test_loss],
        "test_accuracy": [float(v) for v in m.test_accuracy],
        "mean_test_accuracy": float(m.mean_test_accuracy),
    }


def run_experiment(
    settings: Settings,
    *,
    run_dir: Path,
    resolved_config: dict[str, Any] | None = None,
    overrides: Sequence[str] = (),
    callbacks: Sequence[Callable[[Any], None]] = (),
    on_index: Callable[[Any], None] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run one experiment and write its outputs into ``run_dir``.

    ``on_index`` receives the dataset index once it is built (the tracker reuses it).
    Returns the content of ``results.json``. Raises :class:`TrialPruned` (after writing
    ``results.json`` with ``status: "pruned"``) when a callback stops training.
    """
    from urbansound import data, features, train

    run_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    durations: dict[str, float] = {}
    if resolved_config is not None:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved_config))

    root, dataset_name = data.resolve_dataset(settings.data)
    index = data.load_index(root, missing=settings.data.missing, name=dataset_name)
    durations["index"] = time.perf_counter() - t_start
    if on_index is not None:
        on_index(index)

    clips = index.clips
    cv = settings.cv
    if cv.outer_fold is not None and not cv.evaluate_outer:
        clips = clips[clips["fold"] != cv.outer_fold]
        log.info("outer fold %d held out of the search: %d clips left", cv.outer_fold, len(clips))

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
    splits = build_splits(cv, fold_of, y)
    if not splits:
        raise UrbansoundError(
            "no cross-validation split has clips to test on: check data.root, cv.folds and "
            "cv.outer_fold"
        )

    history: list[dict[str, Any]] = []
    results: dict[str, Any] = {
        "status": "running",
        "dataset": dataset_name,
        "data_root": str(root),
        "protocol": protocol_label(cv),
        "leaky": cv.name == "random_split",
        "n_listed": index.n_listed,
        "n_clips": len(clips),
        "n_missing": len(index.missing),
        "empty_folds": list(index.empty_folds),
        "skipped": list(feats.skipped),
        "class_names": list(index.class_names),
        "n_features": int(feats.X.shape[1]),
        "overrides": list(overrides),
        "trial": {
            "study_name": settings.trial.study_name,
            "number": settings.trial.number,
        },
    }

    def record(m: Any) -> None:
        history.append(_history_row(m))

    t0 = time.perf_counter()
    try:
        cv_result = train.cross_validate(
            feats.X,
            y,
            splits,
            n_classes=len(index.class_names),
            model=settings.model,
            train=settings.train,
            callbacks=[record, *callbacks],
            progress=progress,
        )
    except TrialPruned as pruned:
        durations["train"] = time.perf_counter() - t0
        durations["total"] = time.perf_counter() - t_start
        results.update(
            status="pruned",
            pruned_at_epoch=pruned.epoch,
            mean_accuracy=pruned.value,
            history=history,
            durations=durations,
        )
        _write_json(run_dir / "results.json", results)
        log.warning("%s; results.json marks this job as pruned", pruned)
        raise
    durations["train"] = time.perf_counter() - t0
    durations["total"] = time.perf_counter() - t_start

    out = cv_result.to_dict()
    results.update(
        status="complete",
        folds=out["folds"],
        mean_accuracy=float(cv_result.mean_accuracy),
        std_accuracy=float(cv_result.std_accuracy),
        history=history,
        durations=durations,
    )
    _write_json(run_dir / "results.json", results)
    _write_folds_csv(run_dir / "folds.csv", out["folds"])
    try:  # confusion matrix, epoch curves, the dataset's class examples (drawn once per dataset)
        from urbansound import plots

        plots.run_figures(run_dir, results, clips=index.clips, features=settings.features)
    except Exception as exc:  # figures are extras: a finished run is never lost over one
        log.warning("run figures not written: %s", exc)
    return results


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


class CometUploadCommand(Callback):
    """Hydra callback: print the ``comet upload`` command once, after a run or a whole sweep.

    Lists the offline archives recorded in the ``results.json`` files of the run or sweep
    directory (registered in ``conf/config.yaml`` under ``hydra.callbacks``).
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


@hydra_main  # hydra.main over the packaged config (urbansound.conf); config errors: one line
def main(cfg: DictConfig) -> float:
    """Hydra task: one experiment; returns the mean cross-validation accuracy."""
    from hydra.core.hydra_config import HydraConfig

    try:
        settings = settings_from_config(cfg)
        hc = HydraConfig.get()
        run_dir = Path(hc.runtime.output_dir)
        overrides = list(hc.overrides.task)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        tracker = tracking.start(settings, run_dir=run_dir, config=resolved, overrides=overrides)
        # Comet sees every epoch, including the one after which the pruner stops the trial.
        callbacks: list[Callable[[Any], None]] = [tracker.log_epoch]
        if settings.trial.number is not None:  # a job of the urbansound Optuna sweeper
            from urbansound import sweep

            reporter = sweep.epoch_reporter(settings.trial)
            if reporter is not None:
                callbacks.append(reporter)
            # Links from the Optuna trial (dashboard) to this run and its Comet experiment.
            sweep.set_trial_attrs(
                settings.trial,
                run_dir=str(run_dir),
                comet_experiment_key=tracker.experiment_key,
                comet_mode=tracker.mode,
            )
        try:
            results = run_experiment(
                settings,
                run_dir=run_dir,
                resolved_config=resolved,
                overrides=overrides,
                callbacks=callbacks,
                on_index=tracker.use_index,
            )
        finally:
            tracker.finish(run_dir)  # whatever the outcome; never raises
    except UrbansoundError as exc:
        if _is_multirun():
            raise  # the sweeper records the trial as failed, with this message
        print(f"error: {exc}", file=sys.stderr)  # one line, no traceback
        sys.exit(2)

    table = format_fold_table(results["folds"], results["mean_accuracy"], results["std_accuracy"])
    log.info(
        "%s on %s (%s), %d clips:\n%s\nrun directory: %s",
        "LEAKY random split" if results["leaky"] else f"{len(results['folds'])}-fold CV",
        results["dataset"],
        results["protocol"],
        results["n_clips"],
        table,
        run_dir,
    )
    return float(results["mean_accuracy"])


if __name__ == "__main__":
    main()
