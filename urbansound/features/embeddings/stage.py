"""What the embedding stage of a clip is: the network of a kind, its windows, the cache key of
its window embeddings, their pooling and the names of the resulting columns.

:mod:`urbansound.features.embeddings.extraction` runs the stage over many clips with a cache;
:mod:`urbansound.inference` runs it on new audio with the same functions
(:func:`embed_audio`, :func:`pool_windows`), so a training clip gives bitwise its training row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from urbansound.config.settings import (
    EmbeddingFeatureSettings,
    FeatureSettings,
    OnnxEmbeddingSettings,
)
from urbansound.errors import ConfigError
from urbansound.features.cache import library_versions
from urbansound.features.dsp import POOLING_STATS, clip_features, log_mel, pool
from urbansound.features.embeddings.birdnet import DIM as BIRDNET_DIM
from urbansound.features.embeddings.birdnet import BirdNET
from urbansound.features.embeddings.model import EmbeddingModel, frame_windows
from urbansound.features.embeddings.onnx_model import OnnxModel
from urbansound.features.handmade import handmade_names

#: Bump when the windows or the entry layout change: old entries stop matching.
EMBEDDING_VERSION = 1
#: Bump when the on-load computation (pooling) changes.
RESULT_VERSION = 1
#: The cache folder of window embeddings.
FOLDER = "embeddings"


def open_model(settings: EmbeddingFeatureSettings) -> EmbeddingModel:
    """The network of an embedding kind, ready to :meth:`~EmbeddingModel.embed`.

    Raises
    ------
    ConfigError
        The kind's model cannot be used (the ``birdnet`` extra absent, an ONNX file missing or
        of the wrong form); the message names the key or the extra.
    """
    e = settings.embedding
    if settings.kind == "birdnet":
        return BirdNET(batch_size=e.batch_size)
    if settings.kind == "onnx":
        if not isinstance(e, OnnxEmbeddingSettings) or not e.path or not e.sample_rate:
            raise ConfigError(
                "features=onnx needs features.embedding.path (your .onnx file) and "
                "features.embedding.sample_rate (Hz)"
            )
        return OnnxModel(
            path=e.path,
            sample_rate=e.sample_rate,
            window_s=e.window_s,
            input=e.input,
            output=e.output,
            batch_size=e.batch_size,
        )
    raise ConfigError(f"features.kind={settings.kind!r} is not an embedding kind")


def hop_samples(model: EmbeddingModel, settings: EmbeddingFeatureSettings) -> int:
    """Samples between window starts: ``embedding.hop`` seconds at the model's rate, or the
    window when it is null; at least one sample.

    Raises
    ------
    ConfigError
        The hop is longer than the window (windows would skip audio).
    """
    hop = settings.embedding.hop
    if hop is None:
        return model.window_samples
    samples = max(1, round(hop * model.sample_rate))
    if samples > model.window_samples:
        raise ConfigError(
            f"features.embedding.hop={hop} is longer than {model.identity.name}'s window "
            f"({model.window_samples / model.sample_rate:g} s): windows would skip audio; use a "
            "hop up to the window"
        )
    return samples


def decode_versions() -> dict[str, str]:
    """Versions of what decodes and resamples clips (the rest of
    :func:`~urbansound.features.cache.library_versions` does not touch a window)."""
    versions = library_versions()
    return {k: versions[k] for k in ("soxr", "soundfile", "libsndfile", "numpy")}


def embedding_spec(model: EmbeddingModel, settings: EmbeddingFeatureSettings) -> dict:
    """What a clip's window embeddings depend on (the cache key's settings). The model file's
    path and name are not among them (its SHA-256 is): machines that install it elsewhere share
    entries."""
    ident = model.identity
    return {
        "embedding": EMBEDDING_VERSION,
        "sha256": ident.sha256,
        "layer": ident.layer,
        "runtime": ident.runtime,
        "runtime_version": ident.runtime_version,
        "sample_rate": model.sample_rate,
        "window": model.window_samples,
        "hop": hop_samples(model, settings),
        "versions": decode_versions(),
    }


def feature_model(model: EmbeddingModel, settings: EmbeddingFeatureSettings) -> dict[str, Any]:
    """What results and model files record of the network behind the features: its identity
    (name, file SHA-256 and path, runtime and version, licence, layer), its embedding size and its
    windows (``sample_rate`` Hz, ``window_samples``, ``hop_samples``)."""
    return {
        **model.identity.to_dict(),
        "dim": model.dim,
        "sample_rate": model.sample_rate,
        "window_samples": model.window_samples,
        "hop_samples": hop_samples(model, settings),
    }


def mfcc_settings(settings: EmbeddingFeatureSettings) -> FeatureSettings:
    """The hand-made features ``embedding.concat_mfcc`` appends: the tutorial's (time mean of
    ``concat_mfcc`` MFCCs), with the kind's cache, workers and error policy."""
    return FeatureSettings(
        n_mfcc=settings.embedding.concat_mfcc,
        cache_dir=settings.cache_dir,
        n_jobs=settings.n_jobs,
        on_error=settings.on_error,
    )


def embedding_names(settings: EmbeddingFeatureSettings, *, dim: int | None = None) -> list[str]:
    """Column names: ``<stat>_<kind><i>`` for each pooling statistic and embedding dimension
    (``mean_birdnet0``, ``max_onnx17``), then ``mean_mfcc<i>`` with ``concat_mfcc``.

    ``dim``: the embedding size (None: BirdNET's, or read from the ONNX file).
    """
    if dim is None:
        dim = BIRDNET_DIM if settings.kind == "birdnet" else open_model(settings).dim
    stats = POOLING_STATS[settings.pooling]
    names = [f"{stat}_{settings.kind}{i}" for stat in stats for i in range(dim)]
    if settings.embedding.concat_mfcc:
        names += handmade_names(mfcc_settings(settings))
    return names


def pool_windows(embeddings: np.ndarray, pooling: str) -> np.ndarray:
    """One clip's row from its window embeddings ``(n_windows, dim)``: ``(len(stats) * dim,)``
    float32, one block per statistic of ``pooling`` (:data:`urbansound.features.dsp.
    POOLING_STATS`)."""
    return pool(embeddings.T, pooling)


def embed_audio(y: np.ndarray, model: EmbeddingModel, *, hop: int) -> np.ndarray:
    """The window embeddings of samples ``y`` at the model's rate: ``(n_windows, dim)`` float32,
    what a cache entry holds (prediction uses this on new audio)."""
    return model.embed(frame_windows(y, window=model.window_samples, hop=hop))


def audio_row(
    y: np.ndarray,
    model: EmbeddingModel,
    settings: EmbeddingFeatureSettings,
    *,
    mfcc_audio: np.ndarray | None = None,
) -> np.ndarray:
    """The feature row of audio that is not in the cache (prediction on new audio): ``y`` at the
    model's rate cut into windows, embedded and pooled, then with ``embedding.concat_mfcc`` the
    tutorial's MFCC means of ``mfcc_audio`` (the same audio at 22 050 Hz) appended.

    Bitwise the row :func:`urbansound.features.extraction.extract_features` gives the same
    clip: the same windows, embeddings that do not depend on the batch, the same pooling (the
    MFCC part with BLAS on one thread, as the extraction runs it).

    Raises
    ------
    ValueError
        ``concat_mfcc`` is set and ``mfcc_audio`` is not given.
    """
    row = pool_windows(embed_audio(y, model, hop=hop_samples(model, settings)), settings.pooling)
    if not settings.embedding.concat_mfcc:
        return row
    if mfcc_audio is None:
        raise ValueError("embedding.concat_mfcc needs the audio at 22 050 Hz (mfcc_audio)")
    mfcc = mfcc_settings(settings)
    return np.concatenate([row, clip_features(log_mel(mfcc_audio, mfcc), mfcc, in_place=True)])
