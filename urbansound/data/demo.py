"""The built-in demo corpus: synthetic urban sounds in UrbanSound8K's exact layout.

This module holds the corpus's plan (recordings, slices, folds, file formats), the WAV writer
and :func:`make_demo_corpus`; the sound of one slice is synthesised by
:mod:`urbansound.data.demo_sounds`.

:func:`make_demo_corpus` generates (once, deterministically) ten classes named and numbered as
UrbanSound8K's, written as ``metadata/UrbanSound8K.csv`` plus ``audio/fold1..fold10``, so that
:func:`urbansound.data.index.load_index` reads it like the real dataset. Slices of one synthetic
recording (one ``fsID``) share their sound parameters, format and fold, as in the real folds
(whose rules :mod:`urbansound.data.cv` quotes). Formats vary per recording as UrbanSound8K's do:
its files keep "the sampling rate, bit depth, and number of channels" of the recordings uploaded
to Freesound (the dataset's README); the mix of rates and formats below is an approximation, not
a measurement. Every sound is synthesised by this package: the corpus holds no third-party audio.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from urbansound.data.demo_sounds import draw_recording, synth_slice
from urbansound.data.layout import CLASS_NAMES, CSV_COLUMNS, FOLDS, METADATA
from urbansound.errors import DataError
from urbansound.utils.files import public_mode, write_json
from urbansound.utils.progress import progress_bar

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_DEMO_CLIPS_PER_CLASS", "DEMO_VERSION", "make_demo_corpus"]

# --------------------------------------------------------------------------------------------
# The demo corpus: WAV writing

DEMO_VERSION = 2
DEFAULT_DEMO_CLIPS_PER_CLASS = 100
MANIFEST = "demo.json"
_MIN_CLIPS_PER_WORKER = 150  # below this, worker start-up costs more than it saves
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
# The demo corpus: plan (recordings, slices, folds, formats)

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
        public_mode(tmp, directory=True)  # the corpus root, once renamed: readable by all
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
            recs[i] = draw_recording(r, c)
        audio = synth_slice(row, *recs[i], seed)
        path = out / "audio" / f"fold{row['fold']}" / row["slice_file_name"]
        path.write_bytes(_wav_bytes(audio, int(row["sr"]), str(row["subtype"])))
    return len(rows)


def _generate(out: Path, *, clips_per_class: int, seed: int, progress: bool) -> None:
    from joblib import Parallel, delayed

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
    mode = None if progress else "none"
    with progress_bar(total=len(rows), desc="demo corpus", unit="clip", mode=mode) as bar:
        if workers == 1:
            for chunk in chunks:
                bar.update(_write_recordings(out, chunk, seed))
        else:
            parallel = Parallel(n_jobs=workers, return_as="generator_unordered")
            for done in parallel(delayed(_write_recordings)(out, ch, seed) for ch in chunks):
                bar.update(done)
    plan[list(CSV_COLUMNS)].to_csv(out / METADATA, index=False, lineterminator="\n")
    manifest = {
        "generator": "urbansound.data.demo.make_demo_corpus",
        "version": DEMO_VERSION,
        "clips_per_class": clips_per_class,
        "seed": seed,
        "n_clips": len(plan),
        "n_recordings": int(plan["fsID"].nunique()),
    }
    write_json(out / MANIFEST, manifest)
