"""Typed, validated settings built from the composed Hydra config.

Hydra composes a ``DictConfig``; :func:`settings_from_config` checks every value before any work
starts and returns plain frozen dataclasses, so the rest of the package never sees Hydra. Each
problem raises :class:`~urbansound.errors.ConfigError` with one line naming the key and what is
allowed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from urbansound.errors import ConfigError

KINDS = ("mfcc", "logmel")
POOLINGS = ("mean", "mean_std", "stats")
WINDOWS = ("hann", "hamming", "blackman", "boxcar", "bartlett", "triang")
ACTIVATIONS = ("relu", "gelu", "tanh", "elu")
DEVICES = ("auto", "cpu", "cuda")
MISSING_MODES = ("error", "skip")
ON_ERROR_MODES = ("error", "skip")
TRACKING_MODES = ("auto", "online", "offline", "disabled")
CV_NAMES = ("folds", "random_split")


@dataclass(frozen=True)
class DataSettings:
    root: str | None = None
    missing: str = "error"
    demo_dir: str = "outputs/demo"
    demo_clips_per_class: int = 100


@dataclass(frozen=True)
class FeatureSettings:
    kind: str = "mfcc"
    sr: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    win_length: int | None = None
    window: str = "hann"
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    top_db: float | None = 80.0
    n_mfcc: int = 40
    lifter: float = 0.0
    deltas: int = 0
    pooling: str = "mean"
    cache_dir: str = "outputs/cache/features"
    n_jobs: int = -1
    on_error: str = "error"


@dataclass(frozen=True)
class ModelSettings:
    hidden: tuple[int, ...] = (256, 256)
    dropout: float = 0.5
    activation: str = "relu"


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-7
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    standardize: bool = True


@dataclass(frozen=True)
class CVSettings:
    name: str = "folds"
    folds: tuple[int, ...] | None = None
    outer_fold: int | None = None
    test_size: float = 0.2
    seed: int = 42
    evaluate_outer: bool = False


@dataclass(frozen=True)
class TrackingSettings:
    mode: str = "auto"
    project_name: str = "urbansound8k"
    workspace: str | None = None
    offline_dir: str = "outputs/comet"
    log_audio: bool = True
    log_figures: bool = True
    log_model: bool = False


@dataclass(frozen=True)
class TrialSettings:
    """The Optuna trial this job belongs to (all None outside a sweep)."""

    study_name: str | None = None
    storage: str | None = None
    number: int | None = None


@dataclass(frozen=True)
class Settings:
    data: DataSettings = field(default_factory=DataSettings)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    cv: CVSettings = field(default_factory=CVSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    trial: TrialSettings = field(default_factory=TrialSettings)


# --------------------------------------------------------------------------------------------
# Small typed readers: each names the full key in its error message.


def _get(node: Mapping[str, Any], group: str, key: str, default: Any) -> Any:
    return node.get(key, default) if node is not None else default


def _int(value: Any, key: str, *, minimum: int | None = None, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(f"{key} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value}")
    return value


def _float(
    value: Any,
    key: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_min: bool = False,
    allow_none: bool = False,
) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value}")
    if minimum is not None and (value <= minimum if strict_min else value < minimum):
        op = ">" if strict_min else ">="
        raise ConfigError(f"{key} must be {op} {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{key} must be <= {maximum}, got {value}")
    return value


def _choice(value: Any, key: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value


def _str(value: Any, key: str, *, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string, got {value!r}")
    return value


def _int_list(value: Any, key: str, *, minimum: int, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise ConfigError(f"{key} must be a list of integers, got {value!r}")
    return tuple(_int(v, f"{key}[{i}]", minimum=minimum) for i, v in enumerate(value))


# --------------------------------------------------------------------------------------------


def _data(node: Mapping[str, Any]) -> DataSettings:
    d = DataSettings()
    return DataSettings(
        root=_str(_get(node, "data", "root", d.root), "data.root", allow_none=True),
        missing=_choice(_get(node, "data", "missing", d.missing), "data.missing", MISSING_MODES),
        demo_dir=_str(_get(node, "data", "demo_dir", d.demo_dir), "data.demo_dir"),
        demo_clips_per_class=_int(
            _get(node, "data", "demo_clips_per_class", d.demo_clips_per_class),
            "data.demo_clips_per_class",
            minimum=1,
        ),
    )


def _features(node: Mapping[str, Any]) -> FeatureSettings:
    d = FeatureSettings()

    def g(key: str) -> Any:
        return _get(node, "features", key, getattr(d, key))

    kind = _choice(g("kind"), "features.kind", KINDS)
    sr = _int(g("sr"), "features.sr", minimum=1000)
    n_fft = _int(g("n_fft"), "features.n_fft", minimum=16)
    hop = _int(g("hop_length"), "features.hop_length", minimum=1)
    if hop > n_fft:
        raise ConfigError(
            f"features.hop_length ({hop}) must be <= features.n_fft ({n_fft}): "
            "a hop larger than the frame skips audio"
        )
    win = _int(g("win_length"), "features.win_length", minimum=1, allow_none=True)
    if win is not None and win > n_fft:
        raise ConfigError(f"features.win_length ({win}) must be <= features.n_fft ({n_fft})")
    n_mels = _int(g("n_mels"), "features.n_mels", minimum=1)
    fmin = _float(g("fmin"), "features.fmin", minimum=0.0)
    fmax = _float(g("fmax"), "features.fmax", minimum=0.0, strict_min=True, allow_none=True)
    nyquist = sr / 2
    if fmax is not None and fmax > nyquist:
        raise ConfigError(f"features.fmax ({fmax}) must be <= sr/2 ({nyquist}) or null")
    if fmin >= (fmax if fmax is not None else nyquist):
        raise ConfigError(f"features.fmin ({fmin}) must be below fmax ({fmax or nyquist})")
    top_db = _float(g("top_db"), "features.top_db", minimum=0.0, strict_min=True, allow_none=True)
    n_mfcc = _int(g("n_mfcc"), "n_mfcc", minimum=1)
    if kind == "mfcc" and n_mfcc > n_mels:
        raise ConfigError(
            f"n_mfcc ({n_mfcc}) must be <= features.n_mels ({n_mels}): MFCCs are the first "
            "n_mfcc DCT coefficients of the mel bands; raise features.n_mels or lower n_mfcc"
        )
    lifter = _float(g("lifter"), "features.lifter", minimum=0.0)
    deltas = _int(g("deltas"), "features.deltas", minimum=0)
    if deltas > 2:
        raise ConfigError(f"features.deltas must be 0, 1 or 2, got {deltas}")
    pooling = _choice(g("pooling"), "features.pooling", POOLINGS)
    window = _choice(g("window"), "features.window", WINDOWS)
    n_jobs = _int(g("n_jobs"), "features.n_jobs")
    if n_jobs == 0:
        raise ConfigError("features.n_jobs must be a positive count or -1 (all cores), got 0")
    return FeatureSettings(
        kind=kind,
        sr=sr,
        n_fft=n_fft,
        hop_length=hop,
        win_length=win,
        window=window,
        n_mels=n_mels,
        fmin=fmin,
        fmax=fmax,
        top_db=top_db,
        n_mfcc=n_mfcc,
        lifter=lifter,
        deltas=deltas,
        pooling=pooling,
        cache_dir=_str(g("cache_dir"), "features.cache_dir"),
        n_jobs=n_jobs,
        on_error=_choice(g("on_error"), "features.on_error", ON_ERROR_MODES),
    )


def _model(node: Mapping[str, Any]) -> ModelSettings:
    d = ModelSettings()
    hidden = _int_list(_get(node, "model", "hidden", d.hidden), "model.hidden", minimum=1)
    return ModelSettings(
        hidden=hidden,
        dropout=_float(
            _get(node, "model", "dropout", d.dropout), "model.dropout", minimum=0.0, maximum=0.99
        ),
        activation=_choice(
            _get(node, "model", "activation", d.activation), "model.activation", ACTIVATIONS
        ),
    )


def _train(node: Mapping[str, Any]) -> TrainSettings:
    d = TrainSettings()

    def g(key: str) -> Any:
        return _get(node, "train", key, getattr(d, key))

    return TrainSettings(
        epochs=_int(g("epochs"), "train.epochs", minimum=0),
        batch_size=_int(g("batch_size"), "train.batch_size", minimum=1),
        lr=_float(g("lr"), "train.lr", minimum=0.0, strict_min=True),
        beta1=_float(g("beta1"), "train.beta1", minimum=0.0, maximum=0.999999),
        beta2=_float(g("beta2"), "train.beta2", minimum=0.0, maximum=0.999999),
        eps=_float(g("eps"), "train.eps", minimum=0.0, strict_min=True),
        weight_decay=_float(g("weight_decay"), "train.weight_decay", minimum=0.0),
        seed=_int(g("seed"), "train.seed", minimum=0),
        device=_choice(g("device"), "train.device", DEVICES),
        threads=_int(g("threads"), "train.threads", minimum=1, allow_none=True),
        standardize=_bool(g("standardize"), "train.standardize"),
    )


def _cv(node: Mapping[str, Any]) -> CVSettings:
    d = CVSettings()

    def g(key: str) -> Any:
        return _get(node, "cv", key, getattr(d, key))

    folds = _int_list(g("folds"), "cv.folds", minimum=1, allow_none=True)
    if folds is not None and any(f > 10 for f in folds):
        raise ConfigError(f"cv.folds must list folds between 1 and 10, got {list(folds)}")
    outer = _int(g("outer_fold"), "cv.outer_fold", minimum=1, allow_none=True)
    if outer is not None and outer > 10:
        raise ConfigError(f"cv.outer_fold must be a fold between 1 and 10 or null, got {outer}")
    name = _choice(g("name"), "cv.name", CV_NAMES)
    evaluate_outer = _bool(g("evaluate_outer"), "cv.evaluate_outer")
    if evaluate_outer and (outer is None or name != "folds"):
        raise ConfigError(
            "cv.evaluate_outer=true needs cv=folds and cv.outer_fold=k (the fold held out of the "
            f"search), got cv.name={name}, cv.outer_fold={outer}"
        )
    return CVSettings(
        name=name,
        folds=folds,
        outer_fold=outer,
        test_size=_float(g("test_size"), "cv.test_size", minimum=0.0, strict_min=True, maximum=0.9),
        seed=_int(g("seed"), "cv.seed", minimum=0),
        evaluate_outer=evaluate_outer,
    )


def _tracking(node: Mapping[str, Any]) -> TrackingSettings:
    d = TrackingSettings()

    def g(key: str) -> Any:
        return _get(node, "tracking", key, getattr(d, key))

    return TrackingSettings(
        mode=_choice(g("mode"), "tracking.mode", TRACKING_MODES),
        project_name=_str(g("project_name"), "tracking.project_name"),
        workspace=_str(g("workspace"), "tracking.workspace", allow_none=True),
        offline_dir=_str(g("offline_dir"), "tracking.offline_dir"),
        log_audio=_bool(g("log_audio"), "tracking.log_audio"),
        log_figures=_bool(g("log_figures"), "tracking.log_figures"),
        log_model=_bool(g("log_model"), "tracking.log_model"),
    )


def _trial(node: Mapping[str, Any]) -> TrialSettings:
    return TrialSettings(
        study_name=_str(
            _get(node, "trial", "study_name", None), "trial.study_name", allow_none=True
        ),
        storage=_str(_get(node, "trial", "storage", None), "trial.storage", allow_none=True),
        number=_int(
            _get(node, "trial", "number", None), "trial.number", minimum=0, allow_none=True
        ),
    )


KNOWN_TOP_LEVEL = ("data", "features", "model", "train", "cv", "tracking", "trial", "n_mfcc")


def settings_from_config(cfg: Mapping[str, Any]) -> Settings:
    """Validate a composed config (a DictConfig or a plain nested dict) into :class:`Settings`.

    Raises
    ------
    ConfigError
        On the first invalid value, naming its key and what is allowed.
    """
    if hasattr(cfg, "_metadata"):  # an OmegaConf DictConfig: resolve interpolations first
        from omegaconf import OmegaConf

        try:
            cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        except Exception as exc:  # interpolation errors name the key already
            raise ConfigError(f"cannot resolve the config: {exc}") from None
    sections = {}
    for name in ("data", "features", "model", "train", "cv", "tracking", "trial"):
        node = cfg.get(name) or {}
        if not isinstance(node, Mapping):
            raise ConfigError(f"{name} must be a config group (a mapping), got {node!r}")
        sections[name] = node
    return Settings(
        data=_data(sections["data"]),
        features=_features(sections["features"]),
        model=_model(sections["model"]),
        train=_train(sections["train"]),
        cv=_cv(sections["cv"]),
        tracking=_tracking(sections["tracking"]),
        trial=_trial(sections["trial"]),
    )
