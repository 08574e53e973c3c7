"""What a model file may hold, checked before anything in it is used.

:func:`urbansound.inference.modelfile.load_model` reads a file's header and tensors, then:

- :func:`header_metadata`: the safetensors header's ``__metadata__`` (read without a library, so
  that the metadata can be checked before the tensors are used);
- :func:`check_metadata`: every value :class:`~urbansound.inference.modelfile.ModelFile` and
  predict read is there, of its type and in its range, and the feature settings are valid
  settings whose width is ``features.n_features`` (an embedding kind's from its recorded
  network's size, without opening the network);
- :func:`load_estimator`: a scikit-learn member's skops bytes, loaded only when every type they
  hold is in skops' trusted set or a class of scikit-learn itself (:func:`trusted_class`);
- :func:`check_members`: each member takes ``n_features`` inputs and gives one output per class.

A problem is :class:`InvalidModelFile` (damage: the caller names the file and says to fit again)
or :class:`UntrustedMember` (a type that is not trusted: refused, not damage).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "InvalidModelFile",
    "UntrustedMember",
    "check_members",
    "check_metadata",
    "header_metadata",
    "load_estimator",
    "trusted_class",
]


class InvalidModelFile(Exception):
    """What is wrong with a model file's metadata or tensors (the caller adds the file)."""


class UntrustedMember(Exception):
    """A skops member holding types outside the trusted set (not damage: no "damaged" hint)."""


def _require(ok: bool, message: str) -> None:
    """Raise :class:`InvalidModelFile` with ``message`` unless ``ok``."""
    if not ok:
        raise InvalidModelFile(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_metadata(meta: dict[str, Any]) -> None:
    """Check that what :class:`~urbansound.inference.modelfile.ModelFile` and predict read from
    the metadata is there and of its type, and that the feature settings are valid settings whose
    width is ``features.n_features``.

    Raises
    ------
    InvalidModelFile
        The first problem found, on one line.
    """
    import math

    from urbansound.config.checks import settings_from_config
    from urbansound.config.settings import EmbeddingFeatureSettings
    from urbansound.errors import ConfigError
    from urbansound.features.embeddings.stage import embedding_names
    from urbansound.features.extraction import feature_names

    names = meta.get("class_names")
    _require(
        isinstance(names, list)
        and len(names) >= 2
        and all(isinstance(n, str) and n for n in names)
        and len(set(names)) == len(names),
        f"class_names must list at least 2 distinct class names, got {names!r}",
    )
    window = meta.get("window_s")
    _require(
        isinstance(window, int | float)
        and not isinstance(window, bool)
        and math.isfinite(window)
        and window > 0,
        f"window_s must be a number of seconds > 0, got {window!r}",
    )
    feats = meta.get("features")
    _require(isinstance(feats, dict), "it has no features metadata")
    settings = feats.get("settings")
    _require(isinstance(settings, dict), "it has no features.settings")
    n_features = feats.get("n_features")
    _require(
        _is_int(n_features) and n_features > 0,
        f"features.n_features must be an integer > 0, got {n_features!r}",
    )
    try:
        parsed = settings_from_config({"features": dict(settings)}).features
    except ConfigError as exc:
        raise InvalidModelFile(f"its feature settings are invalid ({exc})") from None
    except Exception as exc:  # not even of the schema's shape
        raise InvalidModelFile(
            f"its feature settings are invalid ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(parsed, EmbeddingFeatureSettings):  # the width from the recorded network
        network = feats.get("model")
        _require(
            isinstance(network, dict)
            and isinstance(network.get("sha256"), str)
            and len(network["sha256"]) == 64
            and _is_int(network.get("dim"))
            and network["dim"] > 0,
            "features.model must record the embedding network (sha256, dim)",
        )
        width = len(embedding_names(parsed, dim=network["dim"]))
    else:
        width = len(feature_names(parsed))
    _require(
        width == n_features,
        f"its feature settings give {width} features, features.n_features says {n_features}",
    )
    stage = feats.get("stage")
    _require(stage is None or isinstance(stage, dict), "features.stage is not an object")
    members = meta.get("members")
    _require(
        isinstance(members, list) and members and all(isinstance(m, dict) for m in members),
        "it lists no members (models)",
    )
    for i, m in enumerate(members):
        family = m.get("family", "mlp")
        _require(isinstance(family, str), f"member {i} has family {family!r}")
        if family == "mlp":
            n_layers = m.get("n_layers")
            _require(
                _is_int(n_layers) and n_layers >= 1,
                f"member {i} has n_layers {n_layers!r}",
            )


def check_members(members: Sequence[Any], *, n_features: int, n_classes: int) -> None:
    """Check that each member (a :class:`~urbansound.inference.modelfile.Member`) takes
    ``n_features`` inputs and gives ``n_classes`` outputs, with float32 weights and a finite
    standardiser.

    Raises
    ------
    InvalidModelFile
        The first problem found, on one line.
    """
    from urbansound.config.settings import ACTIVATIONS

    n_in = n_features
    for i, m in enumerate(members):
        if m.family != "mlp":
            est = m.estimator
            _require(hasattr(est, "predict_proba"), f"member {i} ({m.family}) cannot predict")
            classes = np.asarray(getattr(est, "classes_", []))
            _require(
                classes.ndim == 1
                and len(classes) >= 1
                and np.issubdtype(classes.dtype, np.integer)
                and classes.min() >= 0
                and classes.max() < n_classes,
                f"member {i} ({m.family}) has classes {classes.tolist()}, not ids of the "
                f"{n_classes} classes",
            )
            width = getattr(est, "n_features_in_", n_in)
            _require(width == n_in, f"member {i} ({m.family}) takes {width} features, not {n_in}")
            continue
        _require(m.activation in ACTIVATIONS, f"member {i} has activation {m.activation!r}")
        fan_in = n_in
        for j, (w, b) in enumerate(m.params):
            _require(
                w.dtype == np.float32 and b.dtype == np.float32,
                f"member {i} layer {j}: weights of type {w.dtype}/{b.dtype}, not float32",
            )
            _require(
                w.ndim == 2 and w.shape[0] == fan_in and b.shape == (w.shape[1],),
                f"member {i} layer {j}: kernel {w.shape} and bias {b.shape} do not take "
                f"{fan_in} inputs",
            )
            fan_in = w.shape[1]
        _require(fan_in == n_classes, f"member {i} gives {fan_in} outputs for {n_classes} classes")
        for name, v in (("mean", m.mean), ("std", m.std)):
            if v is not None:
                _require(
                    v.shape == (n_in,) and bool(np.isfinite(v).all()),
                    f"member {i}: its standardiser's {name} is not {n_in} finite numbers",
                )


def header_metadata(raw: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's bytes (8-byte little-endian header length,
    then the header's JSON); raises ``ValueError`` (or ``UnicodeDecodeError``) for bytes that
    are no safetensors header."""
    if len(raw) < 8:
        raise ValueError("file too short")
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    return dict(header.get("__metadata__") or {})


def trusted_class(name: str) -> bool:
    """Whether ``name`` (a dotted type name skops reports) is a class of scikit-learn itself.

    skops' default trusted set leaves out the inner classes of fitted estimators that the model
    families store (``sklearn.tree._tree.Tree`` of the forests, the histogram boosting's
    ``TreePredictor``, the SVM's calibrators, the neighbours' ``KDTree``). Classes are rebuilt from
    their stored state; functions are never trusted here (a stored function could be called).
    """
    import importlib

    module, _, attr = name.rpartition(".")
    if module != "sklearn" and not module.startswith("sklearn."):
        return False
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return False
    return isinstance(obj, type)


def load_estimator(blob: bytes) -> Any:
    """A scikit-learn member from its skops bytes, trusting skops' default set plus
    scikit-learn's own classes (:func:`trusted_class`).

    Raises
    ------
    UntrustedMember
        For any other type (the message lists up to five).
    InvalidModelFile
        For bytes skops cannot read (zip, JSON or schema errors).
    """
    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(data=blob)
    except Exception as exc:  # skops' own errors for damaged bytes
        raise InvalidModelFile(f"cannot be read ({type(exc).__name__}: {exc})") from None
    refused = [t for t in untrusted if not trusted_class(t)]
    if refused:
        raise UntrustedMember(
            "holds types outside skops' trusted set and scikit-learn "
            f"({', '.join(refused[:5])}); it is not loaded: fit a scikit-learn estimator"
        )
    try:
        return skops.io.loads(blob, trusted=untrusted)
    except Exception as exc:
        raise InvalidModelFile(f"cannot be read ({type(exc).__name__}: {exc})") from None
