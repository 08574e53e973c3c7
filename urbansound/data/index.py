"""The dataset index: UrbanSound8K's metadata, folds, validation and recording-leakage check.

UrbanSound8K is a folder with ``metadata/UrbanSound8K.csv`` (one row per clip: ``slice_file_name,
fsID,start,end,salience,fold,classID,class``) and ``audio/fold1`` .. ``audio/fold10``.
:func:`load_index` checks every row of the metadata, resolves each clip's path and says which
clips are missing and which folds are empty.

The dataset's folds keep the slices of one recording (one ``fsID``) together, which is why its
authors ask for their 10 folds and never a reshuffle (quoted where the splits are built,
:mod:`urbansound.data.cv`). Where the metadata breaks that (the real CSV does for 5 recordings),
:func:`load_index` warns, naming the recordings and folds, and the index lists them in
``leaky_recordings`` (a warning, not an error: the official folds stay usable).

The index only reads and checks; which folder a run reads is decided by
:mod:`urbansound.data.source`, and the dataset's class names, columns and folds are constants of
:mod:`urbansound.data.layout`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from urbansound.config.settings import MISSING_MODES
from urbansound.data.layout import CSV_COLUMNS, FOLDS, METADATA
from urbansound.errors import DataError

log = logging.getLogger(__name__)

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
    leaky_recordings:
        Recordings whose slices the CSV puts in more than one fold, as
        ``{"fsID": int, "folds": [int, ...]}`` sorted by fsID (from the whole CSV): their
        slices sit in train and test of some splits.
    """

    name: str
    root: Path
    clips: pd.DataFrame
    n_listed: int
    missing: list[str] = field(default_factory=list)
    empty_folds: list[int] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    leaky_recordings: list[dict[str, object]] = field(default_factory=list)


def _first_long_row(csv: Path) -> tuple[int, int, int]:
    """``(line, fields, header fields)`` of the first row with more fields than the header."""
    import csv as csv_module

    with open(csv, newline="", encoding="utf-8-sig") as fh:
        reader = csv_module.reader(fh)
        width = len(next(reader, []))
        for row in reader:
            if len(row) > width:
                return reader.line_num, len(row), width
    return 0, 0, width


def _numbers(df: pd.DataFrame, col: str, csv: Path, *, integer: bool) -> pd.Series:
    """Column ``col`` (raw text) as numbers, or a DataError naming the first bad row.

    Every value must be finite, and with ``integer`` a whole number small enough to be exact
    (|x| <= 2**53): an empty cell, ``nan``, ``inf`` or ``1e30`` in ``fold`` is named, never cast
    into a wrong integer or a pandas traceback.
    """
    raw = df[col].str.strip()
    num = pd.to_numeric(raw, errors="coerce").astype(np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(num)
        if integer:
            bad |= (num != np.round(num)) | (num.abs() > 2.0**53)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        value = raw.iloc[i]
        shown = "an empty cell" if value == "" else repr(value)
        raise DataError(
            f"{csv}: column {col} must hold {'integers' if integer else 'numbers'}; "
            f"row {i + 2} ({df['slice_file_name'].iloc[i]}) has {shown}"
        )
    return num.astype(np.int64) if integer else num


def _read_metadata(csv: Path) -> pd.DataFrame:
    """Read and check ``metadata/UrbanSound8K.csv``; every problem is a DataError naming ``csv``."""
    import warnings

    try:
        with warnings.catch_warnings():
            # A row longer than the header: pandas would silently take its first field as the
            # index (shifting every column) or, with index_col=False, drop the extra fields.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(csv, dtype=str, keep_default_na=False, index_col=False)
    except pd.errors.ParserWarning:
        line, fields, width = _first_long_row(csv)
        raise DataError(
            f"{csv}: line {line} has {fields} fields, the header {width}; remove the extra "
            "fields (a trailing comma?) or restore the file from the UrbanSound8K archive"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{csv}: cannot read it as a CSV: it is not UTF-8 text (byte "
            f"{exc.object[exc.start : exc.start + 1].hex()} at offset {exc.start}); save it as "
            "UTF-8 or restore the file from the UrbanSound8K archive"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as exc:
        reason = " ".join(str(exc).split())  # pandas' C parser ends its message with a newline
        raise DataError(
            f"{csv}: cannot read it as a CSV ({type(exc).__name__}: {reason}); "
            "restore the file from the UrbanSound8K archive"
        ) from None
    df.columns = [str(c).strip() for c in df.columns]
    absent = [c for c in CSV_COLUMNS if c not in df.columns]
    if absent:
        raise DataError(
            f"{csv}: missing column(s) {', '.join(absent)}; UrbanSound8K's metadata has the "
            f"columns {','.join(CSV_COLUMNS)}"
        )
    if df.empty:
        raise DataError(f"{csv}: lists no clips; point data.root at a complete UrbanSound8K copy")
    df = df[list(CSV_COLUMNS) + [c for c in df.columns if c not in CSV_COLUMNS]].copy()

    for col in ("slice_file_name", "class"):
        empty = df[col].str.strip() == ""
        if empty.any():
            i = int(np.flatnonzero(empty.to_numpy())[0])
            raise DataError(f"{csv}: column {col} is empty in row {i + 2}; fill it in")
    for col in ("fsID", "salience", "fold", "classID"):
        df[col] = _numbers(df, col, csv, integer=True)
    for col in ("start", "end"):
        df[col] = _numbers(df, col, csv, integer=False)

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
    ids = set(names_per_id.index)
    if max(ids) >= len(ids):
        # Distinct IDs >= 0 that are not 0..n-1 miss one below n: listed without building
        # range(max + 1), which a typo such as classID 99999999999 would make huge.
        gaps = [i for i in range(len(ids)) if i not in ids]
        raise DataError(
            f"{csv}: classIDs must run 0..{int(df['classID'].max())} without gaps; "
            f"no row has classID {', '.join(map(str, gaps[:_SHOW]))}"
            + (", ..." if int(max(ids)) + 1 - len(ids) > len(gaps[:_SHOW]) else "")
        )
    dup = df["slice_file_name"].duplicated()
    if dup.any():
        raise DataError(
            f"{csv}: {int(dup.sum())} duplicate slice_file_name row(s), e.g. "
            f"{df['slice_file_name'][dup].iloc[0]}; each clip must be listed once"
        )
    return df


def leaky_recordings(df: pd.DataFrame) -> list[dict[str, object]]:
    """Recordings (``fsID``) whose slices ``df`` puts in more than one fold.

    Returns ``[{"fsID": int, "folds": [int, ...]}, ...]`` sorted by fsID, folds ascending.
    """
    folds = df.groupby("fsID")["fold"].unique()
    return [
        {"fsID": int(fs), "folds": sorted(int(f) for f in fl)}
        for fs, fl in folds.items()
        if len(fl) > 1
    ]


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
    if not os.path.isdir(root):  # os.path: never raises (a name too long is just absent)
        raise DataError(
            f"dataset folder {root} does not exist; set data.root (or $URBANSOUND8K) to an "
            "UrbanSound8K folder containing metadata/UrbanSound8K.csv and audio/fold1..fold10"
        )
    csv = root / METADATA
    if not os.path.isfile(csv):
        raise DataError(
            f"{csv} not found: {root} is not an UrbanSound8K folder; point data.root at the "
            "folder that contains metadata/UrbanSound8K.csv and audio/fold1..fold10"
        )
    df = _read_metadata(csv)
    n_listed = len(df)
    leaks = leaky_recordings(df)
    if leaks:
        shown = (
            "; ".join(
                f"fsID {r['fsID']} in folds {', '.join(map(str, r['folds']))}"  # type: ignore[call-overload]
                for r in leaks[:_SHOW]
            )
            + ("; ..." if len(leaks) > _SHOW else "")
        )
        log.warning(
            "%s: %d recording(s) have slices in more than one fold (%s); their slices sit in "
            "train and test of some splits, so fold accuracy is slightly optimistic",
            csv,
            len(leaks),
            shown,
        )
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
        leaky_recordings=leaks,
    )
