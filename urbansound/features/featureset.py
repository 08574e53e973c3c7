"""The result of a feature extraction, whatever the feature kind: :class:`FeatureSet`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
