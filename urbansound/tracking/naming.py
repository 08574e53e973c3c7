"""Names, tags, parameters and the re-run command of an experiment: pure functions."""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from urbansound.utils.redaction import redact_url

if TYPE_CHECKING:
    from urbansound.config.settings import Settings

#: The objective's one name: Comet's metric and optimizer metric, Optuna's metric name.
OBJECTIVE = "mean_cv_accuracy"


#: The tag of the class-samples experiment (:func:`log_dataset_samples`).
SAMPLES_TAG = "samples"

#: The tag of a final fit's experiment (:func:`fit_tags`).
FIT_TAG = "fit"

#: The command a run's recorded command starts with (:func:`rerun_command`).
RUN_COMMAND = "python -m urbansound.run"

#: The command a fit's recorded command starts with (:func:`fit_command`): the console script.
FIT_COMMAND = "urbansound-fit"

#: The longest experiment name (Comet shows longer ones cut anyway).
_MAX_NAME = 100

#: The ``fit.*`` keys that choose a fit's source; :func:`fit_command` writes them as resolved.
_SOURCE_KEYS = ("fit.from", "fit.study", "fit.trial")


#: Config sections that are not parameters of the experiment.
_NOT_PARAMETERS = ("trial", "hydra")


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
    shown = _rerun_overrides(overrides)
    return _shortened(" ".join(shown) if shown else f"run {Path(run_dir).name}")


def _shortened(name: str) -> str:
    return name if len(name) <= _MAX_NAME else name[: _MAX_NAME - 3] + "..."


def _rerun_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides that make this configuration: not the sweeper's ``trial.*``, not Hydra's
    ``hydra.*`` / ``hydra/...``, and not ``sweep=<name>``: a named sweep sets
    ``hydra.mode=MULTIRUN``, so with it the command would run the whole sweep again (its swept
    values are in the job's overrides already)."""

    return [
        o
        for o in overrides
        if _override_key(o) != "sweep"
        and not _override_key(o).startswith(("trial.", "hydra.", "hydra/"))
    ]


def rerun_command(overrides: Sequence[str]) -> str:
    """The shell command that runs this configuration again, as one run.

    :data:`RUN_COMMAND` with the job's overrides shell-quoted, without the sweeper's
    ``trial.*`` keys (which would report to the study), Hydra's own ``hydra.*`` ones and the
    named sweep (``sweep=...``, which would start the sweep again).
    """
    return " ".join([RUN_COMMAND, *map(shlex.quote, _rerun_overrides(overrides))])


# --------------------------------------------------------------------------------------------
# A final fit's experiment


@dataclass(frozen=True)
class FitOrigin:
    """Where a final fit's configuration came from, as its experiment names it.

    Plain values from the fit's source (``fit.from``), so that this package needs nothing of
    the experiment layer. All ``None`` for a fit of the command line's configuration.

    Attributes
    ----------
    location:
        ``fit.from`` as given: a run or sweep directory, a storage URL or journal file.
    kind:
        ``"run"`` (one run's directory), ``"sweep"`` (a sweep directory) or ``"study"`` (a
        storage).
    study_name, trial:
        The source trial's study and number, where the source is a trial (a run directory
        counts when its ``results.json`` records one).
    run_dir:
        The source's run directory (the trial's job directory).
    """

    location: str | None = None
    kind: str | None = None
    study_name: str | None = None
    trial: int | None = None
    run_dir: str | None = None


def fit_name(origin: FitOrigin, *, run_dir: str | Path, overrides: Sequence[str]) -> str:
    """A final fit's experiment name: what it is a fit of.

    ``fit of <study> trial <n>`` for a trial (``fit of trial <n> of <fit.from>`` when no study
    is recorded), ``fit of <fit.from>`` for a run directory, and without a source ``fit`` with
    the command line's overrides (``fit n_mfcc=20``) or the fit directory's name. At most 100
    characters (longer names end with ``...``).
    """
    location = redact_url(origin.location)
    if origin.trial is not None:
        of = (
            f"{origin.study_name} trial {origin.trial}"
            if origin.study_name
            else f"trial {origin.trial} of {location}"
        )
        return _shortened(f"fit of {of}")
    if location:
        return _shortened(f"fit of {location}")
    shown = [o for o in _rerun_overrides(overrides) if not _is_fit_key(o)]
    return _shortened("fit " + (" ".join(shown) if shown else Path(run_dir).name))


def fit_tags(origin: FitOrigin) -> list[str]:
    """A final fit's tags: ``fit``, and its source trial's ``study:<name>`` and ``trial:<n>``
    (the tags of that trial's own experiment, which is tagged ``sweep`` where the fit is
    tagged ``fit``)."""
    tags = [FIT_TAG]
    if origin.study_name is not None:
        tags.append(f"study:{origin.study_name}")
    if origin.trial is not None:
        tags.append(f"trial:{origin.trial}")
    return tags


def fit_command(origin: FitOrigin, overrides: Sequence[str]) -> str:
    """The shell command that makes this fit again: ``urbansound-fit`` with its overrides.

    The source is written as it was resolved, so that the command fits the same trial after
    the study has gone on: ``fit.from`` (a local path made absolute, a URL as given), then
    ``fit.study`` and ``fit.trial`` of a sweep or study source, then the command line's other
    overrides in their order (``fit.seeds`` too). Like :func:`rerun_command`, it leaves out
    ``trial.*``, ``hydra.*`` and ``sweep=``; every value is shell-quoted, and a URL's password
    is shown as ``***`` (a fit refuses one in ``fit.from`` anyway).
    """
    pinned: list[str] = []
    if origin.location is not None:
        location = origin.location
        if "://" not in location:
            location = str(Path(location).expanduser().absolute())
        pinned.append(f"fit.from={hydra_string(location)}")
        if origin.kind != "run":
            if origin.study_name is not None:
                pinned.append(f"fit.study={hydra_string(origin.study_name)}")
            if origin.trial is not None:
                pinned.append(f"fit.trial={origin.trial}")
    rest = [o for o in _rerun_overrides(overrides) if _override_key(o) not in _SOURCE_KEYS]
    words = [_redacted(o) for o in (*pinned, *rest)]
    return " ".join([FIT_COMMAND, *map(shlex.quote, words)])


#: Values that Hydra's override grammar reads as the same string without quotes.
_PLAIN_VALUE = re.compile(r"[A-Za-z_/.][\w./@+:-]*")


def hydra_string(value: str) -> str:
    """``value`` written so that Hydra's override grammar reads it back as that string.

    Plain text (a path of letters, digits, ``/._-@+:``) as it is; anything else (a space, a
    comma, brackets, ``=``, ``$``, quotes, a leading digit) as Hydra's single-quoted string, in
    which a quote, and the backslashes before a quote or the closing one, are escaped.
    """
    if _PLAIN_VALUE.fullmatch(value) and value not in ("null", "true", "false"):
        return value
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return f"'{escaped}'"


def _override_key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0].strip()


def _is_fit_key(override: str) -> bool:
    return _override_key(override).startswith("fit.")


def _redacted(override: str) -> str:
    """``key=value`` with a URL value's password hidden (:func:`redact_url`)."""
    key, sep, value = override.partition("=")
    return f"{key}{sep}{redact_url(value)}" if sep and "://" in value else override


def samples_tags(settings: Settings) -> list[str]:
    study = settings.trial.study_name
    return [SAMPLES_TAG, *([f"study:{study}"] if study is not None else [])]


def metric_key(fold: Any) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", str(fold))


def finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def reason(exc: BaseException) -> str:
    """One line saying why: our own errors as their message, others with their type's name."""
    from urbansound.errors import UrbansoundError

    text = str(exc).strip().splitlines()
    if text and isinstance(exc, UrbansoundError):
        return text[0]
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
