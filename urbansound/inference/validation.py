"""What a model file may hold, checked before anything in it is used.

:func:`urbansound.inference.modelfile.load_model` reads a file's header and tensors, then, in
this order:

- :func:`header_metadata`: the safetensors header's ``__metadata__`` (read without a library, so
  that the metadata can be checked before the tensors are used);
- :func:`check_member_types`: each scikit-learn member's skops data holds only types of the
  allowlist (:mod:`urbansound.inference.allowlist`); first, so that a file whose checksum was
  recomputed after a type was slipped in is still refused for that type;
- the checksum (:func:`urbansound.inference.modelfile.content_digest`);
- :func:`check_metadata`: every value :class:`~urbansound.inference.modelfile.ModelFile` and
  predict read is there, of its type and in its range (:data:`LIMITS`; the window at least one
  feature frame), the feature settings are valid settings whose width is
  ``features.n_features`` (an embedding kind's from its recorded network's size, without
  opening the network), and the records a fit writes (``train``, ``training_data``,
  ``evaluation``) hold counts, seeds and accuracies of their kinds;
- :func:`check_tensors`: the tensors are exactly those the members name, of their types;
- :func:`load_estimator`: a scikit-learn member's skops bytes, loaded trusting exactly the types
  that were checked;
- :func:`check_members`: each member takes ``n_features`` inputs and gives one output per class,
  with finite weights and a standardiser whose ``std`` is finite and > 0; a scikit-learn member's
  trees and neighbour index are well formed (:func:`urbansound.inference.fitted.check_fitted`).

A problem is :class:`InvalidModelFile` (damage: the caller names the file and says to fit again)
or :class:`UntrustedMember` (a type that is not trusted: refused, not damage).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "LIMITS",
    "InvalidModelFile",
    "UntrustedMember",
    "check_member_types",
    "check_members",
    "check_metadata",
    "check_tensors",
    "content_digest",
    "header_metadata",
    "load_estimator",
]

#: Bounds of the metadata's sizes. ``window_s`` (seconds): at least one feature frame
#: (``features.hop_length / features.sr``) and at most an hour (a window is decoded and pooled
#: as one clip; the training clips of UrbanSound8K are 4 s).
LIMITS = {
    "classes": 10_000,
    "class_name_chars": 200,
    "members": 1_000,
    "layers": 64,
    "features": 1_000_000,
    "window_s": 3600.0,
}


class InvalidModelFile(Exception):
    """What is wrong with a model file's metadata or tensors (the caller adds the file)."""


class UntrustedMember(Exception):
    """A skops member holding types off the allowlist (not damage: no "damaged" hint)."""


def _require(ok: bool, message: str) -> None:
    """Raise :class:`InvalidModelFile` with ``message`` unless ``ok``."""
    if not ok:
        raise InvalidModelFile(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _int_in(value: Any, low: int, high: int) -> bool:
    return _is_int(value) and low <= value <= high


def _class_name_ok(name: Any) -> bool:
    return (
        isinstance(name, str)
        and 0 < len(name) <= LIMITS["class_name_chars"]
        and name.isprintable()  # no newline, tab or control character in a CSV header
    )


def check_metadata(meta: dict[str, Any]) -> None:
    """Check every value of a model file's metadata that is read, and the records a fit writes.

    Raises
    ------
    InvalidModelFile
        The first problem found, on one line naming the key and the value.
    """
    names = meta.get("class_names")
    _require(
        isinstance(names, list)
        and 2 <= len(names) <= LIMITS["classes"]
        and all(_class_name_ok(n) for n in names)
        and len(set(names)) == len(names),
        f"class_names must list 2 to {LIMITS['classes']} distinct printable names of 1 to "
        f"{LIMITS['class_name_chars']} characters, got {_short(names)}",
    )
    feats = meta.get("features")
    _require(isinstance(feats, dict), "it has no features metadata")
    settings = _feature_settings(feats)
    network = feats.get("model")  # an embedding kind's, checked by _feature_settings
    if hasattr(settings, "embedding"):
        # a window shorter than the network's is zero-padded, as a short clip: one sample at least
        frame, unit = 1 / network["sample_rate"], "one sample at the network's rate"
    else:
        frame, unit = settings.hop_length / settings.sr, "features.hop_length / features.sr"
    window = meta.get("window_s")
    _require(
        _is_number(window) and frame <= window <= LIMITS["window_s"],
        f"window_s must be a number of seconds from one feature frame ({frame:.4g} s = "
        f"{unit}) to {LIMITS['window_s']:g}, got {_short(window)}",
    )
    members = meta.get("members")
    _require(
        isinstance(members, list)
        and 1 <= len(members) <= LIMITS["members"]
        and all(isinstance(m, dict) for m in members),
        f"it lists no members (models), or more than {LIMITS['members']}",
    )
    for i, m in enumerate(members):
        _check_member_entry(i, m)
    _check_records(meta)


#: What a recorded embedding network's windows are counted in (features.model.*).
_NETWORK_SIZES = ("dim", "sample_rate", "window_samples", "hop_samples")


def _feature_settings(feats: dict[str, Any]) -> Any:
    """The metadata's feature settings, checked as a config's, and their width."""
    from urbansound.config.checks import settings_from_config
    from urbansound.config.settings import EmbeddingFeatureSettings
    from urbansound.errors import ConfigError
    from urbansound.features.embeddings.stage import embedding_names
    from urbansound.features.extraction import feature_names

    settings = feats.get("settings")
    _require(isinstance(settings, dict), "it has no features.settings")
    n_features = feats.get("n_features")
    _require(
        _int_in(n_features, 1, LIMITS["features"]),
        f"features.n_features must be an integer from 1 to {LIMITS['features']}, "
        f"got {_short(n_features)}",
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
            and all(_int_in(network.get(k), 1, 10**8) for k in _NETWORK_SIZES),
            "features.model must record the embedding network (sha256 and positive integers "
            f"{', '.join(_NETWORK_SIZES)})",
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
    return parsed


def _check_member_entry(i: int, m: dict[str, Any]) -> None:
    from urbansound.config.checks import SEED_MAX
    from urbansound.config.settings import ACTIVATIONS, FAMILIES

    family = m.get("family", "mlp")
    _require(family in FAMILIES, f"member {i} has family {_short(family)}")
    seed = m.get("seed", 0)
    _require(_int_in(seed, 0, SEED_MAX), f"member {i} has seed {_short(seed)}")
    fold = m.get("fold")
    _require(
        fold is None or _int_in(fold, 0, 10**6) or (isinstance(fold, str) and len(fold) <= 64),
        f"member {i} has fold {_short(fold)}",
    )
    if family != "mlp":
        return
    n_layers = m.get("n_layers")
    _require(_int_in(n_layers, 1, LIMITS["layers"]), f"member {i} has n_layers {_short(n_layers)}")
    activation = m.get("activation", "relu")
    _require(activation in ACTIVATIONS, f"member {i} has activation {_short(activation)}")
    standardize = m.get("standardize", False)
    _require(isinstance(standardize, bool), f"member {i} has standardize {_short(standardize)}")


def _check_records(meta: Mapping[str, Any]) -> None:
    """The records a fit writes, where present: counts are integers >= 0, seeds are seeds,
    accuracies lie in [0, 1]."""
    from urbansound.config.checks import SEED_MAX

    train = meta.get("train")
    _require(train is None or isinstance(train, dict), "train is not an object")
    seeds = (train or {}).get("seeds", [])
    _require(
        isinstance(seeds, list) and all(_int_in(s, 0, SEED_MAX) for s in seeds),
        f"train.seeds must list seeds from 0 to {SEED_MAX}, got {_short(seeds)}",
    )
    for record in ("training_data", "evaluation"):
        value = meta.get(record)
        _require(value is None or isinstance(value, dict), f"{record} is not an object")
        count = (value or {}).get("n_clips", 0)
        _require(
            _int_in(count, 0, 10**9), f"{record}.n_clips must be a count >= 0, got {_short(count)}"
        )
    training = meta.get("training_data") or {}
    per_class = training.get("clips_per_class", {})
    _require(
        isinstance(per_class, dict) and all(_int_in(v, 0, 10**9) for v in per_class.values()),
        f"training_data.clips_per_class must map classes to counts >= 0, got {_short(per_class)}",
    )
    evaluation = meta.get("evaluation") or {}
    for key in ("accuracy",):
        value = evaluation.get(key)
        _require(
            value is None or (_is_number(value) and 0.0 <= value <= 1.0),
            f"evaluation.{key} must lie in [0, 1], got {_short(value)}",
        )


def _short(value: Any) -> str:
    """``repr(value)`` cut to 80 characters, on one line."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 80 else text[:77] + "..."


def check_tensors(tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    """Check that the tensors are exactly those the members name (``m{i}.kernel{l}``,
    ``m{i}.bias{l}``, ``m{i}.mean``/``m{i}.std``; ``m{i}.skops`` 1-D uint8).

    Raises
    ------
    InvalidModelFile
        A tensor missing, one no member names, or a skops tensor of another type.
    """
    expected: set[str] = set()
    for i, m in enumerate(meta["members"]):
        if m.get("family", "mlp") != "mlp":
            expected.add(f"m{i}.skops")
            continue
        for j in range(m["n_layers"]):
            expected |= {f"m{i}.kernel{j}", f"m{i}.bias{j}"}
        if m.get("standardize"):
            expected |= {f"m{i}.mean", f"m{i}.std"}
    missing = sorted(expected - set(tensors))
    _require(not missing, f"tensor {', '.join(missing[:3])} is missing")
    stray = sorted(set(tensors) - expected)
    _require(not stray, f"tensor {', '.join(stray[:3])} belongs to no member")
    for name in expected:
        if name.endswith(".skops"):
            t = tensors[name]
            _require(t.dtype == np.uint8 and t.ndim == 1, f"tensor {name} is not 1-D uint8")


def check_members(members: Sequence[Any], *, n_features: int, n_classes: int) -> None:
    """Check that each member (a :class:`~urbansound.inference.modelfile.Member`) takes
    ``n_features`` inputs and gives ``n_classes`` outputs, with finite float32 weights and a
    standardiser of finite means and finite standard deviations > 0; a scikit-learn member's
    classes must be class ids and its fitted structure well formed.

    Raises
    ------
    InvalidModelFile
        The first problem found, on one line.
    """
    from urbansound.config.settings import ACTIVATIONS
    from urbansound.inference.fitted import check_fitted

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
                and classes.max() < n_classes
                and len(np.unique(classes)) == len(classes),
                f"member {i} ({m.family}) has classes {_short(classes.tolist())}, not ids of "
                f"the {n_classes} classes",
            )
            width = getattr(est, "n_features_in_", n_in)
            _require(width == n_in, f"member {i} ({m.family}) takes {width} features, not {n_in}")
            try:
                check_fitted(est, n_features=n_in)
            except ValueError as exc:
                raise InvalidModelFile(f"member {i} ({m.family}): {exc}") from None
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
            _require(
                bool(np.isfinite(w).all() and np.isfinite(b).all()),
                f"member {i} layer {j}: its weights are not all finite (NaN or infinity)",
            )
            fan_in = w.shape[1]
        _require(fan_in == n_classes, f"member {i} gives {fan_in} outputs for {n_classes} classes")
        for name, v in (("mean", m.mean), ("std", m.std)):
            if v is not None:
                _require(
                    v.shape == (n_in,) and bool(np.isfinite(v).all()),
                    f"member {i}: its standardiser's {name} is not {n_in} finite numbers",
                )
        if m.std is not None:
            zero = np.flatnonzero(~(m.std > 0))
            _require(
                len(zero) == 0,
                f"member {i}: its standardiser's std is {m.std[zero[0]] if len(zero) else 0} "
                f"for feature {zero[0] if len(zero) else 0} (every std must be > 0)",
            )


def content_digest(metadata_text: str, tensors: Mapping[str, np.ndarray]) -> str:
    """The SHA-256 (hex) a model file stores: of its ``urbansound`` metadata text and of every
    tensor (name, dtype, shape and bytes, in name order), framed so that no two contents give
    the same bytes to hash."""
    digest = hashlib.sha256(b"urbansound-model\0")
    digest.update(len(metadata_text.encode()).to_bytes(8, "little"))
    digest.update(metadata_text.encode())
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name])
        head = json.dumps([name, t.dtype.str, list(t.shape)]).encode()
        digest.update(len(head).to_bytes(8, "little") + head)
        digest.update(memoryview(t).cast("B"))
    return digest.hexdigest()


def header_metadata(raw: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's bytes (8-byte little-endian header length,
    then the header's JSON); raises ``ValueError`` (or ``UnicodeDecodeError``) for bytes that
    are no safetensors header."""
    if len(raw) < 8:
        raise ValueError("file too short")
    n = int.from_bytes(raw[:8], "little")
    if n > len(raw) - 8:
        raise ValueError(f"its header length ({n} bytes) runs past the end of the file")
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError("its __metadata__ is not an object of strings")
    return dict(meta)


def check_member_types(blob: bytes) -> list[str]:
    """The type names a scikit-learn member's skops bytes hold, all of them trusted
    (:func:`urbansound.inference.allowlist.untrusted_types`); nothing is imported or built.

    Raises
    ------
    UntrustedMember
        For a type off the allowlist, or a node that rebuilds a callable (the message names up
        to five).
    InvalidModelFile
        For bytes that are no skops data.
    """
    from urbansound.inference.allowlist import schema_types, untrusted_types

    try:
        refused = untrusted_types(blob)
    except Exception as exc:  # zipfile.BadZipFile, JSON errors: damaged bytes
        raise InvalidModelFile(f"cannot be read ({type(exc).__name__}: {exc})") from None
    if refused:
        more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
        raise UntrustedMember(
            f"holds types off urbansound's allowlist of scikit-learn classifiers and their "
            f"fitted state ({', '.join(refused[:5])}{more}); it is not loaded: fit a "
            "scikit-learn classifier"
        )
    return sorted({name for _, name in schema_types(blob)})


def load_estimator(blob: bytes) -> Any:
    """A scikit-learn member from its skops bytes, once :func:`check_member_types` found only
    trusted types; skops is asked to trust exactly those (and refuses anything it finds beyond
    them, such as a random generator's bit generator of another name).

    Raises
    ------
    UntrustedMember
        For a type that is not trusted (the message names it).
    InvalidModelFile
        For bytes skops cannot read (zip, JSON or schema errors).
    """
    import skops.io

    from urbansound.inference.allowlist import trusted_types

    types = check_member_types(blob)
    try:
        hidden = [t for t in skops.io.get_untrusted_types(data=blob) if t not in trusted_types()]
    except Exception as exc:  # skops' own errors for damaged bytes
        raise InvalidModelFile(f"cannot be read ({type(exc).__name__}: {exc})") from None
    if hidden:
        raise UntrustedMember(f"holds types off urbansound's allowlist ({', '.join(hidden[:5])})")
    try:
        return skops.io.loads(blob, trusted=types)
    except Exception as exc:
        raise InvalidModelFile(f"cannot be read ({type(exc).__name__}: {exc})") from None
