"""What a run's model costs to keep and to use, measured on this machine (``results.json``'s
``costs``).

A complete run measures, after its cross-validation:

- ``model_bytes``: the size of one fold's fitted model written as a model file stores it
  (:func:`urbansound.inference.modelfile.save_model`: the MLP's float32 arrays, another family's
  Pipeline through skops), in bytes. A fitted ensemble of ``k`` members is about ``k`` times it.
- ``model_ms_per_clip``: that model's ``predict_proba`` on a batch of up to
  :data:`BATCH` clips' features (the path ``predict`` takes: one model, the trainer's
  single-threaded evaluation for the MLP), the median of :data:`REPEATS` timed calls after one
  untimed call, divided by the batch size; milliseconds.
- ``feature_ms_per_clip``: decoding and computing the features of up to :data:`FEATURE_CLIPS`
  of the run's clips as ``predict`` does (hand-made kinds:
  :func:`~urbansound.features.audio.load_audio`, :func:`~urbansound.features.dsp.log_mel`,
  :func:`~urbansound.features.dsp.clip_features`; an embedding kind: its network's windows,
  :func:`~urbansound.features.embeddings.stage.audio_row`, the network opened once outside the
  timing), the median per clip; milliseconds. The feature cache is not used: it measures what a
  new clip costs.
- ``inference_ms_per_clip``: their sum, what ``predict`` spends per clip of the training
  clips' length.
- ``train_seconds``: the cross-validation's wall time (every fold; ``durations.train``).

Timings are wall-clock on a shared machine: they vary by some tens of percent between runs
(other processes, CPU frequency), more for sub-millisecond models, whose median over a batch
is the most stable figure available without a dedicated machine. Compare them within one
sweep, on one machine.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from urbansound.config.settings import AnyFeatureSettings

log = logging.getLogger(__name__)

__all__ = ["BATCH", "FEATURE_CLIPS", "REPEATS", "measure_costs", "model_member"]

#: Clips per timed ``predict_proba`` call.
BATCH = 64
#: Timed calls (after one untimed call) whose median is taken.
REPEATS = 5
#: Clips whose features are computed from their audio to time the feature stage.
FEATURE_CLIPS = 3
#: The rate of the tutorial's MFCC means an embedding kind appends (``embedding.concat_mfcc``).
MFCC_SR = 22_050


def model_member(fitted: Any, *, seed: int, fold: int | str, family: str) -> Any:
    """A fold's fitted model (:class:`~urbansound.training.results.FittedMLP` or a
    scikit-learn Pipeline) as a model file's :class:`~urbansound.inference.modelfile.Member`."""
    from urbansound.inference.modelfile import Member
    from urbansound.training.results import FittedMLP

    if not isinstance(fitted, FittedMLP):
        return Member(seed=seed, fold=fold, family=family, estimator=fitted)
    return Member(
        seed=seed,
        fold=fold,
        family="mlp",
        params=[(np.asarray(w), np.asarray(b)) for w, b in fitted.params],
        activation=fitted.activation,
        mean=fitted.mean,
        std=fitted.std,
    )


def _median_ms(call: Callable[[], Any], repeats: int) -> float:
    call()  # untimed: first-call allocations, imports
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def _model_bytes(member: Any) -> int | None:
    """The member's size as a model file (bytes); None when a model file cannot store it (a
    type off the model file's allowlist: ``fit`` would refuse it too)."""
    from urbansound.errors import UrbansoundError
    from urbansound.inference.modelfile import save_model

    with tempfile.TemporaryDirectory(prefix="urbansound-costs-") as tmp:
        try:
            path = save_model(Path(tmp) / "model.safetensors", [member], {"purpose": "costs"})
        except UrbansoundError as exc:
            log.warning("model_bytes not measured: %s", exc)
            return None
        return path.stat().st_size


def _featurizer(settings: AnyFeatureSettings) -> Callable[[str], np.ndarray]:
    """A clip file -> its feature row, the way ``predict`` computes one (an embedding kind's
    network is opened here once, outside the timing, as ``predict`` opens it once a batch)."""
    from urbansound.config.settings import EmbeddingFeatureSettings
    from urbansound.features.audio import load_audio

    if not isinstance(settings, EmbeddingFeatureSettings):
        from urbansound.features.dsp import clip_features, log_mel

        def handmade(path: str) -> np.ndarray:
            y = load_audio(path, sr=settings.sr)
            return clip_features(log_mel(y, settings), settings, in_place=True)

        return handmade
    from urbansound.features.embeddings.stage import audio_row, open_model

    network = open_model(settings)
    concat = settings.embedding.concat_mfcc > 0

    def embedded(path: str) -> np.ndarray:
        y = load_audio(path, sr=network.sample_rate)
        part = load_audio(path, sr=MFCC_SR) if concat else None
        return audio_row(y, network, settings, mfcc_audio=part)

    return embedded


def _feature_ms(paths: Sequence[str], settings: AnyFeatureSettings) -> float | None:
    try:
        featurize = _featurizer(settings)
    except Exception as exc:  # a network that cannot be opened here: no feature timing
        log.warning("feature timing skipped: %s", exc)
        return None
    times = []
    for path in paths:
        t0 = time.perf_counter()
        try:
            featurize(path)
        except Exception as exc:  # a clip that does not decode: measured on the others
            log.debug("feature timing skipped %s: %s", path, exc)
            continue
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times) if times else None


def measure_costs(
    fitted: Any,
    X: np.ndarray,
    *,
    n_classes: int,
    clip_paths: Sequence[str],
    features: AnyFeatureSettings,
    family: str,
    seed: int,
    train_seconds: float,
) -> dict[str, float]:
    """The run's measured costs (module docstring), JSON-ready.

    Parameters
    ----------
    fitted:
        One fold's fitted model (``CVResult.models[0]``).
    X:
        ``(n_clips, n_features)`` the run's features; the first :data:`BATCH` rows are timed.
    clip_paths:
        The run's clip files; the first :data:`FEATURE_CLIPS` are decoded and featurised.

    Returns
    -------
    dict
        ``model_bytes``, ``model_ms_per_clip``, ``feature_ms_per_clip``,
        ``inference_ms_per_clip`` and ``train_seconds``; the feature and inference times are
        left out when no clip could be decoded, ``model_bytes`` when a model file cannot store
        the model (a warning says why). A measurement never fails the run.
    """
    member = model_member(fitted, seed=seed, fold=getattr(fitted, "fold", 0), family=family)
    batch = np.ascontiguousarray(X[:BATCH], dtype=np.float32)
    model_ms = _median_ms(lambda: member.predict_proba(batch, n_classes), REPEATS) / len(batch)
    costs: dict[str, float] = {"model_ms_per_clip": model_ms, "train_seconds": float(train_seconds)}
    size = _model_bytes(member)
    if size is not None:
        costs["model_bytes"] = float(size)
    feature_ms = _feature_ms(list(clip_paths)[:FEATURE_CLIPS], features)
    if feature_ms is not None:
        costs["feature_ms_per_clip"] = feature_ms
        costs["inference_ms_per_clip"] = feature_ms + model_ms
    return costs
