"""Opening Comet experiments: one per run or trial (:func:`start`), one for a dataset's class
samples (:func:`log_dataset_samples`), and finding an experiment's offline archive.

Each returns instead of raising: a tracker that could not start tracks nothing, after one warning
line (see the package docstring for the modes and what an experiment holds).
"""

from __future__ import annotations

import json
import logging
import platform
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from urbansound.errors import OutputError
from urbansound.tracking.archives import is_complete_archive
from urbansound.tracking.comet import comet_settings, create_experiment
from urbansound.tracking.naming import (
    SAMPLES_TAG,
    experiment_name,
    experiment_tags,
    flatten_config,
    reason,
    rerun_command,
    samples_tags,
)
from urbansound.tracking.tracker import WHERE_ARCHIVES_GO, Tracker
from urbansound.utils.redaction import redact_url

if TYPE_CHECKING:
    from urbansound.config.settings import Settings

__all__ = ["log_dataset_samples", "offline_archive", "start"]

log = logging.getLogger("urbansound.tracking")


def start(
    settings: Settings,
    *,
    run_dir: Path,
    config: Mapping[str, Any],
    overrides: Sequence[str],
    swept: Mapping[str, Any] | None = None,
) -> Tracker:
    """Open the Comet experiment of one run (or sweep trial); never raises.

    Parameters
    ----------
    settings:
        The run's validated settings (``tracking`` and ``trial`` are used here).
    run_dir:
        The run directory (its name names a single run's experiment).
    config:
        The resolved config, logged flattened as parameters (:func:`flatten_config`).
    overrides:
        The job's command-line overrides: the experiment's name and the re-run command.
    swept:
        In a sweep, the trial's swept parameters (name -> value): Comet's
        ``optimizer_parameters``.

    Returns
    -------
    Tracker
        Active in mode ``online`` or ``offline``; a no-op in mode ``disabled``, or ``failed``
        when the experiment could not be created (after one warning line).
    """
    if settings.tracking.mode == "disabled":
        return Tracker(mode="disabled", settings=settings)
    name = experiment_name(settings, run_dir=run_dir, overrides=overrides)
    command = rerun_command(overrides)
    try:
        comet = comet_settings(settings)
        experiment, mode, note = create_experiment(
            settings, comet, name=name, tags=experiment_tags(settings), command=command
        )
    except Exception as exc:
        message = f"Comet: tracking is off for this run ({reason(exc)})"
        if isinstance(exc, OutputError):  # the offline directory: say which key moves it
            message += f"; {WHERE_ARCHIVES_GO}"
        log.warning("%s", message)
        return Tracker(mode="failed", settings=settings, error=message)
    tracker = Tracker(
        experiment, mode=mode, settings=settings, comet=comet, swept=swept, error=note
    )
    trial = settings.trial
    others = {
        "run_dir": str(Path(run_dir).absolute()),
        "overrides": json.dumps(list(overrides)),
        "command": command,
        "study_name": trial.study_name,
        "trial_number": trial.number,
        "storage": redact_url(trial.storage),
        "samples_experiment": " ".join(samples_tags(settings)),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
    }
    tracker.log_identity(flatten_config(config), others)
    log.info(
        "Comet: %s experiment %s%s",
        mode,
        tracker.experiment_key,
        f" ({tracker.url})" if tracker.url else f", archive {tracker.archive}",
    )
    return tracker


def log_dataset_samples(
    settings: Settings,
    *,
    figures: Mapping[str, Path],
    samples: Sequence[tuple[str, Path]],
    tags: Sequence[str],
) -> str | None:
    """Log a dataset's class examples as one experiment of their own; its key, or ``None``.

    Called once per sweep (or single run) and dataset, after it, by a Hydra callback; the trial
    experiments find it by its tags (``samples`` plus ``tags``, e.g. the dataset and
    ``study:<name>``; see :meth:`Tracker.info`). Never raises: a failure is one warning line and
    ``None``; ``None`` too when tracking is disabled or there is nothing to log.

    Parameters
    ----------
    settings:
        The settings of the sweep or run (``tracking``; ``log_figures`` / ``log_audio`` select
        what is logged).
    figures:
        Image name -> PNG path (the per-class overview figures), logged as images.
    samples:
        ``(class name, WAV path)``, one clip per class, logged as audio with the class name in
        its metadata.
    tags:
        The experiment's tags besides ``samples``.
    """
    ts = settings.tracking
    figures = dict(figures) if ts.log_figures else {}
    samples = list(samples) if ts.log_audio else []
    if ts.mode == "disabled" or not (figures or samples):
        return None
    all_tags = [SAMPLES_TAG, *(t for t in tags if t != SAMPLES_TAG)]
    name = "class samples" + "".join(f" {t}" for t in tags if ":" not in t)
    try:
        comet = comet_settings(settings)
        experiment, mode, note = create_experiment(
            settings, comet, name=name, tags=all_tags, command=rerun_command([])
        )
    except Exception as exc:
        log.warning("Comet: the class samples are not logged (%s)", reason(exc))
        return None
    tracker = Tracker(experiment, mode=mode, settings=settings, comet=comet, error=note)
    tracker.log_figures(figures)
    for class_name, path in samples:
        tracker.log_audio(class_name, path)
    tracker.end()
    if mode == "offline" and tracker.archive is None:
        return None
    return tracker.experiment_key


def offline_archive(settings: Settings, experiment_key: str | None) -> Path | None:
    """The complete offline archive of ``experiment_key`` in the offline directory, if any.

    For the caller of :func:`log_dataset_samples`, to add that experiment's archive to the
    upload command. Never raises.
    """
    if not experiment_key:
        return None
    try:
        path = comet_settings(settings).offline_dir / f"{experiment_key}.zip"
    except Exception:
        return None
    return path if is_complete_archive(path) else None
