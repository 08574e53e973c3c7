"""Classify audio with a fitted model: windows of long recordings, timelines, probabilities.

:func:`predict_files` classifies files with a :class:`~urbansound.inference.modelfile.ModelFile`
(the command line is :mod:`urbansound.inference.cli`). Features are computed by the training code
(:func:`urbansound.features.audio.load_audio`, then :func:`urbansound.features.dsp.log_mel` and
:func:`urbansound.features.dsp.clip_features` with the model's feature settings, which make no
BLAS call), so a training clip gives exactly its training features. For an embedding kind the
audio is decoded at the network's rate and each window of it (below) is cut into the network's
windows, embedded and pooled by :func:`urbansound.features.embeddings.stage.audio_row`, the
training code too; the network is the one recorded in the model file, used only while its file
has the recorded SHA-256 (:func:`open_network`).

- A file up to the model's window (the training clips' length, 4 s; ``window_s`` in the model
  file) is one clip: one row, the whole file, as a training clip is.
- A longer recording is decoded once and cut into windows of that length every ``hop_s``
  seconds (default: the window, no overlap), from 0 until a window reaches the end
  (:func:`window_bounds`); the last one holds what is left and is not padded (training clips
  shorter than 4 s are not padded either: their features pool over the frames they have). One
  row per window, and a :func:`timeline`: consecutive windows with the same top class merged into
  one segment, from its first window's start to the next segment's first start (the last to the
  end of the file).

All clips and windows of one call are classified in one batch, as the trainer evaluates one fold:
the same clips in the same order, on the same machine, give bitwise the probabilities of the fit
and of a CV run of that one fold (the same computation). Any other batch (a clip alone, a CV run
evaluating several folds stacked, another CPU) agrees within :data:`AGREEMENT_TOLERANCE`:
matrix-product kernels are chosen per shape and CPU and round differently.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from urbansound.errors import AudioError

if TYPE_CHECKING:
    from urbansound.config.settings import AnyFeatureSettings
    from urbansound.features.embeddings.model import EmbeddingModel
    from urbansound.inference.modelfile import ModelFile

__all__ = [
    "AGREEMENT_TOLERANCE",
    "FilePrediction",
    "Segment",
    "Window",
    "min_hop",
    "open_network",
    "predict_files",
    "timeline",
    "window_bounds",
]

#: How far (absolute, per class probability) predict's probabilities of a clip may lie from the
#: trainer's when they are not the same computation (``docs/fit-predict.md``, "How exact"): the
#: same rows in another batch, a CV run's stacked folds, another CPU. float32 rounding of a logit
#: differs by a few units in the last place between matrix-product kernels; measured up to
#: 2.4e-7 (a clip alone against the same clip in a batch of 780-990), 3e-8 on other CPUs.
AGREEMENT_TOLERANCE = 1e-5

#: A file this much longer than the window (in seconds) is still one clip: UrbanSound8K's
#: "4 s" slices run a few ms over.
_TOLERANCE_S = 0.01


@dataclass
class Window:
    """One classified clip or window: seconds from the file's start, the top class id and the
    class probabilities ``(n_classes,)`` float32."""

    start: float
    end: float
    label: int
    probabilities: np.ndarray


@dataclass
class Segment:
    """Consecutive windows with the same top class."""

    start: float
    end: float
    label: int
    windows: int
    probability: float  # mean probability of ``label`` over the windows


@dataclass
class FilePrediction:
    """A file's windows (one for a clip up to the window length) and its timeline."""

    path: str
    duration: float
    windows: list[Window] = field(default_factory=list)
    timeline: list[Segment] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Windows and timelines


def window_bounds(n_samples: int, *, window: int, hop: int) -> list[tuple[int, int]]:
    """Sample ranges ``[start, end)`` of the windows of a recording of ``n_samples``.

    One range for a recording up to ``window`` samples (``window`` plus a 10 ms tolerance is
    applied by the caller); otherwise windows start every ``hop`` samples until one reaches the
    end, the last holding what is left. A hop longer than the window leaves gaps, and no window
    starts at or after the end.
    """
    if window < 1 or hop < 1:
        raise ValueError(f"window ({window}) and hop ({hop}) must be at least one sample")
    if n_samples <= window:
        return [(0, n_samples)]
    bounds = []
    start = 0
    while start < n_samples:
        end = min(start + window, n_samples)
        bounds.append((start, end))
        if end >= n_samples:
            break
        start += hop
    return bounds


def timeline(windows: Sequence[Window], duration: float) -> list[Segment]:
    """Consecutive windows with the same top class merged into segments (module docstring)."""
    groups: list[list[Window]] = []
    for w in windows:
        if groups and groups[-1][-1].label == w.label:
            groups[-1].append(w)
        else:
            groups.append([w])
    segments = []
    for i, g in enumerate(groups):
        end = groups[i + 1][0].start if i + 1 < len(groups) else max(g[-1].end, duration)
        probability = float(np.mean([w.probabilities[w.label] for w in g]))
        segments.append(Segment(g[0].start, end, g[0].label, len(g), probability))
    return segments


# --------------------------------------------------------------------------------------------
# Features and predictions


class _Stopped(Exception):
    """The batch was interrupted: a worker leaves its file unfinished."""


def _file_features(
    path: str,
    settings: AnyFeatureSettings,
    *,
    window_s: float,
    hop_s: float,
    stop: threading.Event | None = None,
    network: EmbeddingModel | None = None,
) -> tuple[float, list[tuple[int, int]], np.ndarray]:
    """Decode ``path`` once and compute each window's feature row (the training code).

    ``network``: an embedding kind's network (the audio is decoded at its rate; bounds are in its
    samples). ``stop`` (a :class:`threading.Event`) set: raises :class:`_Stopped` before the next
    window, so that Ctrl-C does not wait for the windows of a long recording.
    """
    from urbansound.features.audio import audio_error, load_audio
    from urbansound.features.dsp import clip_features, log_mel
    from urbansound.features.embeddings.stage import audio_row

    sr = network.sample_rate if network is not None else settings.sr
    y = load_audio(path, sr=sr)
    mfcc_sr = 22_050  # the tutorial's rate, of embedding.concat_mfcc's MFCC means
    concat = network is not None and settings.embedding.concat_mfcc > 0
    y_mfcc = load_audio(path, sr=mfcc_sr) if concat else None
    window = round(window_s * sr)
    limit = window + round(_TOLERANCE_S * sr)
    if len(y) <= limit:
        bounds = [(0, len(y))]
    else:
        bounds = window_bounds(len(y), window=window, hop=max(1, round(hop_s * sr)))
    rows = []
    for a, b in bounds:
        if stop is not None and stop.is_set():
            raise _Stopped
        if network is None:
            row = clip_features(log_mel(y[a:b], settings), settings, in_place=True)
        else:
            part = None
            if y_mfcc is not None:  # the same seconds at 22 050 Hz (the whole file for a clip)
                whole = (a, b) == (0, len(y))
                start, end = (0, len(y_mfcc)) if whole else (a * mfcc_sr // sr, b * mfcc_sr // sr)
                part = y_mfcc[start:end]
            row = audio_row(y[a:b], network, settings, mfcc_audio=part)
        if not np.isfinite(row).all():
            raise audio_error(path, "its features are not finite")
        rows.append(row)
    return len(y) / sr, bounds, np.stack(rows).astype(np.float32, copy=False)


def min_hop(model: ModelFile) -> float:
    """The shortest hop between windows, in seconds: one feature frame (``hop_length`` samples);
    a shorter one only repeats the same frames (and a hop of a few samples means as many
    windows as samples, which would never end on a long recording). For an embedding kind: the
    hop between the network's windows."""
    recorded = model.feature_model
    if recorded is not None:
        return recorded["hop_samples"] / recorded["sample_rate"]
    return model.features.hop_length / model.features.sr


def open_network(model: ModelFile) -> EmbeddingModel:
    """The embedding network of ``model``'s features, the very file it was trained with.

    Raises
    ------
    ModelFileError
        The network cannot be opened (the ``birdnet`` extra absent, the ONNX file gone), or its
        file's SHA-256 or windows are not the recorded ones (embeddings would differ from the
        training features); one line naming the model file and what to do.
    """
    import dataclasses

    from urbansound.errors import ConfigError
    from urbansound.features.embeddings.stage import hop_samples, open_model
    from urbansound.inference.modelfile import ModelFileError

    recorded = model.feature_model
    assert recorded is not None
    settings = model.features
    if settings.kind == "onnx":  # the file as trained, wherever the fit ran from
        embedding = dataclasses.replace(settings.embedding, path=recorded["path"])
        settings = dataclasses.replace(settings, embedding=embedding)
    where = f"{model.path}: its features are {recorded['name']} embeddings of {recorded['path']}"
    try:
        network = open_model(settings)
    except ConfigError as exc:
        raise ModelFileError(f"{where}, which cannot be used here: {exc}") from None
    got = network.identity.sha256
    if got != recorded["sha256"]:
        raise ModelFileError(
            f"{where} with SHA-256 {recorded['sha256'][:16]}..., but that file now has "
            f"{got[:16]}...: restore the file the model was trained with, or fit again"
        )
    windows = (network.sample_rate, network.window_samples, hop_samples(network, settings))
    recorded_windows = tuple(recorded[k] for k in ("sample_rate", "window_samples", "hop_samples"))
    if windows != recorded_windows:
        raise ModelFileError(f"{where} with windows {recorded_windows}, here {windows}")
    return network


def predict_files(
    model: ModelFile,
    paths: Sequence[str],
    *,
    hop_s: float | None = None,
    n_jobs: int = 1,
    progress: str | None = None,
    on_error: Callable[[str, str], None] | None = None,
) -> list[FilePrediction]:
    """Classify ``paths`` with ``model``.

    ``hop_s``: seconds between window starts of long recordings (default: the window; at least
    :func:`min_hop`, else ``ValueError``). ``n_jobs``: files decoded at once (-1: all cores).
    ``on_error(path, message)`` is called for each file that cannot be read (and the file is
    left out); without it the :class:`~urbansound.errors.AudioError` propagates. Returns one
    :class:`FilePrediction` per file classified, in input order.
    """
    from concurrent.futures import ThreadPoolExecutor

    from urbansound.features.audio import HINT
    from urbansound.utils.progress import progress_bar

    settings = model.features
    window_s = model.window_s
    hop_s = window_s if hop_s is None else float(hop_s)
    if not hop_s >= min_hop(model):
        raise ValueError(f"the hop must be at least {min_hop(model):.4g} s, got {hop_s}")
    network = open_network(model) if model.feature_model is not None else None

    stop = threading.Event()

    def one(path: str) -> tuple[str, Any]:
        if stop.is_set():
            raise _Stopped
        try:
            got = _file_features(
                path, settings, window_s=window_s, hop_s=hop_s, stop=stop, network=network
            )
            return path, got
        except AudioError as exc:
            return path, AudioError(str(exc).removesuffix(HINT))
        except (_Stopped, KeyboardInterrupt):
            raise
        except Exception as exc:  # one odd file (a decoder or resampler error) ends no batch
            reason = " ".join(str(exc).split()) or "no message"
            return path, AudioError(f"cannot classify {path}: {type(exc).__name__}: {reason}")

    done: list[tuple[str, float, list[tuple[int, int]], np.ndarray]] = []
    mode = progress if len(paths) > 1 else "none"
    bar = progress_bar(total=len(paths), desc="predict", unit="file", mode=mode)
    # No BLAS thread limit, as extract_features: the feature DSP makes no BLAS call
    # (features.dsp._mel_power), so a clip's features are the same bits in any thread.
    try:
        workers = max(1, min(n_jobs if n_jobs > 0 else (os.cpu_count() or 1), len(paths)))
        if workers == 1:
            results: Iterable[tuple[str, Any]] = map(one, paths)
        else:
            pool = ThreadPoolExecutor(workers, thread_name_prefix="predict")
            results = pool.map(one, paths)
        try:
            for path, got in results:
                bar.update(1)
                if isinstance(got, AudioError):
                    if on_error is None:
                        raise got
                    on_error(path, str(got))
                    continue
                done.append((path, *got))
        except BaseException:  # Ctrl-C, or an error: the workers stop before their next window
            stop.set()
            raise
        finally:
            if workers > 1:
                pool.shutdown(cancel_futures=True)
    finally:
        bar.close()
    if not done:
        return []
    X = np.concatenate([rows for *_, rows in done])
    probs = model.predict_proba(X)
    out = []
    at = 0
    sr = network.sample_rate if network is not None else settings.sr
    for path, duration, bounds, rows in done:
        p = probs[at : at + len(rows)]
        at += len(rows)
        windows = [
            Window(a / sr, b / sr, int(np.argmax(p[i])), p[i]) for i, (a, b) in enumerate(bounds)
        ]
        out.append(FilePrediction(path, duration, windows, timeline(windows, duration)))
    return out
