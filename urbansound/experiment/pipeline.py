"""The one pipeline of a run and a fit: settings -> clips, features, labels and folds.

``settings.data`` chooses the dataset (:func:`urbansound.data.source.resolve_dataset`:
UrbanSound8K where it is found, otherwise the demo corpus), :func:`urbansound.data.index.load_index`
lists its clips, the task selects the clips it uses (a run: :func:`urbansound.data.cv.select_clips`;
a fit: every clip) and checks that they can work before any audio is decoded,
:func:`urbansound.features.extraction.extract_features` computes their features through the shared
cache, and the clips without features (``features.on_error=skip``) are left out. What comes out is
one :class:`PreparedData` of plain values.

No torch here: a wrong ``data.root`` or an impossible split is said before the trainer is
imported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from urbansound.config.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

__all__ = ["ClipSelection", "PreparedData", "prepare_data"]

#: The task's clips from the index's (present clips, the metadata's order and columns plus
#: ``path``): a subset of the rows, checked; raises an
#: :class:`~urbansound.errors.UrbansoundError` when they cannot work (before any feature).
ClipSelection = Callable[["pd.DataFrame"], "pd.DataFrame"]


@dataclass(frozen=True)
class PreparedData:
    """A task's data: the clips with features, their features, labels and folds, and the facts
    of the dataset index they came from.

    Attributes
    ----------
    dataset:
        ``"urbansound8k"`` or ``"demo"``.
    root:
        The dataset folder.
    clips:
        The clips with a feature row, one row each in the order of ``X`` (index ``0..n-1``): the
        metadata's columns plus ``path``.
    X:
        ``(n_clips, n_features)`` float32 features
        (:func:`urbansound.features.extraction.feature_names`).
    y:
        ``(n_clips,)`` int64 class ids.
    folds:
        ``(n_clips,)`` int64 fold of each clip (1..10).
    class_names:
        Class names by class id (from the whole metadata).
    n_listed:
        Rows in the metadata.
    missing:
        ``"foldN/file.wav"`` of each listed clip that is absent.
    empty_folds:
        Folds 1-10 without a present clip.
    leaky_recordings:
        Recordings whose slices the metadata puts in more than one fold
        (``{"fsID", "folds"}``).
    skipped:
        ``{"path", "error"}`` of each selected clip left out for its features.
    n_computed, n_cached:
        Clips whose feature stage was computed now / read from the cache.
    durations:
        Seconds: ``index`` (from the start, the dataset choice included) and ``features``.
    feature_model:
        An embedding kind's network (name, file SHA-256, runtime, licence); None for the
        hand-made kinds.
    """

    dataset: str
    root: Path
    clips: pd.DataFrame
    X: np.ndarray
    y: np.ndarray
    folds: np.ndarray
    class_names: tuple[str, ...]
    n_listed: int
    missing: tuple[str, ...]
    empty_folds: tuple[int, ...]
    leaky_recordings: tuple[dict[str, Any], ...]
    skipped: tuple[dict[str, Any], ...]
    n_computed: int
    n_cached: int
    durations: dict[str, float]
    feature_model: dict[str, Any] | None = None

    @property
    def n_clips(self) -> int:
        """Clips with features (rows of ``X``)."""
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        """Features per clip (columns of ``X``)."""
        return int(self.X.shape[1]) if self.X.ndim == 2 else 0


def prepare_data(
    settings: Settings, *, select: ClipSelection | None = None, progress: bool = True
) -> PreparedData:
    """The clips, features, labels and folds of ``settings`` (module docstring).

    Parameters
    ----------
    settings:
        Validated settings: ``data``, ``features`` are used here, ``select`` may read the rest.
    select:
        The task's clips (:data:`ClipSelection`); default every present clip.
    progress:
        Whether the feature extraction reports its progress.

    Raises
    ------
    UrbansoundError
        No dataset where ``data`` says, unreadable metadata, missing clips
        (``data.missing=error``), a selection that cannot work, a clip that cannot be decoded
        (``features.on_error=error``), or an unwritable feature cache: one line naming the key
        or file.
    """
    from urbansound.data.index import load_index
    from urbansound.data.source import resolve_dataset
    from urbansound.features.extraction import extract_features

    t_start = time.perf_counter()
    root, dataset = resolve_dataset(settings.data)
    index = load_index(root, missing=settings.data.missing, name=dataset)
    durations = {"index": time.perf_counter() - t_start}
    clips = index.clips if select is None else select(index.clips)

    t0 = time.perf_counter()
    feats = extract_features(list(clips["path"]), settings.features, progress=progress)
    durations["features"] = time.perf_counter() - t0
    X = feats.X
    log.info(
        "features: %d clips x %d features (%d computed, %d from cache, %d skipped) in %.1f s",
        X.shape[0],
        X.shape[1] if X.ndim == 2 else 0,
        feats.n_computed,
        feats.n_cached,
        len(feats.skipped),
        durations["features"],
    )
    clips = clips[feats.ok].reset_index(drop=True)
    return PreparedData(
        dataset=dataset,
        root=Path(root),
        clips=clips,
        X=X,
        y=clips["classID"].to_numpy(dtype=np.int64),
        folds=clips["fold"].to_numpy(dtype=np.int64),
        class_names=tuple(index.class_names),
        n_listed=index.n_listed,
        missing=tuple(index.missing),
        empty_folds=tuple(index.empty_folds),
        leaky_recordings=tuple(dict(r) for r in index.leaky_recordings),
        skipped=tuple(feats.skipped),
        n_computed=feats.n_computed,
        n_cached=feats.n_cached,
        durations=durations,
        feature_model=feats.feature_model,
    )
