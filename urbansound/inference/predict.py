"""Classify audio with a fitted model: ``python -m urbansound.predict MODEL AUDIO...``.

``MODEL`` is a ``model.safetensors`` written by :mod:`urbansound.fit` (or the fit's run
directory). ``AUDIO`` are files, folders (searched recursively for audio files) and glob
patterns (``'recordings/**/*.flac'``); every format and rate the pipeline reads
(:func:`urbansound.features.audio.load_audio`).

Features are computed by the training code (:func:`urbansound.features.audio.load_audio`, then
:func:`urbansound.features.dsp.log_mel` and :func:`urbansound.features.dsp.clip_features` with the
model's feature settings, BLAS on one thread as in
:func:`urbansound.features.extraction.extract_features`), so a training clip gives exactly its
training features.

- A file up to the model's window (the training clips' length, 4 s; ``window_s`` in the model
  file) is one clip: one row, the whole file, as a training clip is.
- A longer recording is decoded once and cut into windows of that length every ``--hop``
  seconds (default: the window, no overlap), from 0 until a window reaches the end; the last
  one holds what is left and is not padded (training clips shorter than 4 s are not padded
  either: their features pool over the frames they have). One row per window, and a timeline:
  consecutive windows with the same top class merged into one segment, from its first
  window's start to the next segment's first start (the last to the end of the file).

Output (stdout, or ``--output FILE`` written atomically): CSV by default, one row per clip or
window: ``path,start,end,class,<probability of each class>`` (seconds; class probabilities in
the model's class order); ``--timeline`` gives the segments instead (``path,start,end,class,
windows,probability``: the mean top-class probability over its windows); ``--format json``
gives both per file. All clips and windows of one call are classified in one batch, as the
trainer evaluates a fold: the same clips in the same order give bitwise the trainer's
probabilities (other batches agree to float32 rounding).

A file that cannot be read is reported on stderr (one line) and skipped; the others go on
(``--on-error stop``: the first one ends the call, exit 2, nothing written). Exit status 0 when
at least one file was classified, 2 when none was or on bad arguments.
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import math
import os
import sys
import threading
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from urbansound.errors import AudioError, UrbansoundError

__all__ = [
    "AUDIO_SUFFIXES",
    "FilePrediction",
    "Segment",
    "Window",
    "expand_inputs",
    "main",
    "min_hop",
    "predict_files",
    "timeline",
    "window_bounds",
]

#: File suffixes a folder or a recursive search is scanned for (libsndfile's formats).
AUDIO_SUFFIXES = (
    ".wav",
    ".wave",
    ".flac",
    ".ogg",
    ".oga",
    ".opus",
    ".mp3",
    ".aif",
    ".aiff",
    ".aifc",
    ".au",
    ".snd",
    ".caf",
    ".w64",
    ".rf64",
)
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
# Inputs


def _has_magic(text: str) -> bool:
    return glob.has_magic(text)


def _audio_files(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(AUDIO_SUFFIXES) and not name.startswith("."):
                found.append(Path(dirpath) / name)
    return found


def expand_inputs(args: Iterable[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files to classify from files, folders and glob patterns, in order, without repeats.

    Folders (also those a pattern matches) are searched recursively for files with an
    :data:`AUDIO_SUFFIXES` suffix, sorted by path; a pattern's matches are sorted; a file named
    explicitly is taken whatever its suffix. Returns ``(paths, problems)`` with one
    ``(argument, reason)`` per argument that gives nothing.
    """
    paths: list[str] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(p: Path) -> None:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            paths.append(str(p))

    for arg in args:
        matches = (
            [Path(m) for m in sorted(glob.glob(arg, recursive=True))]
            if _has_magic(arg)
            else [Path(arg)]
        )
        if not matches:
            problems.append((arg, "no file matches this pattern"))
            continue
        before = len(paths)
        for m in matches:
            if m.is_dir():
                for f in _audio_files(m):
                    add(f)
            elif m.exists() or not _has_magic(arg):
                add(m)  # a missing named file is reported when it is read
        if len(paths) == before and all(m.is_dir() for m in matches):
            problems.append((arg, "no audio file in this folder"))
    return paths, problems


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
    path: str, settings: Any, *, window_s: float, hop_s: float, stop: Any = None
) -> tuple[float, list[tuple[int, int]], np.ndarray]:
    """Decode ``path`` once and compute each window's feature row (the training code).

    ``stop`` (a :class:`threading.Event`) set: raises :class:`_Stopped` before the next window,
    so that Ctrl-C does not wait for the windows of a long recording.
    """
    from urbansound.features.audio import audio_error, load_audio
    from urbansound.features.dsp import clip_features, log_mel

    y = load_audio(path, sr=settings.sr)
    sr = settings.sr
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
        row = clip_features(log_mel(y[a:b], settings), settings, in_place=True)
        if not np.isfinite(row).all():
            raise audio_error(path, "its features are not finite")
        rows.append(row)
    return len(y) / sr, bounds, np.stack(rows).astype(np.float32, copy=False)


def min_hop(model: Any) -> float:
    """The shortest hop between windows, in seconds: one feature frame (``hop_length`` samples);
    a shorter one only repeats the same frames (and a hop of a few samples means as many
    windows as samples, which would never end on a long recording)."""
    return model.features.hop_length / model.features.sr


def predict_files(
    model: Any,
    paths: Sequence[str],
    *,
    hop_s: float | None = None,
    n_jobs: int = 1,
    progress: str | None = None,
    on_error: Any = None,
) -> list[FilePrediction]:
    """Classify ``paths`` with ``model`` (a :class:`urbansound.inference.modelfile.ModelFile`).

    ``hop_s``: seconds between window starts of long recordings (default: the window).
    ``on_error(path, message)`` is called for each file that cannot be read (and the file is
    left out); without it the :class:`~urbansound.errors.AudioError` propagates. Returns one
    :class:`FilePrediction` per file classified, in input order.
    """
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    from urbansound.features.audio import HINT
    from urbansound.utils.progress import progress_bar

    settings = model.features
    window_s = model.window_s
    hop_s = window_s if hop_s is None else float(hop_s)
    if not hop_s >= min_hop(model):
        raise ValueError(f"the hop must be at least {min_hop(model):.4g} s, got {hop_s}")

    stop = threading.Event()

    def one(path: str) -> tuple[str, Any]:
        if stop.is_set():
            raise _Stopped
        try:
            return path, _file_features(path, settings, window_s=window_s, hop_s=hop_s, stop=stop)
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
    # One BLAS thread, as extract_features: a multi-threaded product changed the last bit of a
    # few clips' features there.
    blas = threadpool_limits(1, user_api="blas")
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
        blas.restore_original_limits()
        bar.close()
    if not done:
        return []
    X = np.concatenate([rows for *_, rows in done])
    probs = model.predict_proba(X)
    out = []
    at = 0
    sr = settings.sr
    for path, duration, bounds, rows in done:
        p = probs[at : at + len(rows)]
        at += len(rows)
        windows = [
            Window(a / sr, b / sr, int(np.argmax(p[i])), p[i]) for i, (a, b) in enumerate(bounds)
        ]
        out.append(FilePrediction(path, duration, windows, timeline(windows, duration)))
    return out


# --------------------------------------------------------------------------------------------
# Output


def _number(value: float) -> str:
    """The shortest text that reads back as the same float32."""
    return np.format_float_positional(np.float32(value), unique=True, trim="-")


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") if value else "0"


def to_csv(preds: Sequence[FilePrediction], class_names: Sequence[str], *, segments: bool) -> str:
    """The CSV text (module docstring): windows, or the timeline's segments."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if segments:
        writer.writerow(["path", "start", "end", "class", "windows", "probability"])
        for fp in preds:
            for s in fp.timeline:
                writer.writerow(
                    [
                        fp.path,
                        _seconds(s.start),
                        _seconds(s.end),
                        class_names[s.label],
                        s.windows,
                        _number(s.probability),
                    ]
                )
    else:
        writer.writerow(["path", "start", "end", "class", *class_names])
        for fp in preds:
            for w in fp.windows:
                writer.writerow(
                    [
                        fp.path,
                        _seconds(w.start),
                        _seconds(w.end),
                        class_names[w.label],
                        *(_number(v) for v in w.probabilities),
                    ]
                )
    return buf.getvalue()


def to_json(
    preds: Sequence[FilePrediction],
    class_names: Sequence[str],
    *,
    model_path: str,
    skipped: Sequence[dict[str, str]],
) -> str:
    """The JSON text: the model, every file's windows and timeline, the skipped files."""

    def probs(v: np.ndarray) -> dict[str, float]:
        return {n: float(_number(p)) for n, p in zip(class_names, v, strict=True)}

    files = []
    for fp in preds:
        files.append(
            {
                "path": fp.path,
                "duration": round(fp.duration, 6),
                "class": class_names[fp.windows[0].label] if len(fp.windows) == 1 else None,
                "windows": [
                    {
                        "start": round(w.start, 6),
                        "end": round(w.end, 6),
                        "class": class_names[w.label],
                        "probabilities": probs(w.probabilities),
                    }
                    for w in fp.windows
                ],
                "timeline": [
                    {
                        "start": round(s.start, 6),
                        "end": round(s.end, 6),
                        "class": class_names[s.label],
                        "windows": s.windows,
                        "probability": float(_number(s.probability)),
                    }
                    for s in fp.timeline
                ],
            }
        )
    payload = {
        "model": model_path,
        "class_names": list(class_names),
        "files": files,
        "skipped": list(skipped),
    }
    return json.dumps(payload, indent=2) + "\n"


# --------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    from urbansound.utils.progress import MODES

    p = argparse.ArgumentParser(
        prog="python -m urbansound.predict",
        description="Classify audio files with a model written by `python -m urbansound.fit`.",
    )
    p.add_argument("model", help="model.safetensors (or the fit's run directory)")
    p.add_argument("audio", nargs="+", help="audio files, folders (recursive), glob patterns")
    p.add_argument(
        "--hop",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds between window starts of recordings longer than the model's window "
        "(default: the window, i.e. no overlap)",
    )
    p.add_argument("--timeline", action="store_true", help="CSV of merged segments, not windows")
    p.add_argument(
        "--format",
        choices=("csv", "json"),
        default=None,
        help="default: json for an --output ending in .json, otherwise csv",
    )
    p.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    p.add_argument(
        "--jobs", type=int, default=-1, metavar="N", help="files decoded at once (-1: all cores)"
    )
    p.add_argument("--progress", choices=MODES, default=None, help="progress on stderr")
    p.add_argument(
        "--on-error",
        choices=("skip", "stop"),
        default="skip",
        help="a file that cannot be read: skip it and go on (default), or stop with exit 2 and "
        "write nothing",
    )
    return p


def _output_clash(output: str, inputs: Sequence[str]) -> str | None:
    """What ``output`` already is among ``inputs`` (the model file first, then the audio), or
    None: predictions written there would replace the model or a recording."""
    target = os.path.realpath(output)
    for i, p in enumerate(inputs):
        if os.path.realpath(p) == target:
            return "the model file" if i == 0 else f"the audio file {p}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """The command; returns the exit status (see the module docstring).

    Ctrl-C is one line and status 130, with nothing written: the output is written once, at
    the end (``--output`` atomically).
    """
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("error: interrupted; no predictions were written", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    from urbansound.inference.modelfile import FeatureVersionWarning, load_model

    args = _parser().parse_args(argv)
    if args.hop is not None and not (math.isfinite(args.hop) and args.hop > 0):
        print(f"error: --hop must be a number of seconds > 0, got {args.hop}", file=sys.stderr)
        return 2
    if args.jobs == 0 or args.jobs < -1:
        print(f"error: --jobs must be a positive count or -1, got {args.jobs}", file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FeatureVersionWarning)
            model = load_model(args.model)
    except UrbansoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if args.hop is not None and args.hop < min_hop(model):
        print(
            f"error: --hop must be at least one feature frame of the model "
            f"({min_hop(model):.4g} s = features.hop_length / features.sr), got {args.hop}",
            file=sys.stderr,
        )
        return 2

    paths, problems = expand_inputs(args.audio)
    if args.output:
        clash = _output_clash(args.output, [str(model.path), *paths])
        if clash is not None:
            print(
                f"error: --output {args.output} is {clash}; it would be overwritten: "
                "choose another file",
                file=sys.stderr,
            )
            return 2
    stop = args.on_error == "stop"
    if stop and problems:
        arg, reason = problems[0]
        print(f"error: {arg}: {reason} (--on-error stop; nothing written)", file=sys.stderr)
        return 2
    skipped = [{"path": arg, "error": reason} for arg, reason in problems]
    for arg, reason in problems:
        print(f"skipped {arg}: {reason}", file=sys.stderr)

    def report(path: str, message: str) -> None:
        skipped.append({"path": path, "error": message})
        print(f"skipped: {message}", file=sys.stderr)

    try:
        preds = predict_files(
            model,
            paths,
            hop_s=args.hop,
            n_jobs=args.jobs,
            progress=args.progress,
            on_error=None if stop else report,
        )
    except UrbansoundError as exc:
        hint = " (--on-error stop; nothing written)" if stop else ""
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 2
    if not preds:
        print(
            f"error: none of the {len(args.audio)} input(s) gave an audio file to classify",
            file=sys.stderr,
        )
        return 2
    names = model.class_names
    if args.format is None:
        args.format = "json" if (args.output or "").lower().endswith(".json") else "csv"
    if args.format == "json":
        text = to_json(preds, names, model_path=str(model.path), skipped=skipped)
    else:
        text = to_csv(preds, names, segments=args.timeline)
    if args.output:
        from urbansound.utils.files import atomic_write

        try:
            atomic_write(args.output, text)
        except UrbansoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    if skipped:
        print(f"{len(preds)} file(s) classified, {len(skipped)} skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
