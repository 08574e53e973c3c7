"""Typed settings from the composed Hydra config: structured-config schemas + cross-field checks.

The config tree (``conf/`` in the repository, the package ``urbansound.conf`` once installed)
composes on top of OmegaConf structured configs (registered in Hydra's ConfigStore by
:mod:`urbansound.config.app`, which also holds the entry points' decorator): one schema per
group (``data``, ``features``, ``model``, ``train``, ``cv``, ``tracking``, ``trial``) and one for
the top level (``config_schema``: the groups plus ``n_mfcc`` and ``progress``). Each group file
starts from its schema (``defaults: [/train_schema@_here_, _self_]``), so OmegaConf rejects a key
that the schema does not have and converts or rejects each value by its field's type.

:func:`settings_from_config` merges a composed config (or the plain dict of a run's
``config.yaml``) into the top-level schema once more, which also catches keys added with ``+``
(``+train.epoch=3``), then checks value ranges, allowed names and the settings that depend on each
other, and returns plain frozen dataclasses: the rest of the package never sees Hydra. Every
problem raises :class:`~urbansound.errors.ConfigError` with one line naming the key, e.g.
``unknown key train.epoch; did you mean train.epochs?``.

The schemas are derived from the ``*Settings`` dataclasses of :mod:`urbansound.config.settings`
(tuples become lists, the classes mutable), so a field and its default are written once; the
allowed-value tuples live there and nowhere else. This module holds the schemas, the one-line
error messages and the checks that a type cannot express.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import field
from typing import Any, Optional

from urbansound.config.settings import (
    ACTIVATIONS,
    CV_NAMES,
    DEVICES,
    FAMILIES,
    FAMILY_SETTINGS,
    KINDS,
    KNN_WEIGHTS,
    MISSING_MODES,
    ON_ERROR_MODES,
    POOLINGS,
    SVM_KERNELS,
    TRACKING_MODES,
    WINDOWS,
    CVSettings,
    DataSettings,
    FeatureSettings,
    ModelSettings,
    Settings,
    SklearnSettings,
    TrackingSettings,
    TrainSettings,
    TrialSettings,
)
from urbansound.errors import ConfigError
from urbansound.utils.progress import MODES as PROGRESS_MODES

#: Where Hydra finds the primary config (``hydra.main(config_path=...)``): the package
#: ``urbansound.conf``. A wheel holds a copy of ``conf/`` there (``[tool.setuptools.package-dir]``
#: in pyproject.toml); in a source checkout :func:`register_configs` maps it to ``<checkout>/conf``.
CONFIG_PATH = "pkg://urbansound.conf"
CONFIG_NAME = "config"

GROUPS = ("data", "features", "model", "train", "cv", "tracking", "trial")


# --------------------------------------------------------------------------------------------
# Structured-config schemas: mutable twins of the settings classes, in OmegaConf's type vocabulary.


def _schema_type(tp: Any) -> Any:
    """``tuple[int, ...]`` -> ``List[int]``, ``X | None`` -> ``Optional[X]``; others unchanged."""
    args = typing.get_args(tp)
    if type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return Optional[_schema_type(inner)]  # noqa: UP045 (OmegaConf reads typing.Optional)
    if typing.get_origin(tp) is tuple:
        return list[args[0]]
    if len(args) > 1 and typing.get_origin(tp) in (typing.Union, types.UnionType):
        # A name or a number (model.gamma, model.max_features): OmegaConf's Union[float, str]
        # refuses an integer (model.gamma=1); _name_or_number checks and converts the value.
        return Any
    return tp


def _schema_class(
    cls: type,
    extra: list[tuple[str, Any, Any]] = (),  # type: ignore[assignment]
    *,
    name: str | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> type:
    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        if f.name == "model" and cls is Settings:  # one schema per family: the group's file
            fields.append((f.name, Any, field(default=None)))  # brings its own (families)
            continue
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        default = (defaults or {}).get(f.name, default)
        if isinstance(default, tuple):
            spec = field(default_factory=lambda d=default: list(d))
        elif dataclasses.is_dataclass(default):
            sub = _SCHEMAS[type(default)]
            spec = field(default_factory=sub)
        else:
            spec = field(default=default)
        tp = _SCHEMAS.get(hints[f.name]) or _schema_type(hints[f.name])
        fields.append((f.name, tp, spec))
    if name is None:
        name = cls.__name__.replace("Settings", "Schema") if cls is not Settings else "ConfigSchema"
    schema = dataclasses.make_dataclass(name, [*fields, *extra])
    schema.__module__ = __name__
    return schema


_GROUP_SETTINGS: dict[str, type] = {
    "data": DataSettings,
    "features": FeatureSettings,
    "model": ModelSettings,
    "train": TrainSettings,
    "cv": CVSettings,
    "tracking": TrackingSettings,
    "trial": TrialSettings,
}
_SCHEMAS: dict[type, type] = {}  # settings class -> schema class
for _cls in _GROUP_SETTINGS.values():
    _SCHEMAS[_cls] = _schema_class(_cls)
#: Each group's schema, by group name (``GROUP_SCHEMAS["train"]`` is ``TrainSchema``; ``model``'s
#: is the MLP's, ``MODEL_SCHEMAS`` has every family's).
GROUP_SCHEMAS: dict[str, type] = {g: _SCHEMAS[cls] for g, cls in _GROUP_SETTINGS.items()}
#: Each model family's schema (``model=<family>``), by family; ``sklearn`` has none: its group is
#: an open node (``_target_`` plus any keyword arguments, see :func:`sklearn_node`).
MODEL_SCHEMAS: dict[str, type] = {
    family: _schema_class(
        cls,
        name="".join(w.title() for w in family.split("_")) + "Schema",
        defaults={"family": family},
    )
    for family, cls in FAMILY_SETTINGS.items()
    if family not in ("mlp", "sklearn")
}
MODEL_SCHEMAS = {"mlp": GROUP_SCHEMAS["model"], **MODEL_SCHEMAS}


def sklearn_node() -> Any:
    """``model=sklearn``'s base: ``family`` and ``_target_``, open to any further key (struct
    off, so ``model.n_estimators=300`` works without ``+``)."""
    from omegaconf import OmegaConf

    return OmegaConf.create({"family": "sklearn", "_target_": None}, flags={"struct": False})


#: The top-level schema: the groups, ``progress`` and the top-level ``n_mfcc`` that
#: ``features.n_mfcc`` reads (so that ``n_mfcc=20,40,60`` sweeps it).
ConfigSchema = _schema_class(Settings, extra=[("n_mfcc", int, field(default=40))])

# --------------------------------------------------------------------------------------------
# One-line messages for OmegaConf's and Hydra's errors.

_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _field_type(full_key: str) -> Any:
    """The schema type of a dotted key (``model.hidden[1]`` -> int), or None if unknown."""
    tp: Any = ConfigSchema
    parts = full_key.replace("]", "").replace("[", ".").split(".")
    if parts[0] == "model" and len(parts) > 1:  # the first family's schema that has the key
        tp = next((m for m in MODEL_SCHEMAS.values() if parts[1] in m.__annotations__), None)
        parts = parts[1:]
    for part in parts:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if typing.get_origin(tp) is typing.Union and len(args) == 1:
            tp = args[0]
        if typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        elif dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            if part not in hints:
                return None
            tp = hints[part]
        else:
            return None
    return tp


def _type_words(tp: Any) -> str | None:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    optional = type(None) in typing.get_args(tp)
    if optional and len(args) == 1:
        words = _type_words(args[0])
        return f"{words} or null" if words else None
    if len(args) > 1 and typing.get_origin(tp) is not list:  # Union[float, str]
        words = [_type_words(a) for a in args]
        return " or ".join(words) if all(words) else None  # type: ignore[arg-type]
    if typing.get_origin(tp) is list:
        return "a list of integers" if typing.get_args(tp)[0] is int else "a list"
    return _TYPE_WORDS.get(tp)


def _unknown_key(full_key: str, object_type: Any, node_keys: Sequence[str] = ()) -> str:
    parent, _, name = full_key.rpartition(".")
    # A schema's fields; for a plain dict node (the fit node) the keys it holds.
    known = [f.name for f in dataclasses.fields(object_type)] if object_type else list(node_keys)
    by_case = {k.lower(): k for k in known}  # model.c -> model.C
    match = [by_case[name.lower()]] if name.lower() in by_case else []
    match = match or difflib.get_close_matches(name, known, n=1)
    prefix = f"{parent}." if parent else ""
    if match:
        return f"unknown key {full_key}; did you mean {prefix}{match[0]}?"
    where = parent or "the top level"
    return f"unknown key {full_key}; {where} has {', '.join(known)}"


def _one_line(text: str) -> str:
    """Hydra's multi-line message as one line; its tab-indented option lists joined by commas."""
    out: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("full_key:", "reference_type=", "object_type=")):
            continue
        if line.startswith("\t") and out:
            out[-1] += (" " if out[-1].endswith(":") else ", ") + stripped
        else:
            out.append(stripped)
    return "; ".join(out)


def config_error(exc: BaseException) -> ConfigError:
    """A :class:`ConfigError` with one line for an OmegaConf or Hydra composition error.

    Unknown keys name the closest known key (difflib); wrong types name the key and the type
    its schema wants; anything else is Hydra's message on one line.
    """
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

    if isinstance(exc, ConfigError):
        return exc
    cause = exc if isinstance(exc, OmegaConfBaseException) else exc.__cause__
    if isinstance(cause, OmegaConfBaseException) and cause.full_key:
        key = cause.full_key
        obj = cause.object_type if dataclasses.is_dataclass(cause.object_type) else None
        if isinstance(cause, ConfigKeyError | AttributeError) and "not in" in str(cause.msg):
            node = getattr(cause, "parent_node", None)
            keys = [str(k) for k in node] if obj is None and node is not None else []
            return ConfigError(_unknown_key(key, obj, keys))
        if isinstance(cause, ValidationError):
            words = _type_words(_field_type(key))
            if words:
                return ConfigError(f"{key} must be {words}, got {cause.value!r}")
        return ConfigError(f"{key}: {_one_line(str(cause.msg))}")
    message = _one_line(str(exc))
    if cause is not None and not isinstance(cause, OmegaConfBaseException):
        message = f"{message}: {_one_line(str(cause))}" if message else _one_line(str(cause))
    return ConfigError(message or type(exc).__name__)


# --------------------------------------------------------------------------------------------
# Checks that a type cannot express: ranges, allowed names, and settings that depend on each other.


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


#: The largest integer any count, size or index of the config may be (a C ``int``): beyond it
#: torch, NumPy and scikit-learn overflow with a traceback instead of a message.
INT_MAX = 2**31 - 1
#: Seeds go to NumPy and scikit-learn (``random_state``), which take ``0 <= seed < 2**32``.
SEED_MAX = 2**32 - 1
#: Upper limits of keys whose natural range is smaller than :data:`INT_MAX`: a larger value is a
#: typo that would otherwise exhaust memory or crash the resampler before any message.
SR_MAX = 768_000  # the highest sample rate of audio hardware
N_FFT_MAX = 65_536  # 3 s at 22 050 Hz: longer than most UrbanSound8K clips
DEMO_CLIPS_MAX = 1000  # UrbanSound8K's largest class holds 1000 clips


def _at_least(
    values: Mapping[str, Any],
    group: str,
    bounds: Mapping[str, int],
    maxima: Mapping[str, int] | None = None,
) -> None:
    """Each integer ``values[key]`` (None skipped) is ``>= bounds[key]`` and ``<= maxima[key]``
    (:data:`INT_MAX` unless given)."""
    for key, minimum in bounds.items():
        value = values[key]
        if value is None:
            continue
        _check(value >= minimum, f"{group}.{key} must be an integer >= {minimum}, got {value}")
        maximum = (maxima or {}).get(key, INT_MAX)
        _check(
            value <= maximum,
            f"{group}.{key} must be an integer between {minimum} and {maximum}, got {value}",
        )


def _choices(values: Mapping[str, Any], group: str, allowed: Mapping[str, tuple[str, ...]]) -> None:
    for key, names in allowed.items():
        value = values[key]
        _check(value in names, f"{group}.{key} must be one of {', '.join(names)}; got {value!r}")


def _number(
    value: float | None, key: str, *, low: float, high: float = math.inf, strict: bool = False
) -> None:
    if value is None:
        return
    _check(math.isfinite(value), f"{key} must be a finite number, got {value}")
    _check(
        value > low if strict else value >= low,
        f"{key} must be {'>' if strict else '>='} {low}, got {value}",
    )
    _check(value <= high, f"{key} must be <= {high}, got {value}")


def _check_features(f: dict[str, Any]) -> None:
    _choices(
        f,
        "features",
        {"kind": KINDS, "pooling": POOLINGS, "window": WINDOWS, "on_error": ON_ERROR_MODES},
    )
    _at_least(
        f,
        "features",
        {"sr": 1000, "n_fft": 16, "hop_length": 1, "win_length": 1, "n_mels": 1, "deltas": 0},
        {"sr": SR_MAX, "n_fft": N_FFT_MAX},
    )
    _check(f["n_mfcc"] >= 1, f"n_mfcc must be an integer >= 1, got {f['n_mfcc']}")
    _check(f["n_mfcc"] <= INT_MAX, f"n_mfcc must be an integer <= {INT_MAX}, got {f['n_mfcc']}")
    n_fft, hop, win = f["n_fft"], f["hop_length"], f["win_length"]
    _check(
        hop <= n_fft,
        f"features.hop_length ({hop}) must be <= features.n_fft ({n_fft}): "
        "a hop larger than the frame skips audio",
    )
    _check(
        win is None or win <= n_fft,
        f"features.win_length ({win}) must be <= features.n_fft ({n_fft})",
    )
    _number(f["fmin"], "features.fmin", low=0.0)
    _number(f["fmax"], "features.fmax", low=0.0, strict=True)
    _number(f["top_db"], "features.top_db", low=0.0, strict=True)
    _number(f["lifter"], "features.lifter", low=0.0)
    nyquist = f["sr"] / 2
    fmax = f["fmax"]
    _check(
        fmax is None or fmax <= nyquist,
        f"features.fmax ({fmax}) must be <= sr/2 ({nyquist}) or null",
    )
    _check(
        f["fmin"] < (fmax if fmax is not None else nyquist),
        f"features.fmin ({f['fmin']}) must be below fmax ({fmax or nyquist})",
    )
    if f["kind"] == "mfcc":  # log-mel features ignore n_mfcc
        _check(
            f["n_mfcc"] <= f["n_mels"],
            f"n_mfcc ({f['n_mfcc']}) must be <= features.n_mels ({f['n_mels']}): MFCCs are "
            "the first n_mfcc DCT coefficients of the mel bands; raise features.n_mels or "
            "lower n_mfcc",
        )
    _check_mel_bands(f["sr"], n_fft, f["n_mels"], f["fmin"], fmax if fmax is not None else nyquist)
    _check(f["deltas"] <= 2, f"features.deltas must be 0, 1 or 2, got {f['deltas']}")
    _check(  # '' would put the cache's entries into the working directory itself
        f["cache_dir"].strip() != "",
        f"features.cache_dir must name a folder (default outputs/cache/features), got "
        f"{f['cache_dir']!r}",
    )
    _check(
        -1 <= f["n_jobs"] <= INT_MAX and f["n_jobs"] != 0,
        f"features.n_jobs must be a positive count or -1 (all cores), got {f['n_jobs']}",
    )


def _empty_mel_bands(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> int:
    """How many of the ``n_mels`` triangular mel filters (librosa's Slaney filterbank, as
    :mod:`urbansound.features.dsp` builds it) hold no FFT bin: those bands are 0 for every clip.

    A band is empty when no FFT frequency lies strictly between its lower and upper edge; a band
    whose lower edge is 0 Hz is not counted (librosa's rule). Computed from the band edges alone
    (``searchsorted``), so it costs nothing even for absurd sizes.
    """
    import numpy as np

    from urbansound.features.dsp import hz_to_mel, mel_to_hz

    freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    first = np.searchsorted(freqs, edges[:-2], side="right")  # first bin above the lower edge
    end = np.searchsorted(freqs, edges[2:], side="left")  # first bin at or above the upper edge
    return int(((end <= first) & (edges[:-2] != 0)).sum())


def _check_mel_bands(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> None:
    """Every mel band holds at least one FFT bin (else its feature is a constant)."""
    bins = n_fft // 2 + 1
    if n_mels <= bins and _empty_mel_bands(sr, n_fft, n_mels, fmin, fmax) == 0:
        return
    low, high = 1, min(n_mels, bins)  # the most bands that fit (empty bands grow with n_mels)
    while low < high:
        mid = (low + high + 1) // 2
        if _empty_mel_bands(sr, n_fft, mid, fmin, fmax) == 0:
            low = mid
        else:
            high = mid - 1
    raise ConfigError(
        f"features.n_mels ({n_mels}) leaves mel bands without any FFT bin at features.sr={sr}, "
        f"features.n_fft={n_fft}, fmin {fmin:g} Hz, fmax {fmax:g} Hz (those features would be "
        f"constant): use features.n_mels <= {low}, or raise features.n_fft"
    )


def _check_model(m: dict[str, Any]) -> None:
    family = m["family"]
    if family == "mlp":
        for i, units in enumerate(m["hidden"]):
            _check(units >= 1, f"model.hidden[{i}] must be an integer >= 1, got {units}")
        _number(m["dropout"], "model.dropout", low=0.0, high=0.99)
        _choices(m, "model", {"activation": ACTIVATIONS})
        return
    if family == "sklearn":
        target = m.get("_target_")
        _check(
            isinstance(target, str) and target.strip() != "",
            "model=sklearn needs model._target_, the dotted path of a scikit-learn classifier "
            "class (model._target_=sklearn.ensemble.RandomForestClassifier)",
        )
        return
    for key in ("C", "learning_rate"):
        if key in m:
            _number(m[key], f"model.{key}", low=0.0, strict=True)
    _at_least(
        m,
        "model",
        {
            k: v
            for k, v in {
                "max_iter": 1,
                "n_estimators": 1,
                "max_depth": 1,
                "min_samples_leaf": 1,
                "max_leaf_nodes": 2,
                "n_neighbors": 1,
                "p": 1,
                "stages": 1,
            }.items()
            if k in m
        },
    )
    if "l2_regularization" in m:
        _number(m["l2_regularization"], "model.l2_regularization", low=0.0)
    if "n_jobs" in m and m["n_jobs"] is not None:
        _check(
            1 <= m["n_jobs"] <= INT_MAX or m["n_jobs"] == -1,
            f"model.n_jobs must be a positive count, -1 (all cores) or null (the cores left per "
            f"fold), got {m['n_jobs']}",
        )
    if family == "svm":
        _choices(m, "model", {"kernel": SVM_KERNELS})
        m["gamma"] = _name_or_number(m["gamma"], "model.gamma", ("scale", "auto"), high=math.inf)
    if "max_features" in m:
        m["max_features"] = _name_or_number(
            m["max_features"], "model.max_features", ("sqrt", "log2"), high=1.0
        )
    if family == "knn":
        _choices(m, "model", {"weights": KNN_WEIGHTS})


def _name_or_number(value: Any, key: str, names: tuple[str, ...], *, high: float) -> Any:
    """``"scale"`` stays a name; ``0.1`` or ``"0.1"`` becomes a number in (0, high]."""
    if isinstance(value, str) and value in names:
        return value
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise TypeError(value)
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{key} must be one of {', '.join(names)} or a number > 0, got {value!r}"
        ) from None
    _number(number, key, low=0.0, high=high, strict=True)
    return number


def _check_train(t: dict[str, Any]) -> None:
    _at_least(
        t,
        "train",
        {"epochs": 1, "batch_size": 1, "seed": 0, "threads": 1},
        {"seed": SEED_MAX},
    )
    _number(t["lr"], "train.lr", low=0.0, strict=True)
    _number(t["beta1"], "train.beta1", low=0.0, high=0.999999)
    _number(t["beta2"], "train.beta2", low=0.0, high=0.999999)
    _number(t["eps"], "train.eps", low=0.0, strict=True)
    _number(t["weight_decay"], "train.weight_decay", low=0.0)
    _choices(t, "train", {"device": DEVICES})


def _check_cv(c: dict[str, Any]) -> None:
    _choices(c, "cv", {"name": CV_NAMES})
    folds, outer = c["folds"], c["outer_fold"]
    _check(
        folds is None or all(1 <= k <= 10 for k in folds),
        f"cv.folds must list folds between 1 and 10, got {folds}",
    )
    _check(
        folds is None or len(folds) > 0,
        "cv.folds must list at least one fold between 1 and 10, or be null (every fold with "
        "clips), got []",
    )
    twice = sorted({k for k in folds or () if folds.count(k) > 1})
    _check(
        not twice,
        f"cv.folds lists fold(s) {twice} more than once, got {folds}: list each fold once "
        "(a fold listed twice would count twice in the mean)",
    )
    _check(
        outer is None or 1 <= outer <= 10,
        f"cv.outer_fold must be a fold between 1 and 10 or null, got {outer}",
    )
    _check(
        outer is None or folds is None or outer not in folds or c["evaluate_outer"],
        f"cv.outer_fold ({outer}) is held out of the search, so cv.folds ({folds}) cannot test "
        "on it: drop it from cv.folds, or choose another cv.outer_fold",
    )
    _number(c["test_size"], "cv.test_size", low=0.0, high=0.9, strict=True)
    _at_least(c, "cv", {"seed": 0}, {"seed": SEED_MAX})
    _check(
        not c["evaluate_outer"] or (outer is not None and c["name"] == "folds"),
        "cv.evaluate_outer=true needs cv=folds and cv.outer_fold=k (the fold held out of the "
        f"search), got cv.name={c['name']}, cv.outer_fold={outer}",
    )


def _check_trial(t: dict[str, Any]) -> None:
    """``trial.*`` is all set (a sweep's job) or all null (a single run)."""
    got = ", ".join(f"{k}={v}" for k, v in t.items())
    _check(
        len({v is None for v in t.values()}) == 1,
        "trial.study_name, trial.storage and trial.number are set together by the urbansound "
        f"sweeper; leave them unset (got {got})",
    )


def _check_strings(values: dict[str, Any], group: str) -> None:
    for key, value in values.items():
        _check(value != "", f"{group}.{key} must be a non-empty string or null, got ''")


_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "data": lambda d: (
        _choices(d, "data", {"missing": MISSING_MODES}),
        _at_least(d, "data", {"demo_clips_per_class": 1}, {"demo_clips_per_class": DEMO_CLIPS_MAX}),
        _check_strings(d, "data"),
    ),
    "features": _check_features,
    "model": _check_model,
    "train": _check_train,
    "cv": _check_cv,
    "tracking": lambda t: (
        _choices(t, "tracking", {"mode": TRACKING_MODES}),
        _check_strings(t, "tracking"),
    ),
    "trial": lambda t: (_at_least(t, "trial", {"number": 0}), _check_trial(t)),
}


def settings_from_config(cfg: Mapping[str, Any]) -> Settings:
    """Validate a composed config (a DictConfig or a plain nested dict) into :class:`Settings`.

    ``cfg`` is the job's config (as ``hydra.main`` passes it) or the resolved ``config.yaml`` of
    a run; a ``hydra`` node in it is ignored. Missing keys take the schema's defaults.

    Raises
    ------
    ConfigError
        On the first unknown key, wrong type or invalid value, naming its key in one line.
    """
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        # A plain copy (interpolations kept): keys added with `+` are checked like any other.
        plain = OmegaConf.to_container(cfg) if isinstance(cfg, DictConfig) else dict(cfg)
        plain.pop("hydra", None)
        base = OmegaConf.structured(ConfigSchema)
        base.model = _model_base(plain.get("model"))
        merged = OmegaConf.merge(base, plain)
        values = OmegaConf.to_container(merged, resolve=True)
    except (OmegaConfBaseException, ValueError) as exc:
        raise config_error(exc) from None
    assert isinstance(values, dict)
    for group, check in _CHECKS.items():
        check(values[group])
    _check(
        values["progress"] in PROGRESS_MODES,
        f"progress must be one of {', '.join(PROGRESS_MODES)}; got {values['progress']!r}",
    )

    def build(cls: type, node: dict[str, Any]) -> Any:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in node.items()})

    groups = {g: build(cls, values[g]) for g, cls in _GROUP_SETTINGS.items() if g != "model"}
    model = dict(values["model"])
    if model["family"] == "sklearn":
        target = model.pop("_target_")
        groups["model"] = SklearnSettings(target=target, params=model_params(model))
    else:
        groups["model"] = build(FAMILY_SETTINGS[model["family"]], model)
    return Settings(**groups, progress=values["progress"])


def model_params(node: Mapping[str, Any]) -> dict[str, Any]:
    """A ``model=sklearn`` node's constructor keywords: every key but ``family`` and
    ``_target_``/``_partial_``-style Hydra keys."""
    return {k: v for k, v in node.items() if k != "family" and not k.startswith("_")}


def _model_base(node: Any) -> Any:
    """The schema a run's ``model`` node is checked against: its family's (``mlp`` if it names
    none, as a ``config.yaml`` from before the families)."""
    from omegaconf import OmegaConf

    family = node.get("family", "mlp") if isinstance(node, Mapping) else "mlp"
    _check(
        family in FAMILY_SETTINGS,
        f"model.family must be one of {', '.join(FAMILIES)}; got {family!r} "
        "(choose the family with model=<family>)",
    )
    if family == "sklearn":
        return sklearn_node()
    return OmegaConf.structured(MODEL_SCHEMAS[family])
