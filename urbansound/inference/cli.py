"""``python -m urbansound.predict MODEL AUDIO...``: classify files, folders and long recordings.

``MODEL`` is a ``model.safetensors`` written by :mod:`urbansound.fit` (or the fit's run
directory). ``AUDIO`` are files, folders (searched recursively for audio files) and glob
patterns (``'recordings/**/*.flac'``): :func:`expand_inputs`; every format and rate the pipeline
reads (:func:`urbansound.features.audio.load_audio`). Only regular files are read: ``-``
(standard input), a FIFO, a device or a socket is refused without being opened. How files are
cut into windows and classified is :mod:`urbansound.inference.predict`.

Output (stdout, or ``--output FILE``: written as :func:`urbansound.utils.files.atomic_open`
says, i.e. a regular file replaced atomically, a symbolic link written through, a device or
FIFO written in place; ``-o -`` is stdout): CSV by default, one row per clip or window:
``path,start,end,class,<probability of each class>`` (seconds; class probabilities in the
model's class order); ``--timeline`` gives the segments instead (``path,start,end,class,
windows,probability``: the mean top-class probability over its windows); ``--format json``
gives both per file (:func:`to_csv`, :func:`to_json`).

A file that cannot be read is reported on stderr (one line) and skipped; the others go on
(``--on-error stop``: the first one ends the call, exit 2, nothing written). Exit status 0 when
at least one file was classified, 2 when none was or on bad arguments (one ``error:`` line; when
no argument gave a file to read, that line names the first one and why), 130 on Ctrl-C, 141
(128 + SIGPIPE, as a Unix tool killed by it) when the reader of stdout went away
(``predict ... | head -1``): :func:`urbansound.config.app.run_command`.
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
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from urbansound.config.app import run_command
from urbansound.errors import ConfigError, UrbansoundError
from urbansound.inference.predict import FilePrediction, Segment, Window, min_hop, predict_files
from urbansound.utils.memory import require_memory_for

__all__ = ["AUDIO_SUFFIXES", "expand_inputs", "main", "to_csv", "to_json"]

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
# --------------------------------------------------------------------------------------------
# Inputs


def _glob(pattern: str) -> list[Path]:
    """The paths ``pattern`` matches, sorted.

    ``**`` matches any number of folders without following symbolic links to folders (as
    ``os.walk`` and Python 3.13's pathlib do): a link loop would otherwise be followed until the
    path grows too long (each file found 41 times through one loop, 2**40 times through two).
    A name starting with ``.`` is matched only by a pattern part starting with ``.`` (as
    :func:`glob.glob`).
    """
    if "**" not in pattern:
        return [Path(m) for m in sorted(glob.glob(pattern))]
    parts = Path(pattern).parts
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base = Path(*parts[:first]) if first else Path()
    rest = parts[first:]
    dotted = any(part.startswith(".") for part in rest)
    found = []
    for match in base.glob(str(Path(*rest))):
        if dotted or not any(c.startswith(".") for c in match.relative_to(base).parts):
            found.append(match)
    return sorted(found)


def _audio_files(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(AUDIO_SUFFIXES) and not name.startswith("."):
                found.append(Path(dirpath) / name)
    return found


#: What reading a model file and computing features loads (import names).
_FEATURE_MODULES = ("urbansound.features.extraction", "urbansound.inference.modelfile")

#: An argument that names standard input; predict reads files (it decodes each one whole).
STDIN = "-"


def expand_inputs(args: Iterable[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files to classify from files, folders and glob patterns, in order, without repeats.

    Folders (also those a pattern matches) are searched recursively for files with an
    :data:`AUDIO_SUFFIXES` suffix, sorted by path; a pattern's matches are sorted (``**``
    follows no symbolic link to a folder: :func:`_glob`); a file named explicitly is taken
    whatever its suffix. Only regular files are taken (symbolic links followed), found so
    without opening anything: ``-`` (standard input), a FIFO, a device such as ``/dev/zero``, a
    socket, a missing file or a broken link each give a problem instead. A file reached by two
    paths (a link, a folder given twice) is taken once, by the first. Returns
    ``(paths, problems)`` with one ``(argument or file, reason)`` per argument that gives
    nothing and per file refused.
    """
    from urbansound.utils.files import not_a_regular_file

    paths: list[str] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(p: Path, *, named: str | None = None) -> None:
        reason = not_a_regular_file(p)
        if reason is not None:
            problems.append((named or str(p), reason))
            return
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            paths.append(str(p))

    for arg in args:
        if arg == STDIN:
            problems.append((arg, _STDIN_REASON))
            continue
        magic = glob.has_magic(arg)
        matches = _glob(arg) if magic else [Path(arg)]
        if not matches:
            problems.append((arg, "no file matches this pattern"))
            continue
        in_folders = 0
        for m in matches:
            if m.is_dir():
                found = _audio_files(m)
                in_folders += len(found)
                for f in found:
                    add(f)
            else:
                add(m, named=None if magic else arg)
        if in_folders == 0 and all(m.is_dir() for m in matches):
            problems.append((arg, "no audio file in this folder"))
    return paths, problems


_STDIN_REASON = (
    "standard input is not read: predict decodes whole audio files; save the stream to a file "
    "and give its path"
)


# --------------------------------------------------------------------------------------------
# Output


def _number(value: float) -> str:
    """The shortest text that reads back as the same float32."""
    return np.format_float_positional(np.float32(value), unique=True, trim="-")


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") if value else "0"


def _row_start(path: str, span: Window | Segment, class_names: Sequence[str]) -> list[str]:
    """A CSV row's first columns: ``path``, ``start``, ``end`` (seconds) and ``class``."""
    return [path, _seconds(span.start), _seconds(span.end), class_names[span.label]]


def to_csv(preds: Sequence[FilePrediction], class_names: Sequence[str], *, segments: bool) -> str:
    """The CSV text (module docstring): windows, or the timeline's segments."""
    if segments:
        header = ["path", "start", "end", "class", "windows", "probability"]
        rows = (
            [*_row_start(fp.path, s, class_names), s.windows, _number(s.probability)]
            for fp in preds
            for s in fp.timeline
        )
    else:
        header = ["path", "start", "end", "class", *class_names]
        rows = (
            [*_row_start(fp.path, w, class_names), *(_number(v) for v in w.probabilities)]
            for fp in preds
            for w in fp.windows
        )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
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
    p.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="write here instead of stdout (`-`: stdout); a regular file is replaced atomically, "
        "a symbolic link written through, a device or FIFO written in place",
    )
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
    return run_command(lambda: _predict(argv), interrupted=lambda: "no predictions were written")


def _predict(argv: Sequence[str] | None) -> int:
    from urbansound.inference.modelfile import ModelFileWarning, load_model

    args = _parser().parse_args(argv)
    if args.hop is not None and not (math.isfinite(args.hop) and args.hop > 0):
        raise ConfigError(f"--hop must be a number of seconds > 0, got {args.hop}")
    if args.jobs == 0 or args.jobs < -1:
        raise ConfigError(f"--jobs must be a positive count or -1, got {args.jobs}")
    # an address-space limit (ulimit -v) too small for the feature code: one line, not an abort
    # in a library's loader (torch is checked where an MLP is first used)
    require_memory_for(_FEATURE_MODULES, doing="loading the feature code", spare=128 * 2**20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ModelFileWarning)
        model = load_model(args.model)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if args.hop is not None and args.hop < min_hop(model):
        raise ConfigError(
            f"--hop must be at least one feature frame of the model "
            f"({min_hop(model):.4g} s = features.hop_length / features.sr), got {args.hop}"
        )

    paths, problems = expand_inputs(args.audio)
    if not paths:  # nothing to classify: one line, the first reason
        arg, reason = problems[0]
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ConfigError(f"{arg}: {reason}; nothing to classify{more}")
    to_file = args.output not in (None, STDIN)
    if to_file:
        clash = _output_clash(args.output, [str(model.path), *paths])
        if clash is not None:
            raise ConfigError(
                f"--output {args.output} is {clash}; it would be overwritten: choose another file"
            )
    stop = args.on_error == "stop"
    if stop and problems:
        arg, reason = problems[0]
        raise ConfigError(f"{arg}: {reason} (--on-error stop; nothing written)")
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
        if not stop:
            raise
        raise UrbansoundError(f"{exc} (--on-error stop; nothing written)") from None
    if not preds:
        raise ConfigError(f"none of the {len(args.audio)} input(s) gave an audio file to classify")
    names = model.class_names
    if args.format is None:
        args.format = "json" if to_file and args.output.lower().endswith(".json") else "csv"
    if args.format == "json":
        text = to_json(preds, names, model_path=str(model.path), skipped=skipped)
    else:
        text = to_csv(preds, names, segments=args.timeline)
    if to_file:
        from urbansound.utils.files import atomic_write

        atomic_write(args.output, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    if skipped:
        print(f"{len(preds)} file(s) classified, {len(skipped)} skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
