"""What a model file's features depend on: the settings it stores and the versions it records.

A model file (:mod:`urbansound.inference.modelfile`) stores the ``features.*`` settings that say
what is computed (:func:`feature_settings_dict`) and the versions of the code and libraries that
change features (:func:`feature_stage`); :func:`stage_differences` says what differs from the
running ones (:func:`urbansound.inference.modelfile.load_model` warns about them).
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from urbansound.config.settings import AnyFeatureSettings

__all__ = ["feature_settings_dict", "feature_stage", "stage_differences"]

#: ``features.*`` keys that say where and how to compute, not what: not stored.
_ENVIRONMENT_KEYS = ("cache_dir", "n_jobs", "on_error")
_EMBEDDING_ENVIRONMENT_KEYS = ("batch_size",)  # features.embedding.*: memory, not results


def feature_settings_dict(settings: AnyFeatureSettings) -> dict[str, Any]:
    """The ``features.*`` settings a model file stores (what is computed, not where)."""
    out = {f.name: getattr(settings, f.name) for f in fields(settings)}
    out = {k: v for k, v in out.items() if k not in _ENVIRONMENT_KEYS}
    if "embedding" in out:  # an embedding kind
        embedding = asdict(out["embedding"]).items()
        out["embedding"] = {k: v for k, v in embedding if k not in _EMBEDDING_ENVIRONMENT_KEYS}
    return out


def feature_stage() -> dict[str, Any]:
    """The running feature code's versions and the library versions that change features.

    ``{"stage_version", "result_version", "libraries": {name: version}}``: the versions the
    feature cache keys its entries by (:func:`urbansound.features.cache.library_versions`).
    """
    from urbansound.features.cache import library_versions
    from urbansound.features.handmade import RESULT_VERSION, STAGE_VERSION

    return {
        "stage_version": STAGE_VERSION,
        "result_version": RESULT_VERSION,
        "libraries": library_versions(),
    }


def stage_differences(stored: dict[str, Any], current: dict[str, Any] | None = None) -> list[str]:
    """What differs between a stored :func:`feature_stage` and the running one, one item each
    (``"librosa 0.10.2 (model) vs 0.11.0 (here)"``); empty when the features would be equal."""
    current = feature_stage() if current is None else current
    out = []
    for key in ("stage_version", "result_version"):
        if stored.get(key) != current.get(key):
            out.append(f"feature {key} {stored.get(key)} (model) vs {current.get(key)} (here)")
    have, want = stored.get("libraries") or {}, current.get("libraries") or {}
    for name in sorted(set(have) | set(want)):
        if have.get(name) != want.get(name):
            out.append(f"{name} {have.get(name)} (model) vs {want.get(name)} (here)")
    return out
