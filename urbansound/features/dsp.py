"""The librosa-equal signal processing behind :mod:`urbansound.features.extraction`, in numpy +
``scipy.fft``.

What it holds
-------------
- The stage (:func:`log_mel`, :func:`log_mel_frames`): a centred, zero-padded float32 STFT, power
  spectrum, Slaney mel bands and ``10*log10(max(AMIN, .))``, equal within float32 rounding to
  ``librosa.power_to_db(librosa.feature.melspectrogram(...), top_db=None)``. Its window
  (:func:`window_function`, librosa's ``filters.get_window`` + ``util.pad_center``) and mel matrix
  (:func:`mel_basis_t`, ``librosa.filters.mel`` on the Slaney band edges of
  :func:`urbansound.config.melscale.mel_frequencies`) are bit-identical to librosa's: the tests
  compare them with ``assert_array_equal``.
- What is done on load (:func:`clip_features`, :func:`frame_features`): the ``top_db`` floor
  (:func:`_floor`, as ``power_to_db``), the orthonormal DCT-II and lifter (:func:`_dct_lifter`,
  as ``librosa.feature.mfcc``), the deltas (:func:`_delta`, ``librosa.feature.delta``'s
  Savitzky-Golay filter) and the pooling over time (:func:`pool`, :data:`POOLING_STATS`), each
  equal to librosa / scipy within float32 rounding (``tests/features/test_features.py`` checks every
  one).

Why it is hand-written: ``librosa.filters`` imports ``scipy.signal`` and ``scipy.stats`` (seconds
of start-up in every process) and librosa's float64 FFT is 4x slower here than this float32 one;
``benchmarks/features.py`` measures the extraction built on it against the tutorial's librosa loop.
Its products make no BLAS call (:func:`_mel_power`): a clip's features are the same bits in every
thread and under any ``OPENBLAS_NUM_THREADS``.
Changing a result here means bumping :data:`urbansound.features.handmade.STAGE_VERSION` (the
stage) or
:data:`urbansound.features.handmade.RESULT_VERSION` (the rest), so old cache entries stop
matching.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from typing import Any

import numpy as np

from urbansound.config.melscale import mel_frequencies
from urbansound.config.settings import POOLINGS, FeatureSettings

logger = logging.getLogger(__name__)

#: Statistics for each ``features.pooling`` value (:data:`urbansound.config.settings.POOLINGS`), in
#: column-block order.
POOLING_STATS: dict[str, tuple[str, ...]] = {
    "mean": ("mean",),
    "mean_std": ("mean", "std"),
    "stats": ("mean", "std", "min", "max", "median", "skew", "kurtosis"),
    "max": ("max",),
}
assert tuple(POOLING_STATS) == POOLINGS
#: Savitzky-Golay window of the deltas (librosa.feature.delta's default).
DELTA_WIDTH = 9
AMIN = 1e-10  # power floor of the dB conversion (librosa.power_to_db's amin)
_FRAME_BLOCK = 512  # STFT frames computed at once: bounds memory for long files


# --------------------------------------------------------------------------------------------
# The stage: audio -> log-power mel spectrogram


def win_length_of(s: FeatureSettings) -> int:
    """The STFT window length in samples: ``features.win_length``, or ``n_fft`` when unset."""
    return s.win_length if s.win_length is not None else s.n_fft


def fmax_of(s: FeatureSettings) -> float:
    """The highest mel-band frequency in Hz: ``features.fmax``, or Nyquist (``sr / 2``)."""
    return float(s.fmax) if s.fmax is not None else s.sr / 2.0


# The window and mel matrix are librosa's (``librosa.filters.get_window`` + ``pad_center`` and
# ``librosa.filters.mel``, checked equal by the tests) rewritten in numpy: importing
# ``librosa.filters`` imports scipy.signal and scipy.stats, seconds of start-up in every process.


@functools.lru_cache(maxsize=8)
def window_function(window: str, win_length: int, n_fft: int) -> np.ndarray:
    """``get_window(window, win_length, fftbins=True)`` centred in ``n_fft`` zeros, float32."""
    n = win_length
    k = np.arange(n, dtype=np.float64)
    if window == "boxcar" or n == 1:
        w = np.ones(n)
    elif window in ("hann", "hamming", "blackman"):
        # Periodic (fftbins=True): the symmetric window of n + 1 points without its last one.
        coeffs = {"hann": (0.5, 0.5), "hamming": (0.54, 0.46), "blackman": (0.42, 0.5, 0.08)}
        fac = np.linspace(-np.pi, np.pi, n + 1)[:n]
        w = sum(a * np.cos(i * fac) for i, a in enumerate(coeffs[window]))
    elif window == "bartlett":
        w = 1.0 - np.abs(2.0 * k / n - 1.0)
    elif window == "triang":
        m = n + 1
        half = np.arange(1, (m + 1) // 2 + 1)
        if m % 2 == 0:
            w = (2 * half - 1.0) / m
            w = np.r_[w, w[::-1]]
        else:
            w = 2 * half / (m + 1.0)
            w = np.r_[w, w[-2::-1]]
        w = w[:n]
    else:  # the config validator allows only the names above
        raise ValueError(f"unsupported window {window!r}")
    lpad = (n_fft - n) // 2
    return np.pad(w, (lpad, n_fft - n - lpad)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def mel_basis_t(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)`` (Slaney), transposed."""
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    empty = (mel_f[:-2] != 0) & (weights.max(axis=1) == 0)
    if empty.any():
        logger.warning(
            "%d of features.n_mels=%d mel bands are empty at sr=%d, n_fft=%d: lower n_mels or "
            "raise n_fft",
            int(empty.sum()),
            n_mels,
            sr,
            n_fft,
        )
    return np.ascontiguousarray(weights.T)  # (1 + n_fft // 2, n_mels)


def log_mel(y: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """The cached stage of one clip: its log-power mel spectrogram, ``(n_mels, n_frames)`` float32.

    Equal, within float32 rounding, to ``librosa.power_to_db(librosa.feature.melspectrogram(
    y=y, sr=sr, n_fft=..., hop_length=..., win_length=..., window=..., n_mels=..., fmin=...,
    fmax=...), top_db=None)``: a centred, zero-padded STFT with ``1 + len(y) // hop_length``
    frames, so a clip shorter than one frame still has one. The FFT runs in float32 (librosa's in
    float64, 4x slower here): bands within 80 dB of the clip's peak (what the default ``top_db``
    keeps) agree to 1e-3 dB; bands further down carry float32 rounding (up to ~0.2 dB at -130 dB).
    """
    s = settings
    window = window_function(s.window, win_length_of(s), s.n_fft)
    mel_t = mel_basis_t(s.sr, s.n_fft, s.n_mels, float(s.fmin), fmax_of(s))
    return log_mel_frames(y, s.hop_length, window, mel_t)


def log_mel_frames(y: np.ndarray, hop: int, window: np.ndarray, mel_t: np.ndarray) -> np.ndarray:
    """The log-mel spectrogram in dB (before the ``top_db`` floor), ``(n_mels, n_frames)`` float32.

    ``y``: mono samples ``(n,)`` float32; ``hop``: hop length in samples; ``window``: the
    ``(n_fft,)`` window of :func:`window_function`; ``mel_t``: the ``(n_fft // 2 + 1, n_mels)``
    filterbank of :func:`mel_basis_t`. :func:`log_mel` is this with the window and filterbank
    built from the feature settings.
    """
    import scipy.fft

    n_fft = window.shape[0]
    y = np.asarray(y, dtype=np.float32)
    n_frames = 1 + y.shape[0] // hop
    padded = np.zeros(y.shape[0] + n_fft, dtype=np.float32)
    padded[n_fft // 2 : n_fft // 2 + y.shape[0]] = y
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    out = np.empty((mel_t.shape[1], n_frames), dtype=np.float32)
    # Samples far outside [-1, 1] overflow the power: the caller reports that clip, numpy need not.
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, n_frames, _FRAME_BLOCK):
            stop = min(start + _FRAME_BLOCK, n_frames)
            spec = scipy.fft.rfft(frames[start:stop] * window, axis=-1)
            power = np.square(spec.real)
            power += np.square(spec.imag)
            out[:, start:stop] = _mel_power(np.ascontiguousarray(power.T), mel_t)
    np.maximum(out, AMIN, out=out)
    np.log10(out, out=out)
    out *= 10.0
    return out


_SPARSE: dict[int, tuple[np.ndarray, Any]] = {}
_SPARSE_LOCK = threading.Lock()


def _mel_sparse(mel_t: np.ndarray) -> Any:
    """``mel_t.T`` as a ``scipy.sparse.csr_array``, remembered for the last few matrices; the
    entry holds the matrix, so its ``id`` is not reused while it is cached."""
    with _SPARSE_LOCK:  # extraction threads share it
        hit = _SPARSE.get(id(mel_t))
        if hit is not None and hit[0] is mel_t:
            return hit[1]
        import scipy.sparse

        if len(_SPARSE) >= 8:
            _SPARSE.pop(next(iter(_SPARSE)))
        sparse = scipy.sparse.csr_array(np.ascontiguousarray(mel_t.T))
        _SPARSE[id(mel_t)] = (mel_t, sparse)
        return sparse


def _mel_power(power_t: np.ndarray, mel_t: np.ndarray) -> np.ndarray:
    """``mel_t.T @ power_t``: ``(n_mels, n_frames)`` float32 from the ``(n_bins, n_frames)``
    C-contiguous power spectrum.

    Without BLAS: a float32 GEMM's last bits depend on how many threads OpenBLAS splits it over,
    and a limit set with threadpoolctl is not honoured in every thread (a thread's limit after the
    main thread had set and restored one was ignored here), so the same clip gave features 1e-6
    apart in two threads. Each FFT bin lies in at most two Slaney triangles, so the filterbank is
    sparse (about 2 000 of its 131 200 weights are not 0): scipy.sparse's CSR product sums them in
    one fixed order in the calling thread, 10x faster than the dense product (``benchmarks``: the
    features benchmark).
    """
    return np.asarray(_mel_sparse(mel_t) @ power_t, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# On load: top_db, MFCC, deltas, pooling


@functools.lru_cache(maxsize=8)
def _dct_lifter(n_mels: int, n_mfcc: int, lifter: float) -> np.ndarray:
    import scipy.fft

    m = scipy.fft.dct(np.eye(n_mels), type=2, norm="ortho", axis=0)[:n_mfcc]
    if lifter > 0:
        m = m * (1 + (lifter / 2) * np.sin(np.pi * np.arange(1, n_mfcc + 1) / lifter))[:, None]
    return np.ascontiguousarray(m, dtype=np.float32)


def _mfcc(S: np.ndarray, s: FeatureSettings) -> np.ndarray:
    """``_dct_lifter(...) @ S`` as ``librosa.feature.mfcc`` computes it: a DCT-II of each frame
    (``scipy.fft``, no BLAS: the same bits in every thread, see :func:`_mel_power`), then the
    lifter. ``S``: ``(n_mels, n_frames)``; returns ``(n_mfcc, n_frames)`` float32."""
    import scipy.fft

    F = scipy.fft.dct(S, type=2, norm="ortho", axis=0)[: s.n_mfcc]
    if s.lifter > 0:
        n = np.arange(1, s.n_mfcc + 1)
        F *= (1 + (s.lifter / 2) * np.sin(np.pi * n / s.lifter)).astype(np.float32)[:, None]
    return F


@functools.lru_cache(maxsize=16)
def _delta_weights(width: int, order: int) -> np.ndarray:
    """Savitzky-Golay weights of the ``order``-th derivative of a degree-``order`` fit."""
    x = np.arange(width, dtype=np.float64) - width // 2
    return math.factorial(order) * np.linalg.pinv(np.vander(x, order + 1, increasing=True))[order]


def _delta(f: np.ndarray, order: int) -> np.ndarray:
    """``librosa.feature.delta(f, order=order)`` (``scipy.signal.savgol_filter``, mode "interp").

    With the fit's degree equal to the derivative's order, the derivative of each window's fit is
    a constant, so "interp" at the edges repeats the first and last full window's value: a
    weighted sum of shifted views, without importing scipy.signal (seconds per process).
    """
    n = f.shape[1]
    width = min(DELTA_WIDTH, n if n % 2 else n - 1)
    if width < 3:
        return np.zeros_like(f)
    w = _delta_weights(width, order)
    f64 = f.astype(np.float64)
    inner = sum(w[k] * f64[:, k : n - width + 1 + k] for k in range(width))
    half = width // 2
    edges = (np.repeat(inner[:, :1], half, axis=1), np.repeat(inner[:, -1:], half, axis=1))
    return np.concatenate([edges[0], inner, edges[1]], axis=1).astype(np.float32)


def _floor(stage: np.ndarray, top_db: float | None, *, in_place: bool = False) -> np.ndarray:
    if top_db is None:
        return stage
    return np.maximum(stage, stage.max() - np.float32(top_db), out=stage if in_place else None)


def clip_features(
    stage: np.ndarray, settings: FeatureSettings, *, in_place: bool = False
) -> np.ndarray:
    """One clip's feature vector (a row of :attr:`FeatureSet.X`) from its cached stage.

    ``in_place=True`` lets it apply the ``top_db`` floor in ``stage`` itself (one copy less: the
    extraction passes the buffer a cache entry was just read into).
    """
    s = settings
    if s.pooling == "mean" and not s.deltas:
        # The DCT is linear: the DCT of the time average is the time average of the MFCCs
        # (to float32 rounding), one matrix-vector product instead of one per frame.
        S = _floor(stage, s.top_db, in_place=in_place)
        # S.mean(axis=1, dtype=np.float32), the same two ufunc calls without numpy's Python
        # wrapper around them (a fifth of the per-clip work of a sweep over n_mfcc).
        m = np.add.reduce(S, axis=1, dtype=np.float32)
        np.true_divide(m, np.intp(S.shape[1]), out=m, casting="unsafe")
        if s.kind != "mfcc":
            return m
        # (D * m).sum(1), not D @ m: no BLAS, one summation order in every thread (_mel_power).
        return np.add.reduce(_dct_lifter(s.n_mels, s.n_mfcc, float(s.lifter)) * m, axis=1)
    return pool(frame_features(stage, s, in_place=in_place), s.pooling)


def frame_features(
    stage: np.ndarray, settings: FeatureSettings, *, in_place: bool = False
) -> np.ndarray:
    """Per-frame features from a clip's stage: ``(n_rows, n_frames)`` float32.

    MFCC (or log-mel bands) after the ``top_db`` floor, followed by their deltas.
    ``in_place``: as in :func:`clip_features`.
    """
    s = settings
    S = _floor(stage, s.top_db, in_place=in_place)
    F = _mfcc(S, s) if s.kind == "mfcc" else S
    if s.deltas:
        F = np.concatenate([F, *(_delta(F, k) for k in range(1, s.deltas + 1))])
    return np.asarray(F, dtype=np.float32)


def pool(frames: np.ndarray, pooling: str) -> np.ndarray:
    """Reduce ``(n_rows, n_frames)`` over time (or a clip's windows) to one vector, blocks as in
    :data:`POOLING_STATS`: ``(len(stats) * n_rows,)`` float32."""
    stats = POOLING_STATS[pooling]
    if stats == ("mean",):
        return frames.mean(axis=1, dtype=np.float32)
    if stats == ("max",):
        return frames.max(axis=1).astype(np.float32)
    f = frames.astype(np.float64)
    mean = f.mean(axis=1)
    out = {"mean": mean}
    dev = f - mean[:, None]
    m2 = np.mean(dev * dev, axis=1)
    out["std"] = np.sqrt(m2)
    if "min" in stats:
        out["min"] = f.min(axis=1)
        out["max"] = f.max(axis=1)
        out["median"] = np.median(f, axis=1)
        # scipy.stats.skew/kurtosis call a row constant below this spread and return NaN there.
        constant = m2 <= (np.finfo(np.float64).resolution * mean) ** 2
        safe = np.where(constant, 1.0, m2)
        out["skew"] = np.where(constant, 0.0, np.mean(dev**3, axis=1) / safe**1.5)
        out["kurtosis"] = np.where(constant, 0.0, np.mean(dev**4, axis=1) / safe**2 - 3.0)
    return np.concatenate([out[k] for k in stats]).astype(np.float32)
