"""Clip features from a frozen network (``features=birdnet``, ``features=onnx``): window
embeddings, cached per clip, pooled over each clip's windows.

What is computed (every name is a ``features.*`` config key)
-----------------------------------------------------------
1. **Stage** (expensive, cached per clip): :func:`~urbansound.features.audio.load_audio` at the
   network's rate (librosa-equal), cut into its windows every ``embedding.hop`` seconds
   (:func:`~urbansound.features.embeddings.model.frame_windows`: ``1 + ceil(max(n - W, 0) / hop)``
   windows, the last and any clip shorter than a window zero-padded), each window embedded:
   ``(n_windows, dim)`` float32.
2. **On load** (cheap, never run through the network again): ``pooling`` over the windows --
   ``mean``, ``max``, ``mean_std`` or ``stats``, the statistics of
   :func:`urbansound.features.dsp.pool`, one block of ``dim`` columns each -- then, with
   ``embedding.concat_mfcc: n``, the tutorial's features appended: the time mean of ``n`` MFCCs
   (:mod:`urbansound.features.handmade` with its defaults, cached there).

The cache (``features.cache_dir``; :mod:`urbansound.features.cache` holds the format)
--------------------------------------------------------------------------------------
- ``embeddings/``: one entry per clip, keyed by :func:`embedding_spec` (the network's identity:
  file SHA-256, layer, runtime and version; the rate, window and hop in samples; the decoding
  libraries' versions) and the clip's identity. Entries are written as each clip's last window is
  embedded, atomically: Ctrl-C or kill -9 loses only the clips in flight, and the same command
  goes on from there. A sweep over ``pooling``, ``concat_mfcc`` or the classifier reads them and
  never opens the network (the tests count its calls).
- ``features/``: the pooled matrix of one call (every clip's identity plus the pooling), as for
  the hand-made kinds.

How
---
Clips whose entry is cached are read in the calling thread. The others go to ``features.n_jobs``
worker threads; each has its own runtime session (a LiteRT interpreter, an onnxruntime session:
both release the GIL while they compute), decodes its next clips and gathers their windows into
batches of ``embedding.batch_size`` across clip boundaries, so the network always sees full
batches. Threads rather than processes: both runtimes run in parallel in threads (they release
the GIL in ``invoke``/``run``: a pure-Python thread keeps counting while they compute), the
decoded windows need no copy between processes, and a process would pay its own start-up and
model load. ``benchmarks/embeddings.py`` measured, on two busy cores: the cold extraction at 0.96
-0.97 of the bare network's windows per second (threads, batch and interpreter options alike),
93-95% of the workers' time inside the network; two processes at 1.05-1.18 of two threads on the
bare network with their start-up left out (within that machine's drift). Progress: a bar on a
terminal, or plain lines in a log with the estimated time left.

Bad clips: a clip that cannot be decoded, or whose embeddings are not finite, is an
:class:`~urbansound.errors.AudioError` naming the file, or with ``features.on_error=skip`` a row
left out and listed, as for the hand-made kinds.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from urbansound.config.settings import EmbeddingFeatureSettings
from urbansound.errors import AudioError
from urbansound.features.cache import (
    ClipItem,
    CorruptEntry,
    cache_root,
    check_writable,
    clip_items,
    clip_key,
    digest,
    matrix_key,
    read_entry,
    read_matrix,
    remove_stale_tmp,
    stage_path,
)
from urbansound.features.dsp import POOLING_STATS
from urbansound.features.embeddings.model import EmbeddingModel
from urbansound.features.embeddings.stage import (
    FOLDER,
    RESULT_VERSION,
    embedding_spec,
    feature_model,
    hop_samples,
    mfcc_settings,
    open_model,
    pool_windows,
)
from urbansound.features.embeddings.workers import EmbeddingJob, embed_clips
from urbansound.features.featureset import FeatureSet, gather_rows
from urbansound.features.handmade import extract_handmade
from urbansound.utils.progress import progress_bar

logger = logging.getLogger(__name__)


def extract_embeddings(
    paths: Sequence[str | Path],
    settings: EmbeddingFeatureSettings,
    *,
    progress: bool = True,
    model: EmbeddingModel | None = None,
) -> FeatureSet:
    """Pooled window embeddings of each clip in ``paths`` (module docstring).

    Parameters
    ----------
    paths:
        Audio files, one row each in the result (in this order).
    settings:
        The ``features`` config group of an embedding kind.
    progress:
        Report progress on stderr (a bar on a terminal, lines with the time left otherwise).
    model:
        The network (default: :func:`open_model` of ``settings``).

    Returns
    -------
    FeatureSet
        ``X`` is ``(n_ok, len(embedding_names(settings)))`` float32, every value finite;
        ``feature_model`` is the network's identity and licence.

    Raises
    ------
    AudioError
        A clip cannot be decoded or gives non-finite embeddings, and ``settings.on_error`` is
        ``"error"``; the message names the file. Worker threads have stopped before it
        propagates (as for Ctrl-C); every clip finished before is cached.
    OutputError
        The cache cannot be written (the message names the path and ``features.cache_dir``).
    ConfigError
        The network cannot be used (see :func:`open_model`).
    """
    t0 = time.perf_counter()
    n = len(paths)
    model = open_model(settings) if model is None else model
    width = len(POOLING_STATS[settings.pooling]) * model.dim
    root = cache_root(settings.cache_dir)
    items, errors = clip_items(paths)
    if errors and settings.on_error == "error":
        raise AudioError(errors[min(errors)])
    spec = embedding_spec(model, settings)
    ident = feature_model(model, settings)

    result_key = None
    if not errors and n:
        result_key = matrix_key(
            {"result": RESULT_VERSION, "spec": spec, "pooling": settings.pooling}, items
        )
        hit = read_matrix(root, result_key, rows=n, cols=width)
        if hit is not None:
            pooled = FeatureSet(X=hit, ok=np.ones(n, dtype=bool), n_cached=n, feature_model=ident)
            return _with_mfcc(pooled, paths, settings, progress=progress, t0=t0)

    check_writable(root / "tmp", settings.cache_dir)
    remove_stale_tmp(root)
    job = EmbeddingJob(
        model=model,
        settings=settings,
        root=str(root),
        prefix=digest(spec),
        hop=hop_samples(model, settings),
        todo=queue.SimpleQueue(),
        results=queue.SimpleQueue(),
    )
    rows: list[np.ndarray | None] = [None] * n
    bar = progress_bar(total=n, unit="clip", desc="embeddings", mode=None if progress else "none")
    bar.update(len(errors))
    n_cached = 0

    def take(index: int, row: np.ndarray | None, status: str) -> None:
        if row is None:
            if settings.on_error == "error":
                raise AudioError(status)
            errors[index] = status
        else:
            rows[index] = row

    todo: list[ClipItem] = []
    try:
        for item in items:  # cached clips: read here, in order (no thread is worth starting)
            got = _cached(item, job)
            if got is None:
                todo.append(item)
                continue
            take(item[0], got, "cached")
            n_cached += 1
            bar.update(1)
        if todo:
            embed_clips(todo, job, take, bar)
    finally:
        bar.close()

    X, ok, skipped = gather_rows(
        rows,
        errors,
        paths,
        width,
        root=str(root),
        result_key=result_key,
        cache_dir=settings.cache_dir,
        blocked=job.blocked,
        log=logger,
    )
    pooled = FeatureSet(
        X=X,
        ok=ok,
        skipped=skipped,
        n_computed=len(todo) - sum(1 for i, *_ in todo if i in errors),
        n_cached=n_cached,
        feature_model=ident,
    )
    return _with_mfcc(pooled, paths, settings, progress=progress, t0=t0)


def _cached(item: ClipItem, job: EmbeddingJob) -> np.ndarray | None:
    """The pooled row of a clip whose window embeddings are cached (and finite), else None."""
    _, path, size, mtime_ns = item
    key = clip_key(job.prefix, (path, size, mtime_ns))
    entry = stage_path(job.root, key, FOLDER)
    try:
        embeddings = read_entry(entry, key, cols=job.model.dim)
    except CorruptEntry as exc:
        logger.warning("recomputing corrupt feature cache entry %s: %s", entry, exc)
        return None
    if embeddings is None:
        return None
    if not np.isfinite(embeddings).all():
        logger.warning("recomputing feature cache entry %s: it holds non-finite values", entry)
        return None
    return pool_windows(embeddings, job.settings.pooling)


def _with_mfcc(
    pooled: FeatureSet,
    paths: Sequence[str | Path],
    settings: EmbeddingFeatureSettings,
    *,
    progress: bool,
    t0: float,
) -> FeatureSet:
    """``pooled`` with the tutorial's MFCC means appended (``embedding.concat_mfcc``); rows only
    for clips both have."""
    if not settings.embedding.concat_mfcc:
        pooled.seconds = time.perf_counter() - t0
        return pooled
    mfcc = extract_handmade(paths, mfcc_settings(settings), progress=progress)
    ok = pooled.ok & mfcc.ok
    X = np.hstack([pooled.X[ok[pooled.ok]], mfcc.X[ok[mfcc.ok]]]).astype(np.float32, copy=False)
    order = {os.fspath(p): i for i, p in enumerate(paths)}
    skipped = {s["path"]: s for s in [*pooled.skipped, *mfcc.skipped]}
    return FeatureSet(
        X=X,
        ok=ok,
        skipped=sorted(skipped.values(), key=lambda s: order.get(s["path"], len(order))),
        n_computed=pooled.n_computed,
        n_cached=pooled.n_cached,
        seconds=time.perf_counter() - t0,
        feature_model=pooled.feature_model,
    )
