"""The dataset: UrbanSound8K's index (metadata, folds, validation) and the built-in demo corpus.

UrbanSound8K is a folder with ``metadata/UrbanSound8K.csv`` (one row per clip: ``slice_file_name,
fsID,start,end,salience,fold,classID,class``) and ``audio/fold1`` .. ``audio/fold10``.
:func:`load_index` checks the metadata and resolves each clip's path; :func:`resolve_dataset`
decides which folder a run uses; :func:`make_demo_corpus` generates a synthetic corpus in exactly
that layout when no copy of UrbanSound8K is at hand.

The dataset authors' rule for the folds, which the demo corpus follows too: "slices taken from
the same original recording (fsID) are placed in the same fold", so use the predefined 10 folds
and report the mean over all of them; a random split leaks slices of one recording across train
and test.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.fft import next_fast_len

from urbansound.config import DataSettings
from urbansound.errors import DataError

log = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = (
    "air_conditioner",
    "car_horn",
    "children_playing",
    "dog_bark",
    "drilling",
    "engine_idling",
    "gun_shot",
    "jackhammer",
    "siren",
    "street_music",
)
CSV_COLUMNS: tuple[str, ...] = (
    "slice_file_name",
    "fsID",
    "start",
    "end",
    "salience",
    "fold",
    "classID",
    "class",
)
FOLDS: tuple[int, ...] = tuple(range(1, 11))
METADATA = Path("metadata") / "UrbanSound8K.csv"
ENV_VAR = "URBANSOUND8K"
LOCAL_ROOT = Path("data") / "UrbanSound8K"
MISSING_MODES = ("error", "skip")
_SHOW = 5  # how many missing file names a message lists


@dataclass
class DatasetIndex:
    """The clips of one dataset folder that can be used, and what was wrong with the rest.

    Attributes
    ----------
    name:
        ``"urbansound8k"`` or ``"demo"``.
    root:
        The dataset folder (absolute).
    clips:
        Present clips only, in the CSV's order: the CSV's columns plus ``path`` (absolute, str).
    n_listed:
        Rows in the CSV.
    missing:
        ``"foldN/file.wav"`` for each clip listed in the CSV but absent.
    empty_folds:
        Folds 1-10 with no present clip (left out of cross-validation).
    class_names:
        Class names indexed by ``classID`` (from the whole CSV, present or not).
    """

    name: str
    root: Path
    clips: pd.DataFrame
    n_listed: int
    missing: list[str] = field(default_factory=list)
    empty_folds: list[int] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Dataset index


def _read_metadata(csv: Path) -> pd.DataFrame:
    """Read and check ``metadata/UrbanSound8K.csv``; every problem is a DataError naming ``csv``."""
    try:
        df = pd.read_csv(csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise DataError(
            f"{csv}: cannot read it as a CSV ({type(exc).__name__}: {exc}); "
            "restore the file from the UrbanSound8K archive"
        ) from None
    absent = [c for c in CSV_COLUMNS if c not in df.columns]
    if absent:
        raise DataError(
            f"{csv}: missing column(s) {', '.join(absent)}; UrbanSound8K's metadata has the "
            f"columns {','.join(CSV_COLUMNS)}"
        )
    if df.empty:
        raise DataError(f"{csv}: lists no clips; point data.root at a complete UrbanSound8K copy")
    df = df[list(CSV_COLUMNS) + [c for c in df.columns if c not in CSV_COLUMNS]].copy()

    for col in ("fsID", "salience", "fold", "classID"):
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna() | (num != np.round(num))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{csv}: column {col} must hold integers; row {i + 2} "
                f"({df['slice_file_name'].iloc[i]}) has {df[col].iloc[i]!r}"
            )
        df[col] = num.astype(np.int64)
    for col in ("start", "end"):
        num = pd.to_numeric(df[col], errors="coerce")
        if num.isna().any():
            i = int(np.flatnonzero(num.isna().to_numpy())[0])
            raise DataError(
                f"{csv}: column {col} must hold numbers; row {i + 2} "
                f"({df['slice_file_name'].iloc[i]}) has {df[col].iloc[i]!r}"
            )
        df[col] = num.astype(np.float64)
    df["slice_file_name"] = df["slice_file_name"].astype(str)
    df["class"] = df["class"].astype(str)

    bad_fold = ~df["fold"].isin(FOLDS)
    if bad_fold.any():
        i = int(np.flatnonzero(bad_fold.to_numpy())[0])
        raise DataError(
            f"{csv}: fold must be 1-10 (UrbanSound8K's predefined folds); "
            f"{int(bad_fold.sum())} row(s) are outside, e.g. row {i + 2} "
            f"({df['slice_file_name'].iloc[i]}) has fold {df['fold'].iloc[i]}"
        )
    if (df["classID"] < 0).any():
        i = int(np.flatnonzero((df["classID"] < 0).to_numpy())[0])
        raise DataError(
            f"{csv}: classID must be >= 0; row {i + 2} ({df['slice_file_name'].iloc[i]}) "
            f"has {df['classID'].iloc[i]}"
        )
    names_per_id = df.groupby("classID")["class"].unique()
    for class_id, names in names_per_id.items():
        if len(names) > 1:
            raise DataError(
                f"{csv}: classID and class disagree: classID {class_id} is labelled "
                f"{', '.join(sorted(map(str, names)))}; each classID must have one class name"
            )
    ids_per_name = df.groupby("class")["classID"].unique()
    for name, ids in ids_per_name.items():
        if len(ids) > 1:
            raise DataError(
                f"{csv}: classID and class disagree: class {name} has classIDs "
                f"{', '.join(map(str, sorted(ids)))}; each class name must have one classID"
            )
    gaps = sorted(set(range(int(df["classID"].max()) + 1)) - set(names_per_id.index))
    if gaps:
        raise DataError(
            f"{csv}: classIDs must run 0..{int(df['classID'].max())} without gaps; "
            f"no row has classID {', '.join(map(str, gaps))}"
        )
    dup = df["slice_file_name"].duplicated()
    if dup.any():
        raise DataError(
            f"{csv}: {int(dup.sum())} duplicate slice_file_name row(s), e.g. "
            f"{df['slice_file_name'][dup].iloc[0]}; each clip must be listed once"
        )
    return df


def _present_files(audio: Path, fold: int) -> set[str]:
    folder = audio / f"fold{fold}"
    try:
        with os.scandir(folder) as it:
            return {e.name for e in it if e.is_file()}
    except (FileNotFoundError, NotADirectoryError):
        return set()


def load_index(root: Path, *, missing: str = "error", name: str = "urbansound8k") -> DatasetIndex:
    """Read an UrbanSound8K folder into a :class:`DatasetIndex`.

    Parameters
    ----------
    root:
        Folder with ``metadata/UrbanSound8K.csv`` and ``audio/fold1`` .. ``audio/fold10``.
    missing:
        ``"error"``: stop when a listed clip is absent; ``"skip"``: go on with the present ones.
    name:
        The dataset's name recorded in results (``"urbansound8k"`` or ``"demo"``).

    Returns
    -------
    DatasetIndex
        Present clips with their absolute paths; absent ones in ``missing``; folds without any
        present clip in ``empty_folds`` (a warning is logged for both).

    Raises
    ------
    DataError
        The folder or its CSV is absent or malformed, no listed clip is present, or clips are
        missing and ``missing="error"``.
    """
    if missing not in MISSING_MODES:
        raise ValueError(f"missing must be one of {MISSING_MODES}, got {missing!r}")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(
            f"dataset folder {root} does not exist; set data.root (or ${ENV_VAR}) to an "
            "UrbanSound8K folder containing metadata/UrbanSound8K.csv and audio/fold1..fold10"
        )
    csv = root / METADATA
    if not csv.is_file():
        raise DataError(
            f"{csv} not found: {root} is not an UrbanSound8K folder; point data.root at the "
            "folder that contains metadata/UrbanSound8K.csv and audio/fold1..fold10"
        )
    df = _read_metadata(csv)
    n_listed = len(df)
    class_names = [str(n) for n in df.groupby("classID")["class"].first().sort_index()]

    audio = root / "audio"
    present_by_fold = {f: _present_files(audio, f) for f in FOLDS}
    rel = "fold" + df["fold"].astype(str) + "/" + df["slice_file_name"]
    present = np.array(
        [n in present_by_fold[f] for f, n in zip(df["fold"], df["slice_file_name"], strict=True)],
        dtype=bool,
    )
    missing_files = rel[~present].tolist()

    if missing_files:
        shown = ", ".join(missing_files[:_SHOW]) + (", ..." if len(missing_files) > _SHOW else "")
        summary = (
            f"{len(missing_files)} of {n_listed} clips listed in {csv} are missing from "
            f"{audio} (first: {shown})"
        )
        if missing == "error":
            raise DataError(
                f"{summary}; restore them, or pass data.missing=skip to go on with the "
                f"{int(present.sum())} present clips"
            )
        log.warning(
            "%s; data.missing=skip: going on with the %d present clips", summary, int(present.sum())
        )
    if not present.any():
        raise DataError(
            f"none of the {n_listed} clips listed in {csv} is present under {audio}; "
            "copy the audio/foldN folders next to metadata/ or fix data.root"
        )

    clips = df[present].reset_index(drop=True)
    clips["path"] = [str(audio / r) for r in rel[present].tolist()]
    counts = clips["fold"].value_counts()
    empty_folds = [f for f in FOLDS if counts.get(f, 0) == 0]
    if empty_folds:
        log.warning(
            "fold(s) %s of %s have no clips present; they are left out of cross-validation",
            ", ".join(map(str, empty_folds)),
            root,
        )
    log.info(
        "dataset %s at %s: %d of %d listed clips present, %d classes, folds with clips: %s",
        name,
        root,
        len(clips),
        n_listed,
        len(class_names),
        ", ".join(f"{f}:{counts[f]}" for f in FOLDS if f in counts.index),
    )
    return DatasetIndex(
        name=name,
        root=root,
        clips=clips,
        n_listed=n_listed,
        missing=missing_files,
        empty_folds=empty_folds,
        class_names=class_names,
    )


def resolve_dataset(data: DataSettings) -> tuple[Path, str]:
    """Decide which dataset a run uses and say so in the log.

    The order: ``data.root``; else the ``URBANSOUND8K`` environment variable; else
    ``./data/UrbanSound8K`` (relative to the working directory); else the built-in demo corpus,
    generated once into ``data.demo_dir``.

    Returns
    -------
    (root, name)
        The dataset folder and ``"urbansound8k"`` or ``"demo"``.

    Raises
    ------
    DataError
        ``data.root`` or ``URBANSOUND8K`` is set but names no folder (an explicit choice is never
        silently replaced by the demo corpus).
    """
    if data.root is not None:
        root = Path(data.root).expanduser()
        if not root.is_dir():
            raise DataError(
                f"data.root={data.root} does not exist; point it at an UrbanSound8K folder "
                "(with metadata/UrbanSound8K.csv and audio/fold1..fold10), or leave it unset "
                "to use $URBANSOUND8K, ./data/UrbanSound8K or the built-in demo corpus"
            )
        log.info("dataset: UrbanSound8K at %s (from data.root)", root.resolve())
        return root.resolve(), "urbansound8k"
    env = os.environ.get(ENV_VAR)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise DataError(
                f"${ENV_VAR}={env} does not exist; point it at an UrbanSound8K folder, or "
                f"unset it to use ./data/UrbanSound8K or the built-in demo corpus"
            )
        log.info("dataset: UrbanSound8K at %s (from $%s)", root.resolve(), ENV_VAR)
        return root.resolve(), "urbansound8k"
    local = Path.cwd() / LOCAL_ROOT
    if local.is_dir():
        log.info("dataset: UrbanSound8K at %s (found ./%s)", local, LOCAL_ROOT.as_posix())
        return local.resolve(), "urbansound8k"
    clips_per_class = data.demo_clips_per_class
    log.warning(
        "dataset: no UrbanSound8K found (data.root unset, $%s unset, no ./%s): using the "
        "built-in DEMO corpus (synthetic sounds, %d clips per class) from %s. Demo accuracy "
        "says the pipeline works, not how well urban sounds are classified; set data.root to "
        "UrbanSound8K for real results",
        ENV_VAR,
        LOCAL_ROOT.as_posix(),
        clips_per_class,
        data.demo_dir,
    )
    root = make_demo_corpus(Path(data.demo_dir), clips_per_class=clips_per_class)
    return root.resolve(), "demo"


# --------------------------------------------------------------------------------------------
# The demo corpus: WAV writing

DEMO_VERSION = 2
DEFAULT_DEMO_CLIPS_PER_CLASS = 100
MANIFEST = "demo.json"
_MIN_CLIPS_PER_WORKER = 150  # below this, worker start-up costs more than it saves
_SYNTH_SR = 22050  # synthesis rate; files at higher rates are resampled up
_SUBTYPE_BITS = {"PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "FLOAT": 32}


def _wav_bytes(x: np.ndarray, sr: int, subtype: str) -> bytes:
    """Encode ``x`` (frames x channels, float in [-1, 1]) as a WAV file, byte for byte.

    Written by hand rather than by libsndfile, whose float files carry a PEAK chunk with a
    timestamp: the demo corpus must be byte-identical on every run.
    """
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    frames, channels = x.shape
    bits = _SUBTYPE_BITS[subtype]
    if subtype == "PCM_U8":
        data = (np.round(x * 127.0) + 128).astype(np.uint8).tobytes()
    elif subtype == "PCM_16":
        data = np.round(x * 32767.0).astype("<i2").tobytes()
    elif subtype == "PCM_24":
        q = np.round(x * 8388607.0).astype("<i4").reshape(-1)
        data = q.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        data = x.astype("<f4").tobytes()
    block = channels * bits // 8
    pad = b"\x00" if len(data) % 2 else b""
    if subtype == "FLOAT":
        fmt = struct.pack("<HHIIHHH", 3, channels, sr, sr * block, block, bits, 0)
        extra = b"fact" + struct.pack("<II", 4, frames)
    else:
        fmt = struct.pack("<HHIIHH", 1, channels, sr, sr * block, block, bits)
        extra = b""
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + extra
        + b"data"
        + struct.pack("<I", len(data))
        + data
        + pad
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


# --------------------------------------------------------------------------------------------
# The demo corpus: synthesis. Every generator returns a mono float64 signal of n samples at sr.
# Recording-level parameters (drawn once per synthetic recording, shared by its slices) carry
# most of the variation, so that the folds, which group recordings, test generalisation.


def _spectral(x: np.ndarray, sr: int, gain) -> np.ndarray:
    """Filter ``x`` by a zero-phase gain curve ``gain(freqs_hz)``."""
    spec = np.fft.rfft(x)
    return np.fft.irfft(spec * gain(np.fft.rfftfreq(len(x), 1.0 / sr)), n=len(x))


def _band(lo: float, hi: float, slope: int = 4):
    """A smooth band-pass gain curve between ``lo`` and ``hi`` Hz (slope 2 or 4)."""

    def gain(f: np.ndarray) -> np.ndarray:
        f = np.maximum(f, 1.0)
        low, high = (lo / f) ** 2, (f / hi) ** 2
        if slope == 4:
            low, high = low * low, high * high
        return 1.0 / ((1.0 + low) * (1.0 + high))

    return gain


def _noise(rng: np.random.Generator, n: int, sr: int, lo: float, hi: float) -> np.ndarray:
    """Gaussian noise band-limited to ``lo``..``hi`` Hz, unit variance (drawn as a spectrum)."""
    bins = n // 2 + 1
    spec = rng.standard_normal(bins) + 1j * rng.standard_normal(bins)
    x = np.fft.irfft(spec * _band(lo, hi)(np.fft.rfftfreq(n, 1.0 / sr)), n=n)
    return x / (np.std(x) + 1e-12)


def _harmonic(
    f0: np.ndarray | float, sr: int, n: int, amps: np.ndarray, phase0: float = 0.0
) -> np.ndarray:
    """Sum of harmonics k*f0 (k = 1..len(amps)) with a time-varying f0, below Nyquist."""
    f0 = np.broadcast_to(np.asarray(f0, dtype=np.float64), (n,))
    phase = 2 * np.pi * np.cumsum(f0) / sr + phase0
    fmax = float(f0.max())
    # sin(k x) by the Chebyshev recurrence: one np.sin/np.cos per call instead of one per harmonic
    two_cos = 2.0 * np.cos(phase)
    prev, cur = np.zeros(n), np.sin(phase)
    out = np.zeros(n)
    for k, a in enumerate(amps, start=1):
        if k * fmax >= 0.45 * sr:
            break
        if a:
            out += a * cur
        prev, cur = cur, two_cos * cur - prev
    return out


def _rolloff(k: int, tilt: float, odd_boost: float = 0.0) -> np.ndarray:
    h = np.arange(1, k + 1, dtype=np.float64)
    a = h**-tilt
    a[::2] *= 1.0 + odd_boost
    return a


def _segments(
    rng: np.random.Generator, n: int, sr: int, count: int, dur: tuple[float, float]
) -> np.ndarray:
    """An on/off envelope with ``count`` segments of random length, soft edges."""
    env = np.zeros(n)
    ramp = max(1, int(0.01 * sr))
    for _ in range(count):
        length = max(2 * ramp + 1, int(rng.uniform(*dur) * sr))
        start = int(rng.integers(0, max(1, n - length // 2)))
        stop = min(n, start + length)
        seg = np.ones(stop - start)
        r = min(ramp, len(seg) // 2)
        if r:
            seg[:r] = np.linspace(0, 1, r)
            seg[-r:] = np.linspace(1, 0, r)
        env[start:stop] = np.maximum(env[start:stop], seg)
    return env


def _decays(n: int, sr: int, onsets: np.ndarray, tau: float) -> np.ndarray:
    """Sum of exponential decays starting at ``onsets`` (seconds), time constant ``tau``."""
    t = np.arange(min(n, max(2, int(8 * tau * sr)))) / sr
    kernel = np.exp(-t / tau) * (1.0 - np.exp(-t / 0.002))
    env = np.zeros(n)
    for i in (np.asarray(onsets) * sr).astype(int):
        if 0 <= i < n:
            stop = min(n, i + len(kernel))
            env[i:stop] += kernel[: stop - i]
    return env


def _rec_air_conditioner(r: np.random.Generator) -> dict:
    return {
        "lo": r.uniform(40, 150),
        "hi": r.uniform(600, 4000),
        "hum_f0": r.uniform(40, 140),
        "hum": r.uniform(0.05, 0.6),
        "tilt": r.uniform(0.8, 2.0),
        "am_rate": r.uniform(0.2, 3.0),
        "am_depth": r.uniform(0.0, 0.25),
    }


def _air_conditioner(p: dict, r: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    x = _noise(r, n, sr, p["lo"], p["hi"])
    x += p["hum"] * _harmonic(p["hum_f0"], sr, n, _rolloff(8, p["tilt"]), r.uniform(0, 6.3))
    return x * (1 + p["am_depth"] * np.sin(2 * np.pi * p["am_rate"] * t + r.uniform(0, 6.3)))


def _rec_car_horn(r: np.random.Generator) -> dict:
    return {
        "f0": r.uniform(300, 650),
        "second": r.uniform(1.15, 1.35) if r.random() < 0.5 else 0.0,
        "tilt": r.uniform(0.3, 1.2),
        "odd": r.uniform(0.0, 1.5),
        "honks": int(r.integers(2, 4)),
        "dur": (r.uniform(0.3, 0.8), r.uniform(1.0, 2.5)),
    }


def _car_horn(p: dict, r: np.random.Generator, n: int, sr: int) -> np.ndarray:
    f0 = p["f0"] * (1 + 0.01 * r.standard_normal())
    amps = _rolloff(14, p["tilt"], p["odd"])
    x = _harmonic(f0, sr, n, amps)
    if p["second"]:
        x += 0.8 * _harmonic(f0 * p["second"], sr, n, amps, 1.0)
    x = np.tanh(3.0 * x / (np.abs(x).max() + 1e-12))
    return x * _segments(r, n, sr, p["honks"], p["dur"])


def _rec_children_playing(r: np.random.Generator) -> dict:
    return {
        "voices": int(r.integers(2, 5)),
        "pitch": r.uniform(250, 450),
        "formant": r.uniform(700, 1600),
        "crowd": r.uniform(0.1, 0.7),
        "tilt": r.uniform(0.6, 1.4),
    }


def _children_playing(p: dict, r: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    x = p["crowd"] * _noise(r, n, sr, 300, 3500)
    h = np.arange(1, 11)
    for _ in range(p["voices"]):
        base = p["pitch"] * r.uniform(0.8, 1.3)
        glide = base * (1 + 0.25 * np.sin(2 * np.pi * r.uniform(0.2, 1.5) * t + r.uniform(0, 6.3)))
        f0 = glide * (1 + 0.03 * np.sin(2 * np.pi * r.uniform(4, 7) * t))
        formant = p["formant"] * r.uniform(0.8, 1.25)
        amps = h ** -p["tilt"] * (1 + 2.5 * np.exp(-(((h * base - formant) / 400.0) ** 2)))
        env = _segments(r, n, sr, int(r.integers(2, 5)), (0.4, 1.8))
        x += r.uniform(0.3, 1.0) * _harmonic(f0, sr, n, amps, r.uniform(0, 6.3)) * env
    return x


def _rec_dog_bark(r: np.random.Generator) -> dict:
    return {
        "f0": r.uniform(350, 900),
        "fall": r.uniform(0.1, 0.5),
        "breath": r.uniform(0.4, 1.2),
        "len": r.uniform(0.12, 0.4),
        "barks": int(r.integers(3, 9)),
        "formant": r.uniform(800, 2500),
    }


def _dog_bark(p: dict, r: np.random.Generator, n: int, sr: int) -> np.ndarray:
    x = np.zeros(n)
    count = max(1, p["barks"] + int(r.integers(-1, 2)))
    length = int(p["len"] * sr)
    tt = np.arange(length) / sr
    h = np.arange(1, 13)
    for _ in range(count):
        start = int(r.uniform(0, max(1e-3, n / sr - p["len"])) * sr)
        seg = min(length, n - start)
        if seg <= 8:
            continue
        f0 = p["f0"] * r.uniform(0.9, 1.1) * (1 - p["fall"] * tt[:seg] / p["len"])
        amps = 1.0 / h * (1 + 2 * np.exp(-(((h * p["f0"] - p["formant"]) / 500.0) ** 2)))
        voiced = _harmonic(f0, sr, seg, amps)
        noisy = _noise(r, seg, sr, 400, 5000)
        env = np.sin(np.pi * tt[:seg] / (seg / sr)) ** 0.5 * np.exp(-3 * tt[:seg] / p["len"])
        x[start : start + seg] += env * (voiced / (np.std(voiced) + 1e-9) + p["breath"] * noisy)
    return x


def _rec_drilling(r: np.random.Generator) -> dict:
    return {
        "f0": r.uniform(700, 2500),
        "tilt": r.uniform(0.6, 1.8),
        "band": (r.uniform(500, 2000), r.uniform(2500, 8000)),
        "noise": r.uniform(0.5, 2.0),
        "am_rate": r.uniform(10, 60),
        "am_depth": r.uniform(0.1, 0.9),
        "pauses": r.random() < 0.4,
    }


def _drilling(p: dict, r: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    f0 = p["f0"] * (1 + 0.02 * np.sin(2 * np.pi * r.uniform(0.3, 2) * t))
    x = _harmonic(f0, sr, n, _rolloff(10, p["tilt"]), r.uniform(0, 6.3))
    x = x / (np.std(x) + 1e-9) + p["noise"] * _noise(r, n, sr, *p["band"])
    x *= 1 + p["am_depth"] * np.sin(2 * np.pi * p["am_rate"] * t)
    if p["pauses"]:
        x *= np.maximum(_segments(r, n, sr, 2, (0.8, 2.5)), 0.05)
    return x


def _rec_engine_idling(r: np.random.Generator) -> dict:
    return {
        "f0": r.uniform(25, 90),
        "tilt": r.uniform(0.5, 1.5),
        "harmonics": int(r.integers(8, 30)),
        "noise": r.uniform(0.2, 1.2),
        "hi": r.uniform(400, 3000),
        "chug": r.uniform(0.1, 0.7),
    }


def _engine_idling(p: dict, r: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    f0 = p["f0"] * (1 + 0.02 * np.sin(2 * np.pi * r.uniform(0.1, 1.0) * t))
    x = _harmonic(f0, sr, n, _rolloff(p["harmonics"], p["tilt"]), r.uniform(0, 6.3))
    x = x / (np.std(x) + 1e-9) + p["noise"] * _noise(r, n, sr, 30, p["hi"])
    return x * (1 + p["chug"] * np.sin(2 * np.pi * p["f0"] / 2 * t))


def _rec_gun_shot(r: np.random.Generator) -> dict:
    return {
        "tau": r.uniform(0.01, 0.15),
        "tail": r.uniform(0.15, 0.9),
        "tail_level": r.uniform(0.05, 0.5),
        "boom": r.uniform(0.2, 1.5),
        "band": (r.uniform(50, 400), r.uniform(2000, 9000)),
        "shots": int(r.integers(1, 5)),
    }


def _gun_shot(p: dict, r: np.random.Generator, n: int, sr: int) -> np.ndarray:
    dur = n / sr
    count = max(1, p["shots"] + int(r.integers(-1, 2)))
    onsets = np.sort(r.uniform(0, max(1e-3, dur * 0.8), count))
    blast = _decays(n, sr, onsets, p["tau"])
    tail = _decays(n, sr, onsets, p["tail"])
    noise = _noise(r, n, sr, *p["band"])
    boom = _noise(r, n, sr, 30, 200)
    return blast * (noise + p["boom"] * boom) + p["tail_level"] * tail * _noise(r, n, sr, 80, 2000)


def _rec_jackhammer(r: np.random.Generator) -> dict:
    return {
        "rate": r.uniform(10, 30),
        "tau": r.uniform(0.005, 0.03),
        "band": (r.uniform(300, 1500), r.uniform(2000, 7000)),
        "hum_f0": r.uniform(60, 300),
        "hum": r.uniform(0.0, 0.5),
        "floor": r.uniform(0.05, 0.4),
        "pauses": r.random() < 0.4,
    }


def _jackhammer(p: dict, r: np.random.Generator, n: int, sr: int) -> np.ndarray:
    dur = n / sr
    period = 1.0 / (p["rate"] * r.uniform(0.95, 1.05))
    onsets = np.arange(r.uniform(0, period), dur, period)
    onsets = onsets + r.normal(0, 0.05 * period, len(onsets))
    env = _decays(n, sr, onsets, p["tau"]) + p["floor"]
    x = env * _noise(r, n, sr, *p["band"])
    x += p["hum"] * _harmonic(p["hum_f0"], sr, n, _rolloff(6, 1.0), r.uniform(0, 6.3))
    if p["pauses"]:
        x *= np.maximum(_segments(r, n, sr, 2, (0.8, 2.5)), 0.05)
    return x


def _rec_siren(r: np.random.Generator) -> dict:
    return {
        "f0": r.uniform(500, 1400),
        "depth": r.uniform(0.15, 0.45),
        "rate": r.uniform(0.15, 5.0),
        "shape": r.uniform(0, 1),
        "tilt": r.uniform(0.8, 2.5),
        "hi": r.uniform(1500, 8000),
    }


def _siren(p: dict, r: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    ph = 2 * np.pi * p["rate"] * t + r.uniform(0, 6.3)
    sweep = (1 - p["shape"]) * np.sin(ph) + p["shape"] * (2 / np.pi) * np.arcsin(np.sin(ph))
    f0 = p["f0"] * (1 + p["depth"] * sweep)
    x = _harmonic(f0, sr, n, _rolloff(8, p["tilt"]))
    return _spectral(x, sr, _band(100, p["hi"], 2))


_SCALE = np.array([0, 2, 3, 5, 7, 9, 10, 12])


def _rec_street_music(r: np.random.Generator) -> dict:
    return {
        "f0": r.uniform(110, 440),
        "note": r.uniform(0.15, 0.6),
        "tilt": r.uniform(0.6, 2.0),
        "odd": r.uniform(0.0, 1.0),
        "chord": int(r.integers(1, 4)),
        "drums": r.uniform(0, 0.8),
        "bpm": r.uniform(80, 160),
    }


def _street_music(p: dict, r: np.random.Generator, n: int, sr: int) -> np.ndarray:
    dur = n / sr
    steps = max(1, int(np.ceil(dur / p["note"])))
    notes = _SCALE[r.integers(0, len(_SCALE), steps)]
    idx = np.minimum((np.arange(n) / sr / p["note"]).astype(int), steps - 1)
    x = np.zeros(n)
    amps = _rolloff(10, p["tilt"], p["odd"])
    for v in range(p["chord"]):
        f0 = p["f0"] * 2 ** ((notes[idx] + (0, 4, 7)[v]) / 12)
        x += _harmonic(f0, sr, n, amps, r.uniform(0, 6.3))
    pos = (np.arange(n) / sr) % p["note"]
    x *= np.exp(-pos / (0.5 * p["note"])) * 0.8 + 0.2
    if p["drums"]:
        beats = np.arange(r.uniform(0, 0.2), dur, 60.0 / p["bpm"])
        x = x / (np.std(x) + 1e-9)
        x += p["drums"] * 3 * _decays(n, sr, beats, 0.05) * _noise(r, n, sr, 40, 6000)
    return x


_GENERATORS = (
    (_rec_air_conditioner, _air_conditioner),
    (_rec_car_horn, _car_horn),
    (_rec_children_playing, _children_playing),
    (_rec_dog_bark, _dog_bark),
    (_rec_drilling, _drilling),
    (_rec_engine_idling, _engine_idling),
    (_rec_gun_shot, _gun_shot),
    (_rec_jackhammer, _jackhammer),
    (_rec_siren, _siren),
    (_rec_street_music, _street_music),
)
# Probability that a slice is shorter than 4 s (the real data: short dog barks and gun shots).
_P_SHORT = (0.05, 0.3, 0.05, 0.4, 0.08, 0.05, 0.5, 0.08, 0.05, 0.08)
# Formats per recording, as in UrbanSound8K (mostly 44.1/48 kHz 16-bit stereo).
_RATES = ((44100, 0.5), (48000, 0.22), (96000, 0.08), (22050, 0.1), (11025, 0.1))
_SUBTYPES = (("PCM_16", 0.55), ("PCM_24", 0.15), ("FLOAT", 0.1), ("PCM_U8", 0.2))
_CHANNELS = ((2, 0.6), (1, 0.4))
# Every format value appears at least once when there are at least this many recordings.
_COVER = (
    (44100, "PCM_16", 2),
    (48000, "PCM_24", 1),
    (96000, "FLOAT", 2),
    (22050, "PCM_U8", 1),
    (11025, "PCM_U8", 2),
    (44100, "FLOAT", 1),
)


def _pick(r: np.random.Generator, options: tuple) -> object:
    values, weights = zip(*options, strict=True)
    return values[int(r.choice(len(values), p=np.array(weights) / sum(weights)))]


def _plan(clips_per_class: int, seed: int) -> pd.DataFrame:
    """The corpus's metadata: recordings, slices, folds, formats (no audio yet)."""
    r = np.random.default_rng([seed, 7919])
    max_slices = int(np.clip(clips_per_class // 3, 1, 8))
    recs = []
    for class_id in range(len(CLASS_NAMES)):
        left = clips_per_class
        while left > 0:
            k = min(left, int(r.integers(1, max_slices + 1)))
            recs.append({"classID": class_id, "n_slices": k})
            left -= k
    n_recs = len(recs)
    fsids = r.choice(np.arange(10_000, 200_000), size=n_recs, replace=False)
    order = r.permutation(n_recs)
    cover = {int(i): _COVER[j] for j, i in enumerate(order[: len(_COVER)])}

    fold_total = np.zeros(11, dtype=int)
    class_fold = np.zeros((len(CLASS_NAMES), 11), dtype=int)
    rows = []
    for i in r.permutation(n_recs):
        rec = recs[i]
        c = rec["classID"]
        tie = r.permutation(10)
        fold = min(FOLDS, key=lambda f: (class_fold[c, f], fold_total[f], tie[f - 1]))
        fold_total[fold] += rec["n_slices"]
        class_fold[c, fold] += rec["n_slices"]
        if int(i) in cover:
            sr, subtype, channels = cover[int(i)]
        else:
            sr = _pick(r, _RATES)
            subtype = _pick(r, _SUBTYPES)
            channels = _pick(r, _CHANNELS)
        salience = 1 if r.random() < 0.65 else 2
        first = int(r.integers(0, 40))
        offset = float(r.uniform(0, 30))
        occurrence = 0
        for s in range(rec["n_slices"]):
            if s and r.random() < 0.1:
                occurrence += 1
            dur = 4.0 if r.random() >= _P_SHORT[c] else float(r.uniform(0.3, 3.9))
            slice_no = first + s
            start = round(offset + 4.0 * s, 6)
            rows.append(
                {
                    "slice_file_name": f"{fsids[i]}-{c}-{occurrence}-{slice_no}.wav",
                    "fsID": int(fsids[i]),
                    "start": start,
                    "end": round(start + dur, 6),
                    "salience": salience,
                    "fold": fold,
                    "classID": c,
                    "class": CLASS_NAMES[c],
                    "rec": int(i),
                    "slice": s,
                    "sr": sr,
                    "subtype": subtype,
                    "channels": channels,
                }
            )
    return pd.DataFrame(rows).sort_values("slice_file_name", kind="stable").reset_index(drop=True)


def _rec_scene(r: np.random.Generator, class_id: int) -> dict:
    """Recording-level scene: background noise, interfering source, SNR, microphone, gain."""
    other = int(r.integers(0, len(CLASS_NAMES) - 1))
    other += other >= class_id
    return {
        "bg_lo": r.uniform(20, 200),
        "bg_hi": r.uniform(1000, 8000),
        "snr_db": r.uniform(3.0, 24.0),
        "other": other if r.random() < 0.35 else None,
        "other_db": r.uniform(-24.0, -10.0),
        "other_params": _GENERATORS[other][0](r),
        "mic_lo": r.uniform(20, 150),
        "mic_hi": r.uniform(5000, 11000),
        "gain": r.uniform(0.15, 0.9),
        "width": r.uniform(0.0, 0.4),
    }


def _synth_slice(row: dict, rec: dict, scene: dict, seed: int) -> np.ndarray:
    """One slice's audio (frames x channels) at the row's sample rate.

    Synthesised at up to 22.05 kHz, then filtered by the recording's microphone curve and
    resampled to the file's rate in one FFT. Lengths are rounded up to FFT-friendly sizes (the
    surplus is cut at the end), so 48/96 kHz files and odd durations cost little more than others.
    """
    r = np.random.default_rng([seed, int(row["classID"]), int(row["rec"]), int(row["slice"]) + 1])
    sr = int(row["sr"])
    base = min(sr, _SYNTH_SR)
    g = math.gcd(sr, base)
    up, down = sr // g, base // g
    dur = float(row["end"] - row["start"])
    n_out = max(16, round(dur * sr))
    k = next_fast_len(-(-max(16, round(dur * base)) // down), real=True)
    n, n_up = down * k, up * k
    c = int(row["classID"])
    fg = _GENERATORS[c][1](rec, r, n, base)
    fg = fg / (np.sqrt(np.mean(fg**2)) + 1e-12)
    bg = _noise(r, n, base, scene["bg_lo"], scene["bg_hi"]) * 10 ** (-scene["snr_db"] / 20)
    if scene["other"] is not None:
        o = _GENERATORS[scene["other"]][1](scene["other_params"], r, n, base)
        bg += o / (np.sqrt(np.mean(o**2)) + 1e-12) * 10 ** (scene["other_db"] / 20)
    x = (fg + bg)[None, :]
    if int(row["channels"]) == 2:
        side = _noise(r, n, base, scene["bg_lo"], scene["bg_hi"]) * 10 ** (-scene["snr_db"] / 20)
        x = np.stack([x[0] + scene["width"] * side, x[0] - scene["width"] * side])
    spec = np.fft.rfft(x, axis=1)
    spec *= _band(scene["mic_lo"], min(scene["mic_hi"], 0.45 * base), 2)(
        np.fft.rfftfreq(n, 1.0 / base)
    )
    if n_up != n:
        padded = np.zeros((x.shape[0], n_up // 2 + 1), dtype=complex)
        keep = min(spec.shape[1], padded.shape[1])
        padded[:, :keep] = spec[:, :keep]
        spec = padded
    y = np.fft.irfft(spec, n=n_up, axis=1).T[:n_out]
    return y * (scene["gain"] / (np.abs(y).max() + 1e-12))


def make_demo_corpus(
    dest: Path,
    *,
    clips_per_class: int = DEFAULT_DEMO_CLIPS_PER_CLASS,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Generate the built-in demo corpus (once) and return its UrbanSound8K-layout root.

    Ten classes named and numbered as UrbanSound8K's, with class-specific synthetic sounds
    (siren sweeps, bark bursts, drilling, engine hum, ...) over shared background noise at varying
    SNR; slices of one synthetic recording (one ``fsID``) share its sound parameters, format and
    fold; formats mix 11.025-96 kHz, 8-bit unsigned, 16-bit, 24-bit and float, mono and stereo,
    and clips shorter than 4 s, as in the real data. The same arguments give byte-identical files
    (with the same numpy on the same kind of machine; the WAV files are written by hand, without
    libsndfile's timestamped PEAK chunk).

    Parameters
    ----------
    dest:
        Directory to generate into; the corpus is the subfolder
        ``UrbanSound8K-demo-v{version}-{clips_per_class}x10-seed{seed}``.
    clips_per_class:
        Clips per class (10 classes).
    seed:
        Seed of the generator.
    progress:
        Show a progress bar while generating.

    Returns
    -------
    Path
        The corpus root (``metadata/UrbanSound8K.csv`` + ``audio/fold1..10``). An existing complete
        corpus is reused; generation writes into a temporary folder renamed into place, so an
        interrupted run never leaves a partial corpus (a killed one may leave a hidden
        ``.UrbanSound8K-demo-*.tmp-*`` folder in ``dest``, which is never read and may be deleted).

    Raises
    ------
    DataError
        ``dest`` cannot be written, or the corpus folder exists without being complete.
    """
    if isinstance(clips_per_class, bool) or int(clips_per_class) != clips_per_class:
        raise ValueError(f"clips_per_class must be an integer, got {clips_per_class!r}")
    if clips_per_class < 1:
        raise ValueError(f"clips_per_class must be >= 1, got {clips_per_class}")
    dest = Path(dest).expanduser()
    root = dest / f"UrbanSound8K-demo-v{DEMO_VERSION}-{clips_per_class}x10-seed{seed}"
    if (root / MANIFEST).is_file() and (root / METADATA).is_file():
        log.info("demo corpus: reusing %s", root)
        return root
    incomplete = DataError(
        f"{root} exists but is not a complete demo corpus (no {MANIFEST}); delete it and run "
        "again, or set data.demo_dir to another folder"
    )
    if root.exists() and any(root.iterdir()):
        raise incomplete
    try:
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=dest))
    except OSError as exc:
        raise DataError(
            f"cannot create the demo corpus in {dest} ({exc.strerror}); set data.demo_dir to a "
            "writable folder"
        ) from None
    try:
        _generate(tmp, clips_per_class=clips_per_class, seed=seed, progress=progress)
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / MANIFEST).is_file():  # not a concurrent generator's finished copy
                raise incomplete from None
            log.info("demo corpus: another process finished %s first; using it", root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _write_recordings(out: Path, rows: list[dict], seed: int) -> int:
    """Synthesise and write the slices in ``rows`` (whole recordings); returns how many."""
    recs: dict[int, tuple[dict, dict]] = {}
    for row in rows:
        i, c = int(row["rec"]), int(row["classID"])
        if i not in recs:
            r = np.random.default_rng([seed, c, i, 0])
            recs[i] = (_GENERATORS[c][0](r), _rec_scene(r, c))
        audio = _synth_slice(row, *recs[i], seed)
        path = out / "audio" / f"fold{row['fold']}" / row["slice_file_name"]
        path.write_bytes(_wav_bytes(audio, int(row["sr"]), str(row["subtype"])))
    return len(rows)


def _generate(out: Path, *, clips_per_class: int, seed: int, progress: bool) -> None:
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    plan = _plan(clips_per_class, seed)
    for f in FOLDS:
        (out / "audio" / f"fold{f}").mkdir(parents=True)
    (out / "metadata").mkdir()
    # whole recordings per task: each slice's audio depends only on (seed, recording, slice),
    # so the files are the same whichever worker writes them
    rows = plan.sort_values(["rec", "slice"]).to_dict("records")
    recordings: dict[int, list[dict]] = {}
    for row in rows:
        recordings.setdefault(int(row["rec"]), []).append(row)
    n_tasks = max(1, min(64, len(rows) // 16, len(recordings)))
    groups = list(recordings.values())
    chunks = [
        [row for g in part for row in groups[g]]
        for part in np.array_split(np.arange(len(groups)), n_tasks)
    ]
    workers = max(1, min(os.cpu_count() or 1, len(rows) // _MIN_CLIPS_PER_WORKER))
    log.info(
        "demo corpus: generating %d clips (%d per class, seed %d) into %s with %d worker(s)",
        len(plan),
        clips_per_class,
        seed,
        out,
        workers,
    )
    with tqdm(total=len(rows), desc="demo corpus", unit="clip", disable=not progress) as bar:
        if workers == 1:
            for chunk in chunks:
                bar.update(_write_recordings(out, chunk, seed))
        else:
            parallel = Parallel(n_jobs=workers, return_as="generator_unordered")
            for done in parallel(delayed(_write_recordings)(out, ch, seed) for ch in chunks):
                bar.update(done)
    plan[list(CSV_COLUMNS)].to_csv(out / METADATA, index=False, lineterminator="\n")
    manifest = {
        "generator": "urbansound.data.make_demo_corpus",
        "version": DEMO_VERSION,
        "clips_per_class": clips_per_class,
        "seed": seed,
        "n_clips": len(plan),
        "n_recordings": int(plan["fsID"].nunique()),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
