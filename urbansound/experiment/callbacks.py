"""Hydra callbacks of ``urbansound.run``: what happens once after a run or a whole sweep.

Both are registered in ``urbansound/conf/config.yaml`` under ``hydra.callbacks`` (Hydra calls the
end callbacks in reverse order: :class:`DatasetFiguresCallback` first, so that the upload command
lists the class-samples experiment's archive too). Neither ever fails a run: a problem is one
warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from urbansound.config.checks import settings_from_config
from urbansound.config.settings import FeatureSettings
from urbansound.errors import DataError
from urbansound.experiment.rundir import RESULTS_FILE, read_results
from urbansound.training.results import RunResult
from urbansound.utils.files import write_json

log = logging.getLogger("urbansound.run")

__all__ = ["CometUploadCommand", "DatasetFiguresCallback", "dataset_samples", "study_sweep_dirs"]


class CometUploadCommand(Callback):
    """Print the ``comet upload`` command once, after a run or a whole sweep.

    Lists the complete offline archives recorded under the run directory, or under every sweep
    directory of the study on this machine (:func:`study_sweep_dirs`: a resumed sweep's
    earlier ones too): each run's ``results.json``, the class-samples experiment's
    ``samples.json`` (:func:`urbansound.tracking.archives.archives_under`).
    """

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        _print_upload_command([Path(config.hydra.runtime.output_dir)], list_file=None)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        directories = study_sweep_dirs(sweep_dir)
        _print_upload_command(directories, list_file=sweep_dir / "comet_archives.txt")


def study_sweep_dirs(sweep_dir: Path) -> list[Path]:
    """The sweep directories on this machine of the study that ``sweep_dir`` belongs to.

    ``sweep_dir`` first, then every other directory the study's storage records its sweeps
    wrote into on this machine (:func:`urbansound.sweep.study.study_sweep_dirs`), opened with
    the storage and password variable of ``sweep_dir``'s ``study.json``, that still exists. A
    directory without a readable ``study.json``, or a storage that cannot be opened now, gives
    ``[sweep_dir]``: the upload line then names less, and no sweep fails for it.
    """
    from urbansound.errors import UrbansoundError
    from urbansound.sweep import study
    from urbansound.sweep.ownership import read_study_file

    try:
        info = read_study_file(sweep_dir)
        if info is None:  # a sweep of another sweeper, or none recorded
            return [sweep_dir]
        recorded = study.study_sweep_dirs(
            info["storage"], info["study_name"], password_env=info.get("password_env")
        )
    except UrbansoundError as exc:
        log.warning("comet upload line: the study's other sweep directories are unknown (%s)", exc)
        return [sweep_dir]
    mine = sweep_dir.resolve()
    return [sweep_dir, *(d for d in recorded if d.resolve() != mine and d.is_dir())]


def _print_upload_command(directories: list[Path], *, list_file: Path | None) -> None:
    from urbansound.tracking.archives import archives_under, upload_command

    archives = archives_under(*directories)
    command = upload_command(archives, list_file=list_file)
    if command:
        print(
            f"Comet: {len(archives)} offline archive(s); to upload them (COMET_API_KEY set):\n"
            f"  {command}"
        )


class DatasetFiguresCallback(Callback):
    """The dataset's class overview and one WAV per class, after a run or a sweep.

    Off the run's critical path and at most once per sweep: once the run (``on_run_end``) or the
    whole sweep (``on_multirun_end``) has ended, it reads the dataset from a ``results.json`` of
    the run or sweep directory, draws (or finds in ``<features.cache_dir>/figures``) the figures
    of :func:`urbansound.experiment.plots.dataset_figures` for the dataset and the stage settings,
    links them into ``<run or sweep dir>/figures/dataset/`` and hands them to
    :func:`urbansound.tracking.experiments.log_dataset_samples`.
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


def _first_result(directory: Path) -> RunResult | None:
    """The first readable ``results.json`` under ``directory`` (sorted paths) that names its
    dataset's folder, or None."""
    found = sorted(directory.rglob(RESULTS_FILE)) if directory.is_dir() else []
    for path in found:
        try:
            result = read_results(path.parent)
        except DataError as exc:  # another job's file may be broken: the next one will do
            log.debug("%s", exc)
            continue
        if result.data_root:
            return result
    return None


def _dataset_samples(config: DictConfig, directory: Path, *, sweep: bool) -> Any:
    from urbansound.data.index import load_index
    from urbansound.experiment import plots
    from urbansound.tracking.experiments import log_dataset_samples, offline_archive

    result = _first_result(directory)
    if result is None:
        return None
    cfg = OmegaConf.to_container(config, resolve=False)
    assert isinstance(cfg, dict)
    cfg.pop("hydra", None)
    settings = settings_from_config(OmegaConf.create(cfg))
    index_log = logging.getLogger("urbansound.data.index")
    level = index_log.level
    index_log.setLevel(logging.ERROR)  # the run has already said what the index had to say
    try:
        index = load_index(Path(result.data_root), missing="skip", name=result.dataset)
    finally:
        index_log.setLevel(level)
    drawn = plots.dataset_figures(
        index.clips,
        class_names=list(result.class_names or index.class_names),
        dataset=index.name,
        # the class overview's spectrograms: the run's hand-made settings, else the tutorial's
        features=f if isinstance(f := settings.features, FeatureSettings) else FeatureSettings(),
        cache_dir=plots.dataset_figures_cache(settings.features),
        dest=directory / plots.FIGURES_DIR / "dataset",
    )
    if drawn.figures and settings.tracking.mode != "disabled":
        # The trials name this experiment by its tags (``samples`` and ``study:<name>``).
        study = result.trial.get("study_name")
        tags = [index.name, *(["sweep", f"study:{study}"] if sweep and study else [])]
        key = log_dataset_samples(settings, figures=drawn.figures, samples=drawn.samples, tags=tags)
        if key is not None:  # its archive, for the upload command printed after this callback
            archive = offline_archive(settings, key)
            record = {"experiment_key": key, "archive": str(archive) if archive else None}
            write_json(
                directory / plots.FIGURES_DIR / "dataset" / "samples.json", {"tracking": record}
            )
    return drawn
