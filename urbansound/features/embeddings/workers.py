"""The cold part of an embedding extraction: worker threads that decode clips, embed their
windows in full batches and cache each clip as it finishes.

Each worker has its own runtime session (:meth:`~urbansound.features.embeddings.model.
EmbeddingModel.embed` keeps one per thread; LiteRT and onnxruntime release the GIL while they
compute), takes the next clip from a shared queue, and gathers the windows of the clips it holds
into batches of ``embedding.batch_size`` across clip boundaries. A clip's entry is written (and
its pooled row handed back) when its last window is embedded, so an interrupted extraction loses
only the clips in flight.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from urbansound.config.settings import EmbeddingFeatureSettings
from urbansound.errors import AudioError
from urbansound.features.audio import audio_error, load_audio
from urbansound.features.cache import ClipItem, clip_key, stage_path, store
from urbansound.features.embeddings.model import EmbeddingModel, frame_windows, n_windows
from urbansound.features.embeddings.stage import FOLDER, pool_windows
from urbansound.utils.progress import LineProgress

logger = logging.getLogger(__name__)


@dataclass
class _Clip:
    """A decoded clip whose windows are being embedded."""

    index: int
    path: str
    key: bytes
    y: np.ndarray
    embeddings: np.ndarray  # (n_windows, dim), filled as batches come back
    taken: int = 0  # windows put into a batch so far


@dataclass
class EmbeddingJob:
    """What every worker shares for one extraction."""

    model: EmbeddingModel
    settings: EmbeddingFeatureSettings
    root: str
    prefix: bytes
    hop: int
    todo: queue.SimpleQueue  # ClipItem, then one None per worker
    results: queue.SimpleQueue  # (index, row | None, status) or an exception
    stop: threading.Event = field(default_factory=threading.Event)
    blocked: list[str] = field(default_factory=list)


def _decode(item: ClipItem, job: EmbeddingJob) -> _Clip | tuple:
    """A clip ready to embed, or its result ``(index, None, message)`` when it cannot be read."""
    index, path, size, mtime_ns = item
    model = job.model
    try:
        y = load_audio(path, sr=model.sample_rate)
    except AudioError as exc:
        return index, None, str(exc)
    count = n_windows(y.shape[0], window=model.window_samples, hop=job.hop)
    key = clip_key(job.prefix, (path, size, mtime_ns))
    return _Clip(index, path, key, y, np.empty((count, model.dim), dtype=np.float32))


def _finish(clip: _Clip, job: EmbeddingJob) -> tuple:
    """Cache a clip's embeddings and pool them: ``(index, row | None, status)``."""
    if not np.isfinite(clip.embeddings).all():
        reason = f"its {job.model.identity.name} embeddings are not finite"
        return clip.index, None, str(audio_error(clip.path, reason))
    path = stage_path(job.root, clip.key, FOLDER)
    store(
        path,
        clip.key,
        clip.embeddings,
        root=job.root,
        cache_dir=job.settings.cache_dir,
        blocked=job.blocked,
    )
    return clip.index, pool_windows(clip.embeddings, job.settings.pooling), "computed"


def _embed_some(open_clips: deque[_Clip], count: int, job: EmbeddingJob) -> None:
    """Embed the next ``count`` windows of the open clips in one batch; finished clips leave
    ``open_clips`` and their results go to ``job.results``."""
    model, parts, owners = job.model, [], []
    left = count
    for clip in open_clips:
        if not left:
            break
        take = min(left, clip.embeddings.shape[0] - clip.taken)
        parts.append(
            frame_windows(
                clip.y, window=model.window_samples, hop=job.hop, first=clip.taken, count=take
            )
        )
        owners.append((clip, clip.taken, take))
        clip.taken += take
        left -= take
    out = model.embed(np.concatenate(parts) if len(parts) > 1 else parts[0])
    at = 0
    for clip, first, take in owners:
        clip.embeddings[first : first + take] = out[at : at + take]
        at += take
    while open_clips and open_clips[0].taken == open_clips[0].embeddings.shape[0]:
        job.results.put(_finish(open_clips.popleft(), job))


def _work(job: EmbeddingJob) -> None:
    """One worker: decode clips, embed their windows in full batches, report each clip."""
    batch = job.model.batch_size
    open_clips: deque[_Clip] = deque()
    pending = 0  # windows decoded and not yet embedded
    try:
        while not job.stop.is_set():
            item = job.todo.get()
            if item is not None:
                clip = _decode(item, job)
                if isinstance(clip, tuple):
                    job.results.put(clip)
                else:
                    open_clips.append(clip)
                    pending += clip.embeddings.shape[0]
            while pending >= batch or (item is None and pending):
                if job.stop.is_set():
                    return
                count = min(batch, pending)
                _embed_some(open_clips, count, job)
                pending -= count
            if item is None:
                return
    except BaseException as exc:  # handed to the calling thread, which raises it
        job.results.put(exc)


def _eta(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def embed_clips(
    todo: list[ClipItem],
    job: EmbeddingJob,
    take: Callable[[int, np.ndarray | None, str], None],
    bar: Any,
) -> None:
    """Embed the clips of ``todo`` in worker threads, handing each result to ``take``."""
    from concurrent.futures import ThreadPoolExecutor

    from joblib import cpu_count

    n_jobs = job.settings.n_jobs
    workers = max(1, min(cpu_count() if n_jobs < 0 else n_jobs, len(todo)))
    for item in todo:
        job.todo.put(item)
    for _ in range(workers):
        job.todo.put(None)
    logger.info(
        "embedding %d clips with %s (%s %s; licence: %s) in %d thread(s), %d windows per "
        "batch; each clip is cached as it finishes, so an interrupted extraction goes on "
        "where it stopped",
        len(todo),
        job.model.identity.name,
        job.model.identity.runtime,
        job.model.identity.runtime_version,
        job.model.identity.licence,
        workers,
        job.model.batch_size,
    )
    start = time.monotonic()
    # Leaving the executor joins the workers: an error, or Ctrl-C, sets ``stop`` first, and each
    # worker returns after its batch in flight (a fraction of a second), never leaving a thread
    # running while the process exits.
    with ThreadPoolExecutor(workers, thread_name_prefix="embeddings") as pool:
        for _ in range(workers):
            pool.submit(_work, job)
        try:
            for done in range(1, len(todo) + 1):
                got = job.results.get()
                if isinstance(got, BaseException):
                    raise got
                take(*got)
                bar.update(1)
                if isinstance(bar, LineProgress):
                    left = (time.monotonic() - start) / done * (len(todo) - done)
                    bar.set_postfix(left=_eta(left))
        finally:
            job.stop.set()
