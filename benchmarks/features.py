"""Feature extraction speed against the tutorial's loop, measured in the same process.

Usage::

    python benchmarks/features.py [ROOT] [--baseline-clips N] [--limit N] [--jobs N]

ROOT is an UrbanSound8K-layout folder (``metadata/UrbanSound8K.csv`` + ``audio/fold*``); without
it, the built-in demo corpus (generated into ``outputs/demo`` on first use). Prints:

- per-clip cold time of the tutorial's loop (``librosa.load(path, res_type="kaiser_fast")``, then
  ``np.mean(librosa.feature.mfcc(y=y, sr=sr, n_mfcc=40).T, axis=0)``, one clip after another) on
  an even sample of ``--baseline-clips`` clips, and of
  :func:`urbansound.features.extraction.extract_features` on every clip with an empty cache (worker
  start-up included), and their ratio; the tutorial again with BLAS held to one thread, for
  reference (its default threads spin on a busy machine);
- n_mfcc = 20, 40, 60 extracted one after another into one cache (a grid sweep), relative to the
  first of them (the cold one);
- a fully cached load (same settings again) and a load from the stage cache (new pooling),
  relative to cold;
- peak resident memory of the extraction (parent + workers) next to the size of the dataset's
  decoded audio;
- writing one cache entry (one clip's default log-mel, 88 KB) with the feature cache's own writer
  against :func:`urbansound.utils.files.atomic_write`, the package's writer for every other file.
  The cache keeps its own writer because of this line: ``atomic_write`` fsyncs each file (right for
  ``results.json``), which costs milliseconds per entry, thousands of times per cold extraction, for
  entries that need no fsync (each is checksummed; a torn one is recomputed). Both write to a
  temporary file and rename it into place; both report failures as ``OutputError``.

Both sides read files from the page cache: every file is read once before timing. The tutorial's
``kaiser_fast`` needs resampy; where it is absent the baseline uses librosa's default resampler
(soxr) and says so. Timings on a busy machine are noisy: compare ratios taken in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from urbansound.config.settings import DataSettings, FeatureSettings
from urbansound.features.extraction import extract_features


def _tutorial(paths: list[str], res_type: str) -> float:
    """Seconds per clip of the tutorial's extraction loop."""
    import librosa

    y, sr = librosa.load(paths[0], res_type=res_type)  # imports and JIT outside the timing
    np.mean(librosa.feature.mfcc(y=y, sr=sr, n_mfcc=40).T, axis=0)
    t0 = time.perf_counter()
    for path in paths:
        y, sr = librosa.load(path, res_type=res_type)
        np.mean(librosa.feature.mfcc(y=y, sr=sr, n_mfcc=40).T, axis=0)
    return (time.perf_counter() - t0) / len(paths)


class _PeakRSS:
    """Samples the resident memory of this process and of its children every 20 ms."""

    def __init__(self) -> None:
        import psutil

        self._me = psutil.Process()
        self.before = self._me.memory_info().rss
        self.peak_self = self.peak_children = self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            own = self._me.memory_info().rss
            children = 0
            for p in self._me.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # a worker that just exited
                    children += p.memory_info().rss
            self.peak_self = max(self.peak_self, own)
            self.peak_children = max(self.peak_children, children)
            self.peak_total = max(self.peak_total, own + children)
            self._stop.wait(0.02)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _extract(paths: list[str], settings: FeatureSettings) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = extract_features(paths, settings, progress=False)
    return time.perf_counter() - t0, result


def _entry_writes(tmp: Path, n: int = 200) -> tuple[float, float]:
    """Seconds per entry: the feature cache's writer, then ``files.atomic_write`` (same bytes)."""
    import zlib

    from urbansound.features import cache as feature_cache
    from urbansound.utils import files

    array = np.random.default_rng(0).standard_normal((128, 173)).astype(np.float32)
    key = bytes(range(32))
    payload = array.tobytes()
    head = feature_cache.HEAD.pack(feature_cache.MAGIC, key, zlib.crc32(payload), *array.shape)
    data = head + payload
    t0 = time.perf_counter()
    for i in range(n):
        feature_cache.write_entry(tmp / "own" / f"{i}.bin", key, array, tmp_dir=tmp / "tmp")
    own = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for i in range(n):
        files.atomic_write(tmp / "atomic" / f"{i}.bin", data)
    atomic = (time.perf_counter() - t0) / n
    assert (tmp / "atomic" / "0.bin").read_bytes() == (tmp / "own" / "0.bin").read_bytes()
    return own, atomic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", help="UrbanSound8K-layout folder (default: demo)")
    parser.add_argument("--baseline-clips", type=int, default=100, help="clips for the tutorial")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N clips")
    parser.add_argument("--jobs", type=int, default=-1, help="features.n_jobs (-1: all cores)")
    args = parser.parse_args(argv)

    from urbansound.data.demo import make_demo_corpus
    from urbansound.data.index import load_index

    if args.root:
        root, name = Path(args.root), "urbansound8k"
    else:
        root, name = make_demo_corpus(Path(DataSettings().demo_dir)), "demo"
    index = load_index(root, missing="skip", name=name)
    paths = [str(p) for p in index.clips["path"]][: args.limit]
    n = len(paths)
    size = 0
    for p in paths:  # page cache: both sides read warm files
        size += len(Path(p).read_bytes())
    sample = [paths[i] for i in np.linspace(0, n - 1, min(args.baseline_clips, n)).astype(int)]

    try:
        import resampy  # noqa: F401  (kaiser_fast's resampler)

        res_type, note = "kaiser_fast", "librosa.load(res_type='kaiser_fast')"
    except ImportError:
        res_type = "soxr_hq"
        note = "resampy is not installed: baseline uses librosa's default resampler (soxr_hq)"

    import joblib

    print(f"dataset: {root} ({n} clips, {size / 1e6:.0f} MB of files)")
    print(f"machine: {joblib.cpu_count()} cores; n_jobs={args.jobs}")
    print(f"baseline: {note}, {len(sample)} clips")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = _tutorial(sample, res_type)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, user_api="blas"):  # spinning BLAS threads on a busy machine
            base_1 = _tutorial(sample, res_type)

    tmp = Path(tempfile.mkdtemp(prefix="urbansound-bench-"))
    try:
        s40 = dataclasses.replace(
            FeatureSettings(), cache_dir=str(tmp / "cold"), n_jobs=args.jobs, n_mfcc=40
        )
        with _PeakRSS() as mem:
            cold, result = _extract(paths, s40)
        assert result.n_computed == n - len(result.skipped), (result.n_computed, result.skipped)
        one = dataclasses.replace(s40, cache_dir=str(tmp / "single"), n_jobs=1)
        single, _ = _extract(sample, one)
        full, hit = _extract(paths, s40)
        assert hit.n_cached == n
        stage, res = _extract(paths, dataclasses.replace(s40, pooling="mean_std"))
        assert res.n_computed == 0

        sweep = []
        for k in (20, 40, 60):
            s = dataclasses.replace(s40, cache_dir=str(tmp / "sweep"), n_mfcc=k)
            sweep.append(_extract(paths, s)[0])
        own_write, atomic_write = _entry_writes(tmp / "writes")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    clips = index.clips.iloc[:n]
    seconds_of_audio = float((clips["end"] - clips["start"]).sum())  # CSV slice bounds
    ours = cold / n
    print()
    print(f"tutorial loop, 1 process   {base * 1e3:8.2f} ms/clip")
    print(
        f"  the same, 1 BLAS thread  {base_1 * 1e3:8.2f} ms/clip   (ratios below use the "
        "tutorial as it runs, with default threads)"
    )
    print(
        f"ours, 1 process (sample)   {single / len(sample) * 1e3:8.2f} ms/clip"
        f"   {base / (single / len(sample)):6.1f}x"
    )
    print(
        f"ours, cold, all clips      {ours * 1e3:8.2f} ms/clip   {base / ours:6.1f}x"
        f"   ({cold:.2f} s, worker start-up included)"
    )
    print(
        f"n_mfcc=20,40,60 together   {sum(sweep):8.2f} s        "
        f"{sum(sweep) / sweep[0]:6.3f}x the cold n_mfcc=20 ({sweep[0]:.2f} s)"
    )
    print(f"fully cached load          {full:8.3f} s        {full / cold:6.2%} of cold")
    print(
        f"from the stage cache       {stage:8.3f} s        {stage / cold:6.2%} of cold"
        "   (new pooling: every clip's log-mel read back)"
    )
    mib = 2**20
    print(
        f"peak memory                {mem.peak_total / mib:8.0f} MiB     (this process "
        f"{mem.before / mib:.0f} -> {mem.peak_self / mib:.0f} MiB, workers "
        f"{mem.peak_children / mib:.0f} MiB; the decoded audio of these clips at 22.05 kHz: "
        f"{seconds_of_audio * 22050 * 4 / mib:.0f} MiB)"
    )
    print(
        f"cache entry write          {own_write * 1e3:8.3f} ms/entry   files.atomic_write (fsync): "
        f"{atomic_write * 1e3:.3f} ms/entry, {atomic_write / own_write:.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
