"""Clip features: log-mel spectrogram, MFCC, deltas and pooling, with a staged on-disk cache.

The signal processing itself (window, mel matrix, STFT, DCT, deltas, pooling) is
:mod:`urbansound.features.dsp`; this module names the features, keys the cache and runs the
extraction.

What is computed (every name is a ``features.*`` config key)
----------------------------------------------------------
1. **Stage** (expensive, cached per clip): :func:`~urbansound.features.audio.load_audio` at ``sr``,
   a centred STFT (``n_fft``, ``hop_length``, ``win_length``, ``window``, zero padding), the power
   spectrum, ``n_mels`` Slaney mel bands between ``fmin`` and ``fmax``, ``10*log10(max(1e-10, .))``:
   ``librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, ...), top_db=None)``.
2. **On load** (cheap, never cached per clip): the ``top_db`` floor (``max(S, S.max() - top_db)``,
   as ``power_to_db`` does), then for ``kind=mfcc`` the first ``n_mfcc`` rows of the orthonormal
   DCT-II and the ``lifter``; ``kind=logmel`` keeps the bands. ``deltas`` = 1 or 2 appends
   ``librosa.feature.delta(F, order=k)`` for k = 1..deltas (Savitzky-Golay, width 9; a clip with
   fewer than 9 frames uses the largest odd width that fits, and one with fewer than 3 frames gets
   zero deltas). Every step equals ``librosa.feature.mfcc(y=librosa.load(path, sr=sr)[0], ...)``
   within float32 rounding; the tests check it.
3. **Pooling** over time, one block of columns per statistic, each block one column per row
   (coefficient, then its deltas) -- see :data:`urbansound.features.dsp.POOLING_STATS`:

   - ``mean``: the time average, the tutorial's ``np.mean(mfcc.T, axis=0)``.
   - ``mean_std``: mean, then standard deviation (population, ddof=0).
   - ``stats``: mean, std, min, max, median, skewness (Fisher-Pearson, biased, as
     ``scipy.stats.skew``) and excess kurtosis (Fisher, biased, as ``scipy.stats.kurtosis``).
     A row that is constant over time (a silent clip, a one-frame clip) has skewness and kurtosis
     0 where scipy gives NaN, so features are always finite.

The cache (``features.cache_dir``; :mod:`urbansound.features.cache` holds its layout, entry
format and failure policy)
-----------------------------------------------------------------------------------------------
- ``logmel/``: one entry per clip's stage, keyed by the stage parameters (``sr``, ``n_fft``,
  ``hop_length``, ``win_length``, ``window``, ``n_mels``, ``fmin``, ``fmax``; :func:`_stage_spec`),
  the library versions, this module's stage version and the clip's path, size and mtime.
  ``top_db``, ``kind``, ``n_mfcc``, ``lifter``, ``deltas`` and ``pooling`` are not in the key: a
  sweep over them never decodes audio again.
- ``features/``: the whole feature matrix of one call (every clip's identity and every feature
  setting, :func:`_result_spec`), written when no clip was skipped.
- A cache that cannot be written stops the extraction with one
  :class:`~urbansound.errors.OutputError` line naming the path and ``features.cache_dir``; one
  entry's own path blocked is a warning, once per extraction.

Bad clips: a clip that cannot be decoded, holds a non-finite sample (``librosa.load`` refuses
those too) or gives non-finite features (float samples so large that the power spectrum
overflows) is an :class:`~urbansound.errors.AudioError` naming the file, or with
``features.on_error=skip`` a row left out and listed in :attr:`FeatureSet.skipped`: every value
of :attr:`FeatureSet.X` is finite. A cache entry holding non-finite values (written before this
check) is recomputed from the audio.

Clips whose stage is cached are read back in the calling thread, in order (a sweep over
``n_mfcc``, ``deltas`` or ``pooling`` is GIL-bound Python that threads only take turns at); from
the first clip whose stage must be computed on, clips are processed in chunks by
``concurrent.futures`` threads (``features.n_jobs`` of them), each chunk reading or computing its
clips' stage; only the pooled rows are kept, so memory holds one clip's audio per thread, never
the dataset. Threads, not processes: decoding (libsndfile), resampling (soxr), the FFT and BLAS
release the GIL, so two threads keep two cores busy from the first clip, while worker processes
cost start-up (imports), result transfer and a core shared with the idle parent -- 1000 demo
clips on 2 cores took 1.86 s in 2 threads against 2.6-2.9 s in 2 worker processes. (A
``ThreadPoolExecutor`` rather than ``joblib.Parallel``: leaving its ``with`` block cancels the
chunks not started and joins the threads, so an error never leaves a thread running while the
process exits; joblib's thread pool could not be joined, and the interpreter then aborted
with "terminate called without an active exception", exit 134.)

Speed: the stage is numpy + ``scipy.fft`` on one clip at a time (a float32 real FFT of the framed,
windowed clip and one mel matrix product), with librosa's window, mel matrix and delta filter
rewritten in numpy (:mod:`urbansound.features.dsp`) so that no process imports ``librosa.filters`` /
``scipy.signal`` (seconds of start-up each). Batching many clips into one STFT (``torch.stft``,
or one FFT call) measured no faster: one 4 s clip's frames (173 x 2048) already fill the FFT and
BLAS kernels.
``benchmarks/features.py`` compares it with the tutorial's loop.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from urbansound.config.settings import FeatureSettings
from urbansound.errors import AudioError, ConfigError
from urbansound.features.audio import HINT, audio_error, load_audio
from urbansound.features.cache import (
    CorruptEntry,
    check_writable,
    clip_key,
    digest,
    library_versions,
    read_entry,
    remove_stale_tmp,
    stage_path,
    store,
)
from urbansound.features.dsp import (
    AMIN,
    POOLING_STATS,
    clip_features,
    fmax_of,
    log_mel_frames,
    mel_basis_t,
    win_length_of,
    window_function,
)
from urbansound.utils.progress import progress_bar

logger = logging.getLogger(__name__)

# Bump when the stage computation (urbansound.features.dsp) or the entry format changes: old entries
# stop matching (2: the fixed 64-byte header below instead of a JSON one; 3: the mel product
# without BLAS, its last bits changed).
STAGE_VERSION = 3
RESULT_VERSION = 2  # bump when the on-load computation (top_db, DCT, deltas, pooling) changes
# (2: the DCT without BLAS)
_CHUNK = 16  # clips per task at most
# Fewer clips than this per thread run in the calling thread alone (threads start in
# microseconds, but a handful of clips gains nothing from them).
_MIN_CLIPS_PER_WORKER = 8


@dataclass
class FeatureSet:
    """Features of a list of clips, with what the extraction did.

    Attributes
    ----------
    X:
        ``(n_ok, n_features)`` float32, rows in input order (see :func:`feature_names`).
    ok:
        ``(n_paths,)`` bool: which input paths have a row in ``X``.
    skipped:
        ``[{"path": str, "error": str}]`` for clips left out (``features.on_error=skip``).
    n_computed, n_cached:
        Clips whose stage was computed now / read from the cache.
    seconds:
        Wall time of the extraction.
    """

    X: np.ndarray
    ok: np.ndarray
    skipped: list[dict] = field(default_factory=list)
    n_computed: int = 0
    n_cached: int = 0
    seconds: float = 0.0


# --------------------------------------------------------------------------------------------
# Names


def _row_names(settings: FeatureSettings) -> list[str]:
    if settings.kind == "mfcc":
        base = [f"mfcc{i}" for i in range(settings.n_mfcc)]
    else:
        base = [f"mel{i}" for i in range(settings.n_mels)]
    rows = list(base)
    for order in range(1, settings.deltas + 1):
        rows += [f"d{order}_{b}" for b in base]
    return rows


def feature_names(settings: FeatureSettings) -> list[str]:
    """Names of the columns of :attr:`FeatureSet.X`, e.g. ``mean_mfcc0`` or ``std_d1_mel5``."""
    rows = _row_names(settings)
    return [f"{stat}_{row}" for stat in POOLING_STATS[settings.pooling] for row in rows]


# --------------------------------------------------------------------------------------------
# What a cache entry depends on (the keys and entries themselves: urbansound.features.cache)


def _stage_spec(s: FeatureSettings) -> dict:
    return {
        "stage": STAGE_VERSION,
        "sr": s.sr,
        "n_fft": s.n_fft,
        "hop_length": s.hop_length,
        "win_length": win_length_of(s),
        "window": s.window,
        "n_mels": s.n_mels,
        "fmin": float(s.fmin),
        "fmax": fmax_of(s),
        "amin": AMIN,
        "versions": library_versions(),
    }


def _result_spec(s: FeatureSettings) -> dict:
    return {
        "result": RESULT_VERSION,
        "stage": _stage_spec(s),
        "kind": s.kind,
        "top_db": s.top_db,
        "n_mfcc": s.n_mfcc if s.kind == "mfcc" else None,
        "lifter": float(s.lifter) if s.kind == "mfcc" else None,
        "deltas": s.deltas,
        "pooling": s.pooling,
    }


@dataclass(frozen=True)
class _Job:
    """What a task needs besides its clips; built once per extraction (the window and mel matrix
    in numpy: nothing imports librosa, seconds of start-up)."""

    settings: FeatureSettings
    root: str
    prefix: bytes  # digest of the stage parameters and library versions
    window: np.ndarray
    mel_t: np.ndarray
    blocked: list[str] = field(default_factory=list, compare=False)  # entries not cached


def _process_chunk(items: list[tuple[int, str, int, int]], job: _Job) -> list[tuple]:
    """Read or compute the stage of each clip and pool it: ``(index, row | None, status)``.

    ``status`` is ``"cached"``, ``"computed"`` or, for a clip that cannot be decoded, the
    :class:`AudioError` message (row None).
    """
    return [_process_clip(item, job) for item in items]


def _process_clip(item: tuple[int, str, int, int], job: _Job) -> tuple:
    """Read or compute one clip's stage, then pool it (see :func:`_process_chunk`)."""
    index, path, size, mtime_ns = item
    s = job.settings
    key = clip_key(job.prefix, (path, size, mtime_ns))
    entry_path = stage_path(job.root, key)
    stage = None
    try:
        stage = read_entry(entry_path, key, rows=s.n_mels)
    except CorruptEntry as exc:
        logger.warning("recomputing corrupt feature cache entry %s: %s", entry_path, exc)
    if stage is not None:
        row = clip_features(stage, s, in_place=True)
        if _finite(row):
            return index, row, "cached"
        # Written before non-finite audio was refused (or by hand): the audio decides.
        logger.warning("recomputing feature cache entry %s: it holds non-finite values", entry_path)
    try:
        y = load_audio(path, sr=s.sr)
    except AudioError as exc:
        return index, None, str(exc)
    stage = log_mel_frames(y, s.hop_length, job.window, job.mel_t)
    if not np.isfinite(stage).all():
        peak = float(np.abs(y).max())
        reason = (
            f"its mel spectrogram is not finite though its samples are (peak |sample| {peak:.3g}: "
            "float samples this far outside [-1, 1] overflow the float32 power spectrum)"
        )
        return index, None, str(audio_error(path, reason))
    store(entry_path, key, stage, root=job.root, cache_dir=s.cache_dir, blocked=job.blocked)
    row = clip_features(stage, s, in_place=True)
    if not _finite(row):
        reason = "its features are not finite with these features.* settings"
        return index, None, str(audio_error(path, reason))
    return index, row, "computed"


def _finite(row: np.ndarray) -> bool:
    """Whether every value of ``row`` is finite: NaN and infinities survive a float64 sum, which
    costs a fraction of ``np.isfinite(row).all()`` on the per-clip hot path."""
    return math.isfinite(np.add.reduce(row, axis=None, dtype=np.float64))


def _chunks(
    items: list[tuple[int, str, int, int]], size: int
) -> Iterator[list[tuple[int, str, int, int]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _n_workers(n_jobs: int) -> int:
    from joblib import cpu_count

    return cpu_count() if n_jobs < 0 else n_jobs


def extract_features(
    paths: Sequence[str | Path], settings: FeatureSettings, *, progress: bool = True
) -> FeatureSet:
    """Features of each clip in ``paths`` (module docstring: what, and how it is cached).

    Parameters
    ----------
    paths:
        Audio files, one row each in the result (in this order).
    settings:
        The ``features`` config group.
    progress:
        Report progress on stderr (:func:`urbansound.utils.progress.progress_bar`: a bar on a
        terminal, periodic lines otherwise, as the ``progress`` setting says); False: nothing.

    Returns
    -------
    FeatureSet
        Every value of ``X`` is finite.

    Raises
    ------
    AudioError
        A clip cannot be decoded, holds a non-finite sample or gives non-finite features, and
        ``settings.on_error`` is ``"error"``. The message names the file. Worker threads have
        finished (work not yet started is cancelled) before it propagates.
    OutputError
        The cache cannot be written: ``cache_dir`` (or a folder above it) is a file, read-only,
        not writable, or the disk is full. One entry's own path blocked (a directory where the
        entry should be) is not an error: a warning, once, and that entry is not cached.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    t0 = time.perf_counter()
    n = len(paths)
    width = len(feature_names(settings))
    if not str(settings.cache_dir).strip():
        # Path("") is the working directory: logmel/, features/ and tmp/ would be spread there.
        raise ConfigError(
            f"features.cache_dir={settings.cache_dir!r} is empty; give the feature cache a folder "
            "of its own (default outputs/cache/features)"
        )
    root = Path(settings.cache_dir).expanduser().absolute()
    errors: dict[int, str] = {}
    items: list[tuple[int, str, int, int]] = []
    for i, p in enumerate(paths):
        path = os.path.abspath(os.fspath(p))
        try:
            st = os.stat(path)
        except FileNotFoundError:
            errors[i] = str(audio_error(path, "no such file"))
            continue
        except OSError as exc:
            errors[i] = str(audio_error(path, exc.strerror or str(exc)))
            continue
        if not stat.S_ISREG(st.st_mode):
            errors[i] = str(audio_error(path, "not a regular file"))
            continue
        items.append((i, path, st.st_size, st.st_mtime_ns))
    if errors and settings.on_error == "error":
        raise AudioError(errors[min(errors)])

    result_key = None
    if not errors and n:
        h = hashlib.sha256(digest(_result_spec(settings)))
        for _, path, size, mtime_ns in items:
            h.update(f"\0{path}\0{size}\0{mtime_ns}".encode())
        result_key = h.digest()
        result_path = root / "features" / f"{result_key.hex()}.bin"
        try:
            hit = read_entry(result_path, result_key, rows=n, cols=width)
        except CorruptEntry as exc:
            logger.warning("ignoring corrupt feature cache entry %s: %s", result_path, exc)
            hit = None
        if hit is not None and not np.isfinite(hit).all():
            logger.warning(
                "ignoring feature cache entry %s: it holds non-finite values", result_path
            )
            hit = None
        if hit is not None:
            return FeatureSet(
                X=hit,
                ok=np.ones(n, dtype=bool),
                n_cached=n,
                seconds=time.perf_counter() - t0,
            )

    check_writable(root / "tmp", settings.cache_dir)
    remove_stale_tmp(root)
    job = _Job(
        settings=settings,
        root=str(root),
        prefix=digest(_stage_spec(settings)),
        window=window_function(settings.window, win_length_of(settings), settings.n_fft),
        mel_t=mel_basis_t(
            settings.sr, settings.n_fft, settings.n_mels, float(settings.fmin), fmax_of(settings)
        ),
    )
    rows: list[np.ndarray | None] = [None] * n
    n_computed = n_cached = 0
    bar = progress_bar(total=n, unit="clip", desc="features", mode=None if progress else "none")
    bar.update(len(errors))

    def take(done: list[tuple]) -> None:
        nonlocal n_computed, n_cached
        for index, row, status in done:
            if row is None:
                if settings.on_error == "error":
                    raise AudioError(status)
                errors[index] = status
            else:
                rows[index] = row
                n_computed += status == "computed"
                n_cached += status == "cached"
        bar.update(len(done))

    # No BLAS thread limit: the DSP makes no BLAS call (dsp._mel_power says why), so its bits do
    # not depend on the thread that runs it or on how many threads OpenBLAS may use.
    try:
        # Clips are taken in this thread, in order, until the first whose stage was not in the
        # cache; the rest go to the threads. Reading an entry back is mostly Python holding the
        # GIL (open, checksum, a few small numpy calls), which threads only take turns at (1000
        # cached demo clips: 0.11 s here, 0.13 s in 2 threads), while computing a stage releases
        # it. A sweep over the on-load settings never starts a thread; a cold extraction computes
        # one clip here first.
        served = 0
        for item in items:
            done = [_process_clip(item, job)]
            take(done)
            served += 1
            if done[0][2] != "cached":
                break
        rest = items[served:]
        workers = max(1, min(_n_workers(settings.n_jobs), len(rest) // _MIN_CLIPS_PER_WORKER))
        chunk = max(1, min(_CHUNK, math.ceil(len(rest) / (8 * workers))))
        if workers == 1:
            for c in _chunks(rest, chunk):
                take(_process_chunk(c, job))
        elif rest:
            # The executor's exit joins its threads: an error (a bad clip, a full disk, Ctrl-C)
            # cancels the chunks not started and waits for the running ones (a few clips each)
            # before it propagates, so the process never exits under a running thread (which
            # aborted it: "terminate called without an active exception", exit 134).
            with ThreadPoolExecutor(workers, thread_name_prefix="features") as pool:
                pending = {pool.submit(_process_chunk, c, job) for c in _chunks(rest, chunk)}
                try:
                    while pending:
                        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in finished:
                            take(future.result())
                finally:
                    for future in pending:
                        future.cancel()
    finally:
        bar.close()

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
        logger.warning("features.on_error=skip: left out %s", s["error"])
    if result_key is not None and not skipped:
        store(
            str(root / "features" / f"{result_key.hex()}.bin"),
            result_key,
            X,
            root=str(root),
            cache_dir=settings.cache_dir,
            blocked=job.blocked,
        )
    if len(job.blocked) > 1:
        logger.warning(
            "%d feature cache entries could not be written (the first: %s)",
            len(job.blocked),
            job.blocked[0],
        )
    return FeatureSet(
        X=X,
        ok=ok,
        skipped=skipped,
        n_computed=n_computed,
        n_cached=n_cached,
        seconds=time.perf_counter() - t0,
    )
