"""Comet experiment tracking: one experiment per run and per sweep trial, offline by default.

:func:`start` opens the experiment of one run and returns a :class:`Tracker`; ``run.py`` passes
:meth:`Tracker.log_epoch` to the trainer as an epoch callback and calls :meth:`Tracker.finish` when
the run is over, whatever its outcome. This is the only module that imports ``comet_ml`` (lazily,
on the first tracked run).

Modes (``tracking.mode``)
    ``auto`` is online when a Comet API key is configured (``COMET_API_KEY`` or Comet's config
    file ``~/.comet.config``), otherwise offline. ``online`` first asks Comet's server for its
    version, with a timeout of a few seconds; when it does not answer, when there is no key, when
    the key is refused or the experiment cannot be created, the run logs one warning line and
    writes an offline archive instead. ``offline`` writes one archive per experiment,
    ``<tracking.offline_dir>/<key>.zip``, to be uploaded later with ``comet upload``.
    ``disabled`` tracks nothing.

What an experiment holds
    - parameters: the resolved config flattened to dotted names (``features.n_mfcc``,
      ``train.lr``; lists as JSON text), the same names in every run so Comet's comparison views
      line up; the sweeper's ``trial.*`` keys are not parameters;
    - tags: the dataset (``demo`` or ``urbansound8k``), and in a sweep ``sweep``,
      ``study:<name>`` and ``trial:<number>``; ``pruned`` / ``failed`` / ``leaky-split`` when so;
    - per epoch (step = epoch): ``train_loss``, ``test_loss``, ``test_accuracy`` (means over the
      folds; ``test_accuracy`` is the objective's curve) and the same per fold with a
      ``_fold_<k>`` suffix;
    - at the end: ``accuracy_fold_<k>``, ``loss_fold_<k>``, ``mean_accuracy``, ``std_accuracy``,
      ``class_accuracy_<class>``; the confusion matrix summed over the test folds and one per
      fold through Comet's confusion-matrix API with the class names; the run directory's
      ``config.yaml``, ``.hydra/*.yaml`` (as ``hydra/...``), ``results.json``, ``folds.csv`` and
      log file as assets; "others" with the dataset, protocol, status, run directory, study,
      trial number and storage (password hidden); in a sweep, Comet's optimization fields
      (``log_optimization``: study name as optimization id, ``mean_accuracy``, ``maximize``,
      the trial's overridden parameters); with ``tracking.log_model``, the model files that the
      run left in its run directory (nothing in this project writes one yet).

Audio samples and figures (``tracking.log_audio`` / ``tracking.log_figures``)
    The tutorial's examples, one clip per class (decoded at ``features.sr``) and a waveform and an
    MFCC image per class, are the same for every trial of a sweep, so they are logged once per
    sweep (study) and dataset, by the first trial to finish, and once per dataset for single
    runs; the other experiments name that experiment in the ``samples_experiment`` other. A
    claim file under ``<offline_dir>/.samples/`` decides which experiment logs them, also across
    parallel workers. This keeps each trial's archive to a few hundred kilobytes.

Failures
    Tracking never costs a result: every method catches its own errors, logs each kind of
    failure once as a warning, and the run goes on (a tracker that could not start tracks
    nothing). Comet's own console output is limited to warnings; its per-experiment "comet
    upload" lines are replaced by one command per run or sweep (:func:`upload_command`).

Before importing ``comet_ml`` this module sets a few Comet settings as environment defaults (an
explicitly set environment variable wins): no import hooks into torch or scikit-learn
(``COMET_DISABLE_AUTO_LOGGING``: everything is logged explicitly here), no crash reports to
Comet's error tracker (``COMET_ERROR_TRACKING_ENABLE``), console messages from warnings up
(``COMET_LOGGING_CONSOLE``), no announcements (``COMET_DISABLE_ANNOUNCEMENT``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import re
import shlex
import socket
import ssl
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from urbansound.config import Settings
    from urbansound.train import EpochMetrics

log = logging.getLogger(__name__)

__all__ = [
    "Tracker",
    "archives_under",
    "experiment_name",
    "experiment_tags",
    "flatten_config",
    "start",
    "upload_command",
]

#: Comet settings applied as environment defaults before ``comet_ml`` is first imported.
COMET_ENV_DEFAULTS: dict[str, str] = {
    "COMET_DISABLE_AUTO_LOGGING": "1",
    "COMET_ERROR_TRACKING_ENABLE": "false",
    "COMET_LOGGING_CONSOLE": "WARNING",
    "COMET_DISABLE_ANNOUNCEMENT": "true",
}
#: Seconds to wait for Comet's server to answer its version check in online mode.
PROBE_TIMEOUT_S = 3.0
#: Config sections that are not parameters of the experiment.
_NOT_PARAMETERS = ("trial", "hydra")
#: The run directory's files logged as assets, with their asset names.
_RUN_FILES = {
    "config.yaml": "config.yaml",
    ".hydra/config.yaml": "hydra/config.yaml",
    ".hydra/hydra.yaml": "hydra/hydra.yaml",
    ".hydra/overrides.yaml": "hydra/overrides.yaml",
    "results.json": "results.json",
    "folds.csv": "folds.csv",
}
_INLINE_ARCHIVES = 8
#: Model files in the run directory that ``tracking.log_model`` logs, and their Comet model name.
MODEL_SUFFIXES = (".pt", ".pth", ".onnx", ".safetensors")
MODEL_NAME = "urbansound-mlp"


# --------------------------------------------------------------------------------------------
# Pure helpers: names, tags, parameters


def flatten_config(config: Mapping[str, Any], *, prefix: str = "") -> dict[str, Any]:
    """The resolved config as experiment parameters with stable dotted names.

    Nested mappings become ``group.key``; lists and tuples become JSON text (``"[256, 256]"``) so
    that every parameter is a scalar that Comet compares across experiments. The ``trial`` and
    ``hydra`` sections are left out.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if not prefix and key in _NOT_PARAMETERS:
            continue
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, prefix=f"{name}."))
        elif isinstance(value, list | tuple):
            flat[name] = json.dumps(list(value))
        else:
            flat[name] = value
    return flat


def experiment_tags(settings: Settings, *, dataset: str | None = None) -> list[str]:
    """Tags shared by the experiments of one study: dataset, ``sweep``, study and trial."""
    tags: list[str] = []
    if dataset:
        tags.append(dataset)
    trial = settings.trial
    if trial.number is not None or trial.study_name is not None:
        tags.append("sweep")
    if trial.study_name is not None:
        tags.append(f"study:{trial.study_name}")
    if trial.number is not None:
        tags.append(f"trial:{trial.number}")
    return tags


def experiment_name(settings: Settings, *, run_dir: str | Path, overrides: Sequence[str]) -> str:
    """``<study>#<trial>`` in a sweep; otherwise the run's overrides, or its directory's name."""
    trial = settings.trial
    if trial.number is not None:
        return f"{trial.study_name or 'trial'}#{trial.number}"
    shown = [o for o in overrides if not o.startswith(("trial.", "hydra."))]
    name = " ".join(shown) if shown else f"run {Path(run_dir).name}"
    return name if len(name) <= 100 else name[:97] + "..."


def swept_parameters(overrides: Sequence[str], flat: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters a job's overrides set (``key=value``), typed from the flattened config."""
    params: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.lstrip("+")
        if not sep or key.startswith(("~", "trial.", "hydra.")) or key in _NOT_PARAMETERS:
            continue
        params[key] = flat.get(key, value)
    return params


def _redact(url: str | None) -> str | None:
    """A storage URL without its password."""
    if url is None:
        return None
    return re.sub(r"(://[^/:@]+:)[^@/]*@", r"\1***@", url)


def _metric_key(fold: Any) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", str(fold))


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# --------------------------------------------------------------------------------------------
# Upload command


def archives_under(directory: str | Path) -> list[Path]:
    """The offline archives recorded in the ``results.json`` files under ``directory``.

    Each tracked run records its archive in ``results.json`` (``tracking.archive``); archives that
    no longer exist are left out. Sorted by path.
    """
    found: set[Path] = set()
    for results in Path(directory).rglob("results.json"):
        try:
            archive = json.loads(results.read_text()).get("tracking", {}).get("archive")
        except (OSError, ValueError, AttributeError):
            continue
        if archive and Path(archive).is_file():
            found.add(Path(archive))
    return sorted(found)


def upload_command(archives: Iterable[str | Path], *, list_file: str | Path | None = None) -> str:
    """The shell command that uploads offline archives to Comet (``""`` when there are none).

    Up to a few archives are named on the command line; with more and a ``list_file``, their paths
    are written there, one per line, and the command reads them with ``xargs``. Paths under the
    working directory are shown relative to it.
    """
    paths = [Path(p) for p in archives]
    if not paths:
        return ""

    def shown(p: Path) -> str:
        try:
            return str(p.resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(p)

    if len(paths) > _INLINE_ARCHIVES and list_file is not None:
        list_file = Path(list_file)
        list_file.write_text("".join(f"{p.resolve()}\n" for p in paths))
        return f"xargs comet upload < {shlex.quote(shown(list_file))}"
    return "comet upload " + " ".join(shlex.quote(shown(p)) for p in paths)


# --------------------------------------------------------------------------------------------
# comet_ml access


def _import_comet() -> Any:
    """Import ``comet_ml`` with this project's Comet defaults (see the module docstring)."""
    for key, value in COMET_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    import comet_ml

    return comet_ml


@contextlib.contextmanager
def _comet_silenced() -> Iterator[None]:
    """Hide Comet's own error lines while trying online mode; the fallback says it in one line."""
    comet_logger = logging.getLogger("comet_ml")
    level = comet_logger.level
    comet_logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        comet_logger.setLevel(level)


def _api_key() -> str | None:
    """The API key Comet would use (``COMET_API_KEY`` or its config file), if any."""
    from comet_ml.config import get_api_key, get_config

    return get_api_key(None, get_config())


def _probe_server() -> str | None:
    """``None`` when Comet's server answers its version check; otherwise a short reason.

    One plain request with :data:`PROBE_TIMEOUT_S` (through the environment's proxy, if any), so
    that an offline machine or an unreachable server is detected in seconds rather than after
    Comet's own retries.
    """
    from comet_ml.config import (
        get_api_key,
        get_check_tls_certificate,
        get_comet_root_url,
        get_config,
    )
    from comet_ml.connection.connection_url_helpers import get_backend_version_url

    config = get_config()
    get_api_key(None, config)  # a key may carry its own server address
    url = get_backend_version_url(get_comet_root_url(config))
    context = ssl.create_default_context()
    if not get_check_tls_certificate(config):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S, context=context) as response:
            response.read(1024)
    except urllib.error.HTTPError as exc:
        return f"{url} answered HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return f"cannot reach {url}: {getattr(exc, 'reason', None) or exc}"
    return None


# --------------------------------------------------------------------------------------------
# The tracker


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
        The offline archive's path (written by :meth:`end`), ``None`` online.
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
        parameters: Mapping[str, Any] | None = None,
        overrides: Sequence[str] = (),
        offline_dir: Path | None = None,
        error: str | None = None,
    ) -> None:
        self._exp = experiment
        self.mode = mode
        self._settings = settings
        self._parameters = dict(parameters or {})
        self._overrides = list(overrides)
        self._offline_dir = offline_dir
        self.errors: list[str] = [error] if error else []
        self._failed: set[str] = set()
        self._ended = False
        self._last_epoch = 0
        self._index: Any = None
        self.experiment_key: str | None = None
        self.archive: Path | None = None
        self.url: str | None = None
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

    @property
    def info(self) -> dict[str, Any]:
        """What ``results.json`` records under ``tracking``."""
        return {
            "mode": self.mode,
            "experiment_key": self.experiment_key,
            "archive": str(self.archive) if self.archive is not None else None,
            "url": self.url,
            "project_name": self._settings.tracking.project_name if self._settings else None,
            "errors": list(self.errors),
        }

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
                self.errors.append(message)
                log.warning("%s; the run goes on without it", message)
            else:
                log.debug("%s", message)
            return None

    # -- during the run ---------------------------------------------------------------------

    def use_index(self, index: Any) -> None:
        """Keep the run's dataset index, so the class samples need not index the dataset again."""
        self._index = index

    def log_epoch(self, metrics: EpochMetrics) -> None:
        """The epoch callback (a ``urbansound.train.EpochCallback``): curves at step = epoch."""
        self._attempt("the epoch metrics", self._log_epoch, metrics)

    def _log_epoch(self, m: EpochMetrics) -> None:
        epoch = int(m.epoch)
        values: dict[str, float | None] = {
            "train_loss": _finite(m.mean_train_loss),
            "test_loss": _finite(m.mean_test_loss),
            "test_accuracy": _finite(m.mean_test_accuracy),
        }
        for i, fold in enumerate(m.folds):
            k = _metric_key(fold)
            values[f"train_loss_fold_{k}"] = _finite(m.train_loss[i])
            values[f"test_loss_fold_{k}"] = _finite(m.test_loss[i])
            values[f"test_accuracy_fold_{k}"] = _finite(m.test_accuracy[i])
        finite = {name: v for name, v in values.items() if v is not None}
        self._exp.log_metrics(finite, step=epoch, epoch=epoch)
        self._last_epoch = max(self._last_epoch, epoch)

    # -- at the end -------------------------------------------------------------------------

    def log_results(
        self, results: Mapping[str, Any] | Any, *, class_names: Sequence[str] | None = None
    ) -> None:
        """Final metrics, confusion matrices, tags and status of a run.

        ``results`` is the run's ``results.json`` content (complete or pruned) or a
        :class:`urbansound.train.CVResult`; ``class_names`` default to ``results["class_names"]``.
        """
        data = results.to_dict() if hasattr(results, "to_dict") else dict(results)
        names = [str(n) for n in (class_names or data.get("class_names") or [])]
        self._attempt("the run's status", self._log_status, data)
        self._attempt("the per-fold metrics", self._log_fold_metrics, data, names)
        self._attempt("the confusion matrix", self._log_confusion, data, names)
        if data.get("status", "complete") == "complete":
            self._attempt("the optimization fields", self._log_optimization, data)

    def _step(self, data: Mapping[str, Any]) -> int:
        history = data.get("history") or []
        epochs = [int(h["epoch"]) for h in history if isinstance(h, Mapping) and "epoch" in h]
        return max([self._last_epoch, *epochs])

    def _log_status(self, data: Mapping[str, Any]) -> None:
        status = str(data.get("status", "complete"))
        tags = []
        if data.get("dataset"):
            tags.append(str(data["dataset"]))
        if data.get("leaky"):
            tags.append("leaky-split")
        if status != "complete":
            tags.append(status)
        if tags:
            self._exp.add_tags(tags)
        others = {
            "status": status,
            "dataset": data.get("dataset"),
            "data_root": data.get("data_root"),
            "protocol": data.get("protocol"),
            "n_clips": data.get("n_clips"),
            "n_missing": data.get("n_missing"),
            "n_features": data.get("n_features"),
            "pruned_at_epoch": data.get("pruned_at_epoch"),
        }
        self._exp.log_others({k: v for k, v in others.items() if v is not None})

    def _log_fold_metrics(self, data: Mapping[str, Any], names: Sequence[str]) -> None:
        step = self._step(data)
        values: dict[str, float | None] = {}
        for fold in data.get("folds") or []:
            k = _metric_key(fold["fold"])
            values[f"accuracy_fold_{k}"] = _finite(fold.get("accuracy"))
            values[f"loss_fold_{k}"] = _finite(fold.get("loss"))
        if data.get("status", "complete") == "complete":
            values["mean_accuracy"] = _finite(data.get("mean_accuracy"))
            values["std_accuracy"] = _finite(data.get("std_accuracy"))
        total = _summed_confusion(data.get("folds") or [])
        if total is not None and len(names) == len(total):
            for i, (name, row) in enumerate(zip(names, total, strict=True)):
                if sum(row):
                    values[f"class_accuracy_{name}"] = row[i] / sum(row)
        finite = {name: v for name, v in values.items() if v is not None}
        if finite:
            self._exp.log_metrics(finite, step=step, epoch=step or None)

    def _log_confusion(self, data: Mapping[str, Any], names: Sequence[str]) -> None:
        folds = [f for f in data.get("folds") or [] if f.get("confusion")]
        total = _summed_confusion(folds)
        if total is None:
            return
        labels = list(names) if len(names) == len(total) else [str(i) for i in range(len(total))]
        step = self._step(data)
        self._exp.log_confusion_matrix(
            matrix=total,
            labels=labels,
            title=f"Confusion matrix, summed over {len(folds)} test folds",
            file_name="confusion-matrix.json",
            step=step,
        )
        for fold in folds:
            k = _metric_key(fold["fold"])
            self._exp.log_confusion_matrix(
                matrix=[[int(v) for v in row] for row in fold["confusion"]],
                labels=labels,
                title=f"Confusion matrix, test fold {fold['fold']}",
                file_name=f"confusion-matrix-fold-{k}.json",
                step=step,
            )

    def _log_optimization(self, data: Mapping[str, Any]) -> None:
        settings = self._settings
        if settings is None or settings.trial.study_name is None:
            return
        value = _finite(data.get("mean_accuracy"))
        if value is None:
            return
        self._exp.log_optimization(
            optimization_id=settings.trial.study_name,
            metric_name="mean_accuracy",
            metric_value=value,
            parameters=swept_parameters(self._overrides, self._parameters),
            objective="maximize",
        )

    def log_run_files(self, run_dir: str | Path) -> None:
        """The resolved Hydra config files, results, per-fold table and log file as assets.

        With ``tracking.log_model``, also the model files (:data:`MODEL_SUFFIXES`) in ``run_dir``
        as Comet model :data:`MODEL_NAME`.
        """
        self._attempt("the run directory's files", self._log_run_files, Path(run_dir))

    def _log_run_files(self, run_dir: Path) -> None:
        for rel, name in _RUN_FILES.items():
            path = run_dir / rel
            if path.is_file():
                self._exp.log_asset(str(path), file_name=name)
        for path in sorted(run_dir.glob("*.log")):
            self._exp.log_asset(str(path), file_name=path.name)
        if self._settings is not None and self._settings.tracking.log_model:
            for path in sorted(p for p in run_dir.iterdir() if p.suffix in MODEL_SUFFIXES):
                self._exp.log_model(MODEL_NAME, str(path), file_name=path.name)

    def log_samples(self, results: Mapping[str, Any]) -> None:
        """The tutorial's audio clip and figures per class, once per sweep and dataset."""
        settings = self._settings
        if settings is None or not (settings.tracking.log_audio or settings.tracking.log_figures):
            return
        if not results.get("data_root") or not self.active:
            return
        claim: Path | None = None
        try:
            claim = self._claim_samples(results)
            if claim is not None:
                self._log_samples(results)
        except Exception as exc:
            if claim is not None:
                claim.unlink(missing_ok=True)  # a later run of the sweep tries again
            message = f"Comet: could not log the audio samples and figures ({exc})"
            self.errors.append(message)
            log.warning("%s; the run goes on without them", message)

    def _claim_samples(self, results: Mapping[str, Any]) -> Path | None:
        """Create the claim file of this sweep and dataset; ``None`` when another run holds it.

        In that case the other run's experiment key is logged as ``samples_experiment``.
        """
        assert self._settings is not None
        ident = [self._settings.trial.study_name, str(results["data_root"])]
        digest = hashlib.sha1(json.dumps(ident).encode()).hexdigest()[:16]
        base = self._offline_dir or Path(self._settings.tracking.offline_dir)
        claim = base / ".samples" / f"{digest}.json"
        claim.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = json.loads(claim.read_text()).get("experiment_key")
            except (OSError, ValueError):
                owner = None
            if owner:
                self._exp.log_other("samples_experiment", owner)
            return None
        with os.fdopen(fd, "w") as fh:
            json.dump({"experiment_key": self.experiment_key, "ident": ident}, fh)
        return claim

    def _log_samples(self, results: Mapping[str, Any]) -> None:
        import soundfile

        from urbansound import audio, data

        assert self._settings is not None
        tracking, f = self._settings.tracking, self._settings.features
        root = Path(str(results["data_root"]))
        dataset = str(results.get("dataset") or "urbansound8k")
        index = self._index
        if index is None or Path(index.root) != root:  # not handed the run's index
            index = data.load_index(root, missing="skip", name=dataset)
        names = list(results.get("class_names") or index.class_names)
        if tracking.log_audio:
            with tempfile.TemporaryDirectory(prefix="urbansound-samples-") as tmp:
                for cid, path in _one_clip_per_class(index.clips):
                    name = names[cid] if cid < len(names) else str(cid)
                    wav = Path(tmp) / f"{cid}_{name}.wav"  # decoded at features.sr, 16-bit PCM
                    soundfile.write(wav, audio.load_audio(path, sr=f.sr), f.sr, subtype="PCM_16")
                    self._exp.log_audio(
                        str(wav),
                        file_name=wav.name,
                        metadata={"class": name, "clip": os.path.relpath(path, root)},
                    )
        if tracking.log_figures:
            from urbansound import plots

            pngs = plots.dataset_figures(
                index.clips,
                class_names=names,
                dataset=dataset,
                **plots.dataset_figure_settings(f),
            )
            for png in pngs:
                self._exp.log_image(str(png), name=png.name)
        self._exp.log_other("samples_experiment", self.experiment_key)

    def finish(self, run_dir: str | Path) -> dict[str, Any]:
        """Log what the run left in ``run_dir`` and end the experiment, whatever the outcome.

        Called from a ``finally`` block: reads ``results.json`` (complete or pruned) and logs it,
        or marks the experiment ``failed`` with the exception being raised; logs the run
        directory's files and, once per sweep, the audio samples and figures; ends the
        experiment; and records :attr:`info` under ``tracking`` in ``results.json``.
        """
        run_dir = Path(run_dir)
        results_path = run_dir / "results.json"
        results: dict[str, Any] | None = None
        if results_path.is_file():
            try:
                results = json.loads(results_path.read_text())
            except (OSError, ValueError) as exc:
                log.warning("Comet: cannot read %s (%s)", results_path, exc)
        if self.mode == "disabled":
            return self.info
        if self.active:
            if results is not None:
                self.log_results(results)
            else:
                error = sys.exc_info()[1]
                self._attempt("the run's status", self._log_failure, error)
            self.log_run_files(run_dir)
            if results is not None and results.get("status") == "complete":
                self.log_samples(results)
        info = self.end()
        if results is not None:
            results["tracking"] = info
            try:
                tmp = results_path.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(results, indent=2) + "\n")
                os.replace(tmp, results_path)
            except OSError as exc:
                log.warning("Comet: cannot record the experiment in %s (%s)", results_path, exc)
        return info

    def _log_failure(self, error: BaseException | None) -> None:
        self._exp.add_tags(["failed"])
        self._exp.log_other("status", "failed")
        if error is not None:
            self._exp.log_other("error", f"{type(error).__name__}: {error}"[:1000])

    def end(self) -> dict[str, Any]:
        """End the experiment (offline: write its archive); returns :attr:`info`. Idempotent."""
        if self.active:
            self._attempt("the end of the experiment", self._exp.end)
            self._ended = True
            if self.archive is not None and not self.archive.is_file():
                found = sorted(self.archive.parent.glob(f"{self.experiment_key}*.zip"))
                self.archive = found[0] if found else None
                if self.archive is None:
                    self.errors.append("Comet: the offline archive was not written")
                    log.warning(
                        "Comet: the offline archive of %s was not written", self.experiment_key
                    )
        return self.info


def _summed_confusion(folds: Sequence[Mapping[str, Any]]) -> list[list[int]] | None:
    """The confusion matrix summed over test folds (each clip is tested once in fold CV)."""
    total: list[list[int]] | None = None
    for fold in folds:
        cm = fold.get("confusion")
        if not cm:
            continue
        if total is None:
            total = [[0] * len(cm) for _ in cm]
        for i, row in enumerate(cm):
            for j, v in enumerate(row):
                total[i][j] += int(v)
    return total


def _one_clip_per_class(clips: Any) -> list[tuple[int, str]]:
    """The first clip of each class in the metadata's order, as ``(classID, path)``."""
    chosen: dict[int, str] = {}
    for path, cid in zip(clips["path"], clips["classID"], strict=True):
        chosen.setdefault(int(cid), str(path))
    return sorted(chosen.items())


# --------------------------------------------------------------------------------------------
# Starting an experiment


def start(
    settings: Settings,
    *,
    run_dir: str | Path,
    config: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
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
        The job's command-line overrides (the experiment's name; a trial's optimization
        parameters).

    Returns
    -------
    Tracker
        Active in mode ``online`` or ``offline``; a no-op in mode ``disabled``, or ``failed``
        when the experiment could not be created (after one warning).
    """
    ts = settings.tracking
    if ts.mode == "disabled":
        return Tracker(mode="disabled", settings=settings)
    parameters = flatten_config(config or {})
    offline_dir = Path(ts.offline_dir).expanduser().absolute()
    try:
        comet_ml = _import_comet()
        experiment, mode, note = _create_experiment(
            comet_ml, settings, run_dir=Path(run_dir), overrides=overrides, offline_dir=offline_dir
        )
    except Exception as exc:
        message = f"Comet: tracking is off for this run ({type(exc).__name__}: {exc})"
        log.warning("%s", message)
        return Tracker(mode="failed", settings=settings, error=message)
    tracker = Tracker(
        experiment,
        mode=mode,
        settings=settings,
        parameters=parameters,
        overrides=overrides,
        offline_dir=offline_dir,
        error=note,
    )
    tracker._attempt("the parameters", experiment.log_parameters, parameters)
    trial = settings.trial
    others = {
        "run_dir": str(Path(run_dir).absolute()),
        "overrides": json.dumps(list(overrides)),
        "study_name": trial.study_name,
        "trial_number": trial.number,
        "storage": _redact(trial.storage),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "command": " ".join(shlex.quote(arg) for arg in sys.argv),
    }
    tracker._attempt(
        "the run's identity",
        experiment.log_others,
        {k: v for k, v in others.items() if v is not None},
    )
    log.info(
        "Comet: %s experiment %s%s",
        mode,
        tracker.experiment_key,
        f" ({tracker.url})" if tracker.url else f", archive {tracker.archive}",
    )
    return tracker


def _create_experiment(
    comet_ml: Any,
    settings: Settings,
    *,
    run_dir: Path,
    overrides: Sequence[str],
    offline_dir: Path,
) -> tuple[Any, str, str | None]:
    """The experiment, its mode, and why online mode was given up (``None`` if it was not)."""
    ts = settings.tracking
    name = experiment_name(settings, run_dir=run_dir, overrides=overrides)

    def experiment_config(*, online: bool) -> Any:
        return comet_ml.ExperimentConfig(
            name=name,
            tags=experiment_tags(settings),
            offline_directory=str(offline_dir),
            log_code=False,
            log_graph=False,
            parse_args=False,
            log_git_metadata=True,
            log_git_patch=False,
            # Comet finds the host's IP address by resolving its server's name: not offline.
            log_env_host=online,
            auto_output_logging=False,
            auto_param_logging=False,
            auto_metric_logging=False,
            auto_log_co2=False,
            display_summary_level=0,
        )

    online = ts.mode == "online" or (ts.mode == "auto" and _api_key() is not None)
    if online:
        experiment, reason = _try_online(comet_ml, settings, experiment_config(online=True))
        if experiment is not None:
            return experiment, "online", None
        note = f"Comet: cannot track online ({reason}); logging offline to {offline_dir}"
        log.warning("%s", note)
    else:
        note = None
    offline_dir.mkdir(parents=True, exist_ok=True)
    experiment = comet_ml.start(
        online=False,
        mode="create",
        project_name=ts.project_name,
        workspace=ts.workspace,
        experiment_config=experiment_config(online=False),
    )
    return experiment, "offline", note


def _try_online(comet_ml: Any, settings: Settings, experiment_config: Any) -> tuple[Any, str]:
    """An online experiment, or ``(None, reason)`` without waiting on Comet's retries."""
    if _api_key() is None:
        return None, "no Comet API key: set COMET_API_KEY or run `comet login`"
    reason = _probe_server()
    if reason is not None:
        return None, reason
    experiment = None
    try:
        with _comet_silenced():
            experiment = comet_ml.start(
                online=True,
                mode="create",
                project_name=settings.tracking.project_name,
                workspace=settings.tracking.workspace,
                experiment_config=experiment_config,
            )
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if not experiment.alive:
        with _comet_silenced(), contextlib.suppress(Exception):
            experiment.end()
        return None, "Comet's server did not accept the experiment"
    return experiment, ""
