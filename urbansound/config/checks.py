"""The checks a type cannot express, and the one way from a composed config to :class:`Settings`.

:func:`settings_from_config` merges a composed config (or the plain dict of a run's
``config.yaml``) into the top-level schema of :mod:`urbansound.config.schema` once more, which
also catches keys added with ``+`` (``+train.epoch=3``), then checks value ranges, allowed names
and the settings that depend on each other, and returns plain frozen dataclasses: the rest of the
package never sees Hydra. Every problem raises :class:`~urbansound.errors.ConfigError` with one
line naming the key and what is allowed (``features.hop_length (4096) must be <=
features.n_fft (2048): a hop larger than the frame skips audio``).

Read top to bottom: the limits, :func:`settings_from_config` and the family's base schema, each
group's checks in the order they run, then the small checks they are made of. The mel-band check
computes band edges with :mod:`urbansound.config.melscale` (numpy only), so a bad config is
refused without importing the feature stage or librosa.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from urbansound.config.melscale import empty_mel_bands
from urbansound.config.schema import (
    FEATURE_SCHEMAS,
    GROUP_SETTINGS,
    MODEL_SCHEMAS,
    ConfigSchema,
    config_error,
    sklearn_node,
)
from urbansound.config.settings import (
    ACTIVATIONS,
    CV_NAMES,
    DEVICES,
    EMBEDDING_KINDS,
    FAMILIES,
    FAMILY_SETTINGS,
    FEATURE_KINDS,
    FEATURE_SETTINGS,
    KINDS,
    KNN_WEIGHTS,
    MISSING_MODES,
    ON_ERROR_MODES,
    POOLINGS,
    SVM_KERNELS,
    TRACKING_MODES,
    WINDOWS,
    EmbeddingSettings,
    FeatureSettings,
    OnnxEmbeddingSettings,
    Settings,
    SklearnSettings,
)
from urbansound.errors import ConfigError
from urbansound.utils.progress import MODES as PROGRESS_MODES

__all__ = [
    "DEMO_CLIPS_MAX",
    "INT_MAX",
    "N_FFT_MAX",
    "SEED_MAX",
    "SR_MAX",
    "model_params",
    "settings_from_config",
]

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
BIRDNET_WINDOW_S = 3.0  # BirdNET's window: the longest features.embedding.hop without gaps
EMBEDDING_BATCH_MAX = 256  # windows per network call: more only costs memory (0.9 GB at 32)


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
        base.features = _features_base(plain.get("features"))
        merged = OmegaConf.merge(base, plain)
        values = OmegaConf.to_container(merged, resolve=True)
    except (OmegaConfBaseException, ValueError) as exc:
        raise config_error(exc) from None
    assert isinstance(values, dict)
    for group, check in _GROUP_CHECKS.items():
        check(values[group])
    _check(
        values["progress"] in PROGRESS_MODES,
        f"progress must be one of {', '.join(PROGRESS_MODES)}; got {values['progress']!r}",
    )

    def build(cls: type, node: dict[str, Any]) -> Any:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in node.items()})

    groups = {
        g: build(cls, values[g])
        for g, cls in GROUP_SETTINGS.items()
        if g not in ("model", "features")
    }
    features = dict(values["features"])
    if features["kind"] in EMBEDDING_KINDS:
        embedding = OnnxEmbeddingSettings if features["kind"] == "onnx" else EmbeddingSettings
        features["embedding"] = embedding(**features["embedding"])
    groups["features"] = build(FEATURE_SETTINGS[features["kind"]], features)
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


def _features_base(node: Any) -> Any:
    """The schema of a run's ``features`` node: its kind's (``mfcc`` if none). ``features.kind``
    set without the group keeps the other kind's keys: one line saying to choose the group."""
    from omegaconf import OmegaConf

    node = node if isinstance(node, Mapping) else {}
    kind = node.get("kind", "mfcc")
    _check(
        kind in FEATURE_KINDS,
        f"features.kind must be one of {', '.join(FEATURE_KINDS)}; got {kind!r} "
        "(choose the kind with features=<kind>)",
    )
    onnx_keys = "path" in (node.get("embedding") or {})
    foreign = (
        "embedding" in node
        if kind in KINDS
        else "n_fft" in node or onnx_keys != (kind == "onnx" and "embedding" in node)
    )
    _check(
        not foreign,
        f"features.kind={kind}: write features={kind} instead (the config group brings the "
        "kind's own keys; features.kind alone keeps another kind's)",
    )
    return OmegaConf.structured(FEATURE_SCHEMAS[kind])


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


# --------------------------------------------------------------------------------------------
# Each group's checks, in the order they run.


def _check_data(d: dict[str, Any]) -> None:
    _choices(d, "data", {"missing": MISSING_MODES})
    _at_least(d, "data", {"demo_clips_per_class": 1}, {"demo_clips_per_class": DEMO_CLIPS_MAX})
    _check_strings(d, "data")


def _check_features(f: dict[str, Any]) -> None:
    if f["kind"] in EMBEDDING_KINDS:
        _check_embedding_features(f)
        return
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
    _check_extraction(f)


def _check_embedding_features(f: dict[str, Any]) -> None:
    """``features=birdnet|onnx`` (the ONNX path is required where the model opens)."""
    _choices(f, "features", {"pooling": POOLINGS, "on_error": ON_ERROR_MODES})
    _check_extraction(f)
    e, kind = f["embedding"], f["kind"]
    if kind == "onnx":
        _at_least(e, "features.embedding", {"sample_rate": 1000}, {"sample_rate": SR_MAX})
        _number(e["window_s"], "features.embedding.window_s", low=0.0, high=3600.0, strict=True)
        _check_strings({k: e[k] for k in ("path", "input", "output")}, "features.embedding")
    window = BIRDNET_WINDOW_S if kind == "birdnet" else e["window_s"]
    _number(e["hop"], "features.embedding.hop", low=0.0, high=window or math.inf, strict=True)
    _at_least(
        e,
        "features.embedding",
        {"concat_mfcc": 0, "batch_size": 1},
        {"concat_mfcc": FeatureSettings().n_mels, "batch_size": EMBEDDING_BATCH_MAX},
    )


def _check_extraction(f: dict[str, Any]) -> None:
    """The keys of every kind: the cache folder and the workers."""
    _check(  # '' would put the cache's entries into the working directory itself
        f["cache_dir"].strip() != "",
        f"features.cache_dir must name a folder (default outputs/cache/features), got "
        f"{f['cache_dir']!r}",
    )
    _check(
        -1 <= f["n_jobs"] <= INT_MAX and f["n_jobs"] != 0,
        f"features.n_jobs must be a positive count or -1 (all cores), got {f['n_jobs']}",
    )


def _check_mel_bands(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> None:
    """Every mel band holds at least one FFT bin (else its feature is a constant)."""
    bins = n_fft // 2 + 1
    if n_mels <= bins and empty_mel_bands(sr, n_fft, n_mels, fmin, fmax) == 0:
        return
    low, high = 1, min(n_mels, bins)  # the most bands that fit (empty bands grow with n_mels)
    while low < high:
        mid = (low + high + 1) // 2
        if empty_mel_bands(sr, n_fft, mid, fmin, fmax) == 0:
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


def _check_tracking(t: dict[str, Any]) -> None:
    _choices(t, "tracking", {"mode": TRACKING_MODES})
    _check_strings(t, "tracking")


def _check_trial(t: dict[str, Any]) -> None:
    """``trial.*`` is all set (a sweep's job) or all null (a single run)."""
    _at_least(t, "trial", {"number": 0})
    got = ", ".join(f"{k}={v}" for k, v in t.items())
    _check(
        len({v is None for v in t.values()}) == 1,
        "trial.study_name, trial.storage and trial.number are set together by the urbansound "
        f"sweeper; leave them unset (got {got})",
    )


#: The checks of each group, in the order they run (the first problem is the one reported).
_GROUP_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "data": _check_data,
    "features": _check_features,
    "model": _check_model,
    "train": _check_train,
    "cv": _check_cv,
    "tracking": _check_tracking,
    "trial": _check_trial,
}


# --------------------------------------------------------------------------------------------
# The checks they are made of: one problem, one line.


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


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


def _check_strings(values: dict[str, Any], group: str) -> None:
    for key, value in values.items():
        _check(value != "", f"{group}.{key} must be a non-empty string or null, got ''")
