"""The result of a feature extraction, whatever the feature kind: :class:`FeatureSet`, and
:func:`gather_rows`, which turns an extraction's per-clip rows into it."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from urbansound.features.audio import HINT
from urbansound.features.cache import matrix_path, store


@dataclass
class FeatureSet:
    """Features of a list of clips, with what the extraction did.

    Attributes
    ----------
    X:
        ``(n_ok, n_features)`` float32, rows in input order (see
        :func:`urbansound.features.extraction.feature_names`).
    ok:
        ``(n_paths,)`` bool: which input paths have a row in ``X``.
    skipped:
        ``[{"path": str, "error": str}]`` for clips left out (``features.on_error=skip``).
    n_computed, n_cached:
        Clips whose stage (hand-made kinds) or window embeddings (embedding kinds) were computed
        now / read from the cache.
    seconds:
        Wall time of the extraction.
    feature_model:
        The network behind an embedding kind (``name``, ``sha256`` and ``path`` of its file,
        ``runtime``, ``runtime_version``, ``licence``, ``layer``, ``dim``, its windows; see
        :func:`urbansound.features.embeddings.stage.feature_model`); None for the hand-made
        kinds.
    """

    X: np.ndarray
    ok: np.ndarray
    skipped: list[dict] = field(default_factory=list)
    n_computed: int = 0
    n_cached: int = 0
    seconds: float = 0.0
    feature_model: dict[str, Any] | None = None


def gather_rows(
    rows: Sequence[np.ndarray | None],
    errors: Mapping[int, str],
    paths: Sequence[str | os.PathLike[str]],
    width: int,
    *,
    root: str,
    result_key: bytes | None,
    cache_dir: str,
    blocked: list[str],
    log: logging.Logger,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """An extraction's rows as its matrix, whatever the feature kind.

    ``rows`` holds one ``(width,)`` row per input path, None where the clip was left out;
    ``errors`` maps those indices to their one-line errors. Logs each clip left out on ``log``;
    stores the matrix in the cache under ``result_key`` when no clip was left out (the whole
    matrix of one call, ``features/`` under ``root``); warns once when more than one cache entry
    could not be written (``blocked``).

    Returns
    -------
    tuple
        ``X`` ``(n_ok, width)`` float32 in input order, ``ok`` ``(n_paths,)`` bool, ``skipped``
        ``[{"path", "error"}]`` (:class:`FeatureSet`'s fields).
    """
    ok = np.array([r is not None for r in rows], dtype=bool)
    X = (
        np.stack([r for r in rows if r is not None]).astype(np.float32, copy=False)
        if ok.any()
        else np.zeros((0, width), dtype=np.float32)
    )
    skipped = [
        {"path": os.fspath(paths[i]), "error": errors[i].removesuffix(HINT)} for i in sorted(errors)
    ]
    for s in skipped:
        log.warning("features.on_error=skip: left out %s", s["error"])
    if result_key is not None and not skipped:
        store(
            matrix_path(root, result_key),
            result_key,
            X,
            root=root,
            cache_dir=cache_dir,
            blocked=blocked,
        )
    if len(blocked) > 1:
        log.warning(
            "%d feature cache entries could not be written (the first: %s)",
            len(blocked),
            blocked[0],
        )
    return X, ok, skipped
