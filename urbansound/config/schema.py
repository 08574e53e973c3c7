"""Structured-config schemas derived from the settings, their ConfigStore names, and one-line
messages for OmegaConf's and Hydra's errors.

The config tree (the package ``urbansound.conf``, read by Hydra as :data:`CONFIG_PATH`) composes
on top of OmegaConf structured configs: one schema per group (``data``, ``features``, ``model``,
``train``, ``cv``, ``tracking``, ``trial``; ``model`` has one per family) and one for the top
level (:data:`ConfigSchema`: the groups plus ``n_mfcc`` and ``progress``), stored in Hydra's
ConfigStore under the names of :func:`schema_nodes` (by :mod:`urbansound.config.app`). Each group
file starts from its schema (``defaults: [/train_schema@_here_, _self_]``), so OmegaConf rejects a
key that the schema does not have and converts or rejects each value by its field's type.

The schemas are derived from the ``*Settings`` dataclasses of :mod:`urbansound.config.settings`
(tuples become lists, the classes mutable), so a field and its default are written once; the
allowed-value tuples live there and nowhere else. :func:`config_error` turns what OmegaConf or
Hydra raise into one :class:`~urbansound.errors.ConfigError` line naming the key, e.g.
``unknown key train.epoch; did you mean train.epochs?``. The checks a type cannot express (ranges,
allowed names, settings that depend on each other) and :func:`settings_from_config` are in
:mod:`urbansound.config.checks`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import field
from typing import Any, Optional

from urbansound.config.settings import (
    EMBEDDING_KINDS,
    FAMILY_SETTINGS,
    CVSettings,
    DataSettings,
    EmbeddingFeatureSettings,
    EmbeddingSettings,
    FeatureSettings,
    ModelSettings,
    OnnxEmbeddingSettings,
    Settings,
    TrackingSettings,
    TrainSettings,
    TrialSettings,
)
from urbansound.errors import ConfigError

__all__ = [
    "CONFIG_NAME",
    "CONFIG_PATH",
    "FEATURE_SCHEMAS",
    "GROUP_SCHEMAS",
    "GROUP_SETTINGS",
    "MODEL_SCHEMAS",
    "ConfigSchema",
    "config_error",
    "schema_nodes",
    "sklearn_node",
]

#: Where Hydra finds the primary config (``hydra.main(config_path=...)``): the package
#: ``urbansound.conf``, the same in a source checkout and an installed wheel.
CONFIG_PATH = "pkg://urbansound.conf"
CONFIG_NAME = "config"

#: Each config group's settings class, by group name (``model``'s is the MLP's;
#: :data:`~urbansound.config.settings.FAMILY_SETTINGS` has every family's).
GROUP_SETTINGS: dict[str, type] = {
    "data": DataSettings,
    "features": FeatureSettings,
    "model": ModelSettings,
    "train": TrainSettings,
    "cv": CVSettings,
    "tracking": TrackingSettings,
    "trial": TrialSettings,
}


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
        # refuses an integer (model.gamma=1); urbansound.config.checks converts the value.
        return Any
    return tp


def _schema_class(
    cls: type,
    extra: list[tuple[str, Any, Any]] = (),  # type: ignore[assignment]
    *,
    name: str | None = None,
    defaults: Mapping[str, Any] | None = None,
    nested: Mapping[str, type] | None = None,
) -> type:
    """The schema of settings class ``cls``: a mutable dataclass of the same fields and defaults
    (``defaults`` replace some, ``extra`` adds fields, ``nested`` gives a dataclass field the
    schema of another settings class than its annotation), named ``<X>Schema`` unless ``name``."""
    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        if f.name in ("model", "features") and cls is Settings:  # one schema per family or
            fields.append((f.name, Any, field(default=None)))  # kind: the group's file brings
            continue  # its own
        if f.name in (nested or {}):
            sub = _SCHEMAS[nested[f.name]]  # type: ignore[index]
            fields.append((f.name, sub, field(default_factory=sub)))
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


_SCHEMAS: dict[type, type] = {}  # settings class -> schema class
for _cls in GROUP_SETTINGS.values():
    _SCHEMAS[_cls] = _schema_class(_cls)
#: Each group's schema, by group name (``GROUP_SCHEMAS["train"]`` is ``TrainSchema``; ``model``'s
#: is the MLP's, ``MODEL_SCHEMAS`` has every family's).
GROUP_SCHEMAS: dict[str, type] = {g: _SCHEMAS[cls] for g, cls in GROUP_SETTINGS.items()}
#: Each model family's schema (``model=<family>``), by family; ``sklearn`` has none: its group is
#: an open node (``_target_`` plus any keyword arguments, see :func:`sklearn_node`).
MODEL_SCHEMAS: dict[str, type] = {
    "mlp": GROUP_SCHEMAS["model"],
    **{
        family: _schema_class(
            cls,
            name="".join(w.title() for w in family.split("_")) + "Schema",
            defaults={"family": family},
        )
        for family, cls in FAMILY_SETTINGS.items()
        if family not in ("mlp", "sklearn")
    },
}


for _cls in (EmbeddingSettings, OnnxEmbeddingSettings):
    _SCHEMAS[_cls] = _schema_class(_cls)
#: Each feature kind's schema (``features=<kind>``), by kind: the hand-made kinds share
#: ``GROUP_SCHEMAS["features"]``; each embedding kind has its own, whose ``embedding`` node holds
#: only that kind's keys (BirdNET's none of the ONNX file's, so a sweep never asks them there).
FEATURE_SCHEMAS: dict[str, type] = {
    "mfcc": GROUP_SCHEMAS["features"],
    "logmel": GROUP_SCHEMAS["features"],
    **{
        kind: _schema_class(
            EmbeddingFeatureSettings,
            name=f"{kind.title()}FeaturesSchema",
            defaults={"kind": kind},
            nested={"embedding": embedding},
        )
        for kind, embedding in (("birdnet", EmbeddingSettings), ("onnx", OnnxEmbeddingSettings))
    },
}


def sklearn_node() -> Any:
    """``model=sklearn``'s base: ``family`` and ``_target_``, open to any further key (struct
    off, so ``model.n_estimators=300`` works without ``+``)."""
    from omegaconf import OmegaConf

    return OmegaConf.create({"family": "sklearn", "_target_": None}, flags={"struct": False})


#: The top-level schema: the groups, ``progress`` and the top-level ``n_mfcc`` that
#: ``features.n_mfcc`` reads (so that ``n_mfcc=20,40,60`` sweeps it).
ConfigSchema = _schema_class(Settings, extra=[("n_mfcc", int, field(default=40))])


def schema_nodes() -> dict[str, Any]:
    """Every schema under its name in Hydra's ConfigStore, the names the config tree's files
    extend (``- /train_schema@_here_``).

    Returns
    -------
    dict
        ``config_schema``: :data:`ConfigSchema`; ``<group>_schema``: each group's schema
        (``model_schema`` is the MLP's); ``model_<family>_schema``: each model family's, with
        ``model_sklearn_schema`` the open node of :func:`sklearn_node`;
        ``features_<kind>_schema``: each embedding kind's (``features_schema`` is the hand-made
        kinds'). Stored at the root of the config tree, so none is a selectable option of a
        group.
    """
    return {
        "config_schema": ConfigSchema,
        **{f"{group}_schema": schema for group, schema in GROUP_SCHEMAS.items()},
        **{f"model_{family}_schema": schema for family, schema in MODEL_SCHEMAS.items()},
        "model_sklearn_schema": sklearn_node(),
        **{f"features_{kind}_schema": FEATURE_SCHEMAS[kind] for kind in EMBEDDING_KINDS},
    }


# --------------------------------------------------------------------------------------------
# One-line messages for OmegaConf's and Hydra's errors.


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


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _field_type(full_key: str) -> Any:
    """The schema type of a dotted key (``model.hidden[1]`` -> int), or None if unknown."""
    tp: Any = ConfigSchema
    parts = full_key.replace("]", "").replace("[", ".").split(".")
    if parts[0] in ("model", "features") and len(parts) > 1:  # the first family's or kind's
        schemas = MODEL_SCHEMAS if parts[0] == "model" else FEATURE_SCHEMAS  # schema with the key
        tp = next((m for m in schemas.values() if parts[1] in m.__annotations__), None)
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
