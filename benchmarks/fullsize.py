"""What a user runs on the full dataset, timed end to end against the tutorial's method.

Usage::

    python benchmarks/fullsize.py [--work DIR] [--clips-per-class 873] [--baseline-clips 200]
                                  [--skip-sweep] [--train-device cpu]

Builds (once, deterministic, reused afterwards) a full-size stand-in for UrbanSound8K with the
built-in demo generator: ``10 x --clips-per-class`` clips (8 730 by default, the real dataset
lists 8 732) in the real dataset's layout and mix of formats (8/16/24-bit and float WAV,
11.025-96 kHz, mono and stereo, short clips). Then, in one run, times:

- the tutorial's extraction loop (``librosa.load(path, res_type="kaiser_fast")`` then the time
  mean of ``librosa.feature.mfcc(n_mfcc=40)``) on an even sample of ``--baseline-clips`` clips,
  extrapolated to every clip: the tutorial's cost of one extraction of the corpus;
- the main job ``python -m urbansound.run`` cold (empty feature cache) and warm (cache filled);
- the grid sweep ``python -m urbansound.run -m n_mfcc=20,40,60`` cold (a new cache) and warm;
- peak memory of the whole process tree of each command (parent plus every descendant, with
  psutil): summed RSS every 50 ms (pages shared copy-on-write with a forked child count twice:
  an upper bound) and summed PSS every 200 ms (shared pages split between their processes).

Each figure is printed in seconds, as a ratio to the tutorial's extraction of the corpus, and as
a ratio to one cold extraction (the ``features`` duration of the cold main job's
``results.json``). The targets of the performance issue are printed beside them. Every command
is run as a subprocess exactly as a user types it (``tracking.mode=disabled`` so that Comet's
archives do not count). Timings on a shared machine are noisy: compare ratios from one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


class _TreeRSS(threading.Thread):
    """Peak summed RSS and PSS (bytes) of a process and all its descendants.

    RSS is sampled every 50 ms; PSS (proportional set size: a page shared by n processes counts
    1/n in each, so the sum is the tree's real footprint) every 200 ms, as reading it costs about
    a millisecond per process. Summed RSS counts every page a forked child shares with its parent
    (the torch libraries, the parent's arrays) twice: an upper bound.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.peak_pss = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        tick = 0
        while not self._stop_event.is_set():
            total = pss = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
                    if tick % 4 == 0:
                        pss += p.memory_full_info().pss
            self.peak = max(self.peak, total)
            self.peak_pss = max(self.peak_pss, pss)
            tick += 1
            self._stop_event.wait(0.05)

    def stop(self) -> tuple[int, int]:
        self._stop_event.set()
        self.join()
        return self.peak, self.peak_pss


def _run(args: list[str], *, log: Path) -> tuple[float, tuple[int, int]]:
    """Run ``python -m urbansound.run ARGS``; return (wall seconds, peak tree (RSS, PSS) in
    bytes)."""
    cmd = [sys.executable, "-m", "urbansound.run", *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_DISABLE="1")
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        sampler = _TreeRSS(proc.pid)
        sampler.start()
        rc = proc.wait()
    wall = time.perf_counter() - t0
    peak = sampler.stop()
    if rc != 0:
        sys.exit(f"command failed (rc {rc}): {' '.join(cmd)}\nsee {log}")
    return wall, peak


def _tutorial_seconds_per_clip(paths: list[str]) -> tuple[float, str]:
    import librosa

    try:
        import resampy  # noqa: F401

        res_type = "kaiser_fast"
    except ImportError:
        res_type = "soxr_hq"
    y, sr = librosa.load(paths[0], res_type=res_type)  # imports outside the timing
    np.mean(librosa.feature.mfcc(y=y, sr=sr, n_mfcc=40).T, axis=0)
    t0 = time.perf_counter()
    for path in paths:
        y, sr = librosa.load(path, res_type=res_type)
        np.mean(librosa.feature.mfcc(y=y, sr=sr, n_mfcc=40).T, axis=0)
    return (time.perf_counter() - t0) / len(paths), res_type


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "bench-fullsize")
    parser.add_argument("--clips-per-class", type=int, default=873)
    parser.add_argument("--baseline-clips", type=int, default=200)
    parser.add_argument("--skip-sweep", action="store_true", help="time the main job only")
    parser.add_argument("--train-device", default="auto", help="train.device for every command")
    args = parser.parse_args(argv)

    from urbansound.data.demo import make_demo_corpus

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    root = make_demo_corpus(work / "corpus", clips_per_class=args.clips_per_class, seed=0)
    built = time.perf_counter() - t0
    import pandas as pd

    meta = pd.read_csv(root / "metadata" / "UrbanSound8K.csv")
    paths = [
        str(root / "audio" / f"fold{f}" / name)
        for f, name in zip(meta["fold"], meta["slice_file_name"], strict=True)
    ]
    print(f"corpus: {root} ({len(paths)} clips; {built:.1f} s to build or find)")
    for p in paths:  # both sides read from the page cache
        Path(p).read_bytes()

    step = max(1, len(paths) // args.baseline_clips)
    per_clip, res_type = _tutorial_seconds_per_clip(paths[::step][: args.baseline_clips])
    tutorial = per_clip * len(paths)
    print(
        f"tutorial loop ({res_type}): {1e3 * per_clip:.1f} ms/clip on "
        f"{min(args.baseline_clips, len(paths[::step]))} clips -> {tutorial:.0f} s for the corpus"
    )

    common = [
        f"data.root={root}",
        "tracking.mode=disabled",
        f"train.device={args.train_device}",
        f"hydra.run.dir={work}/runs/${{now:%H-%M-%S-%f}}",
        f"hydra.sweep.dir={work}/sweeps/${{now:%H-%M-%S-%f}}",
        f"hydra.sweeper.storage=sqlite:///{work}/optuna.db",
    ]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows: list[tuple[str, float, int]] = []
    cache = work / f"cache-{stamp}"
    single = [*common, f"features.cache_dir={cache}"]
    wall, rss = _run(single, log=work / "main_cold.log")
    rows.append(("main job, cold", wall, rss))
    runs = sorted((work / "runs").glob("*/results.json"), key=lambda p: p.stat().st_mtime)
    extraction = float(json.loads(runs[-1].read_text())["durations"]["features"])
    wall, rss = _run(single, log=work / "main_warm.log")
    rows.append(("main job, warm", wall, rss))
    if not args.skip_sweep:
        sweep_cache = work / f"cache-sweep-{stamp}"
        sweep = [
            "-m",
            "n_mfcc=20,40,60",
            *common,
            f"features.cache_dir={sweep_cache}",
        ]
        wall, rss = _run(
            [*sweep, f"hydra.sweeper.study_name=fullsize-cold-{stamp}"], log=work / "sweep_cold.log"
        )
        rows.append(("-m n_mfcc=20,40,60, cold", wall, rss))
        wall, rss = _run(
            [*sweep, f"hydra.sweeper.study_name=fullsize-warm-{stamp}"], log=work / "sweep_warm.log"
        )
        rows.append(("-m n_mfcc=20,40,60, warm", wall, rss))

    print(
        f"\none cold extraction inside the main job: {extraction:.1f} s "
        f"({tutorial / extraction:.1f}x faster than the tutorial's loop)\n"
    )
    print(
        f"{'command':<28} {'seconds':>8} {'/ tutorial':>11} {'/ extraction':>13} {'peak RSS':>10}"
        f" {'peak PSS':>10}"
    )
    for name, wall, (rss, pss) in rows:
        print(
            f"{name:<28} {wall:8.1f} {wall / tutorial:11.2f} {wall / extraction:13.2f} "
            f"{rss / 2**20:7.0f} MiB {pss / 2**20:7.0f} MiB"
        )
    warm = dict((n, w) for n, w, _ in rows)
    print("\ntargets (performance issue):")
    print(f"  cold main job <= 60 s: {warm['main job, cold']:.1f} s")
    print(f"  warm main job <= 40 s: {warm['main job, warm']:.1f} s")
    print(
        f"  peak memory < 1 GiB: {max(m[0] for _, _, m in rows) / 2**20:.0f} MiB RSS summed over "
        f"the process tree (pages a forked child shares counted twice), "
        f"{max(m[1] for _, _, m in rows) / 2**20:.0f} MiB PSS"
    )
    if not args.skip_sweep:
        ratio = warm["-m n_mfcc=20,40,60, warm"] / (3 * warm["main job, warm"])
        print(f"  warm 3-value sweep <= 1.15x three warm single runs: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
