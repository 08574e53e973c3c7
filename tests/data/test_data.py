"""The dataset index: the real partial UrbanSound8K copy, CSV validation, dataset resolution."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from urbansound.config.settings import DataSettings
from urbansound.data.index import load_index
from urbansound.data.layout import CLASS_NAMES, CSV_COLUMNS
from urbansound.data.source import resolve_dataset
from urbansound.errors import DataError

# The partial copy in ../shared/data/UrbanSound8K: the full CSV, 164 clips present, fold 2 empty.
REAL_PRESENT_PER_FOLD = {1: 142, 2: 0, 3: 2, 4: 3, 5: 4, 6: 1, 7: 3, 8: 2, 9: 4, 10: 3}
REAL_LISTED = 8732


def _present_per_fold(root: Path) -> dict[int, int]:
    """Count clips on disk that the CSV lists, independently of load_index."""
    df = pd.read_csv(root / "metadata" / "UrbanSound8K.csv")
    counts = dict.fromkeys(range(1, 11), 0)
    for name, fold in zip(df["slice_file_name"], df["fold"], strict=True):
        counts[int(fold)] += (root / "audio" / f"fold{fold}" / name).is_file()
    return counts


def test_real_sample_skip_indexes_present_clips(real_root: Path, caplog) -> None:
    expected = _present_per_fold(real_root)
    with caplog.at_level(logging.WARNING, logger="urbansound.data.index"):
        index = load_index(real_root, missing="skip")
    assert index.name == "urbansound8k"
    assert index.root == real_root.resolve()
    assert index.n_listed == REAL_LISTED
    counts = index.clips["fold"].value_counts().to_dict()
    assert {f: counts.get(f, 0) for f in range(1, 11)} == expected
    if real_root == Path(__file__).resolve().parents[3] / "shared" / "data" / "UrbanSound8K":
        assert expected == REAL_PRESENT_PER_FOLD
    assert len(index.clips) == sum(expected.values())
    assert len(index.missing) == REAL_LISTED - len(index.clips)
    assert index.empty_folds == [f for f, n in expected.items() if n == 0]
    assert index.class_names == list(CLASS_NAMES)
    assert list(index.clips.columns) == [*CSV_COLUMNS, "path"]
    for path, fold, name in zip(
        index.clips["path"], index.clips["fold"], index.clips["slice_file_name"], strict=True
    ):
        assert Path(path).is_absolute() and Path(path).is_file()
        assert Path(path) == real_root.resolve() / "audio" / f"fold{fold}" / name
    first = index.missing[0]
    assert first.startswith("fold") and first.endswith(".wav")
    fold, name = first.split("/")
    assert not (real_root / "audio" / fold / name).exists()
    text = caplog.text
    assert f"{len(index.missing)} of {REAL_LISTED} clips" in text
    assert first in text
    if index.empty_folds:
        assert "left out of cross-validation" in text


def test_real_sample_error_mode_says_how_to_go_on(real_root: Path) -> None:
    skip = load_index(real_root, missing="skip")
    with pytest.raises(DataError) as err:
        load_index(real_root, missing="error")
    msg = str(err.value)
    assert "\n" not in msg
    assert f"{len(skip.missing)} of {REAL_LISTED} clips" in msg
    assert str(real_root.resolve() / "metadata" / "UrbanSound8K.csv") in msg
    for name in skip.missing[:5]:
        assert name in msg
    assert skip.missing[5] not in msg
    assert "data.missing=skip" in msg
    assert f"{len(skip.clips)} present clips" in msg


def _copy_tiny(src: Path, dst: Path, n_per_class: int = 1) -> Path:
    """A complete UrbanSound8K-layout folder with a few of ``src``'s clips (all present)."""
    df = pd.read_csv(src / "metadata" / "UrbanSound8K.csv")
    df = df.groupby("classID").head(n_per_class).reset_index(drop=True)
    (dst / "metadata").mkdir(parents=True)
    for name, fold in zip(df["slice_file_name"], df["fold"], strict=True):
        (dst / "audio" / f"fold{fold}").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / "audio" / f"fold{fold}" / name, dst / "audio" / f"fold{fold}" / name)
    df.to_csv(dst / "metadata" / "UrbanSound8K.csv", index=False)
    return dst


@pytest.fixture
def tiny_root(demo_root: Path, tmp_path: Path) -> Path:
    return _copy_tiny(demo_root, tmp_path / "tiny")


def test_complete_folder_has_no_missing_and_error_mode_passes(tiny_root: Path) -> None:
    index = load_index(tiny_root, missing="error", name="demo")
    assert index.name == "demo"
    assert index.missing == []
    assert len(index.clips) == index.n_listed == 10
    assert sorted(index.clips["classID"]) == list(range(10))
    present = set(index.clips["fold"])
    assert index.empty_folds == [f for f in range(1, 11) if f not in present]


def test_missing_file_in_both_modes(tiny_root: Path) -> None:
    df = pd.read_csv(tiny_root / "metadata" / "UrbanSound8K.csv")
    gone = f"fold{df['fold'][3]}/{df['slice_file_name'][3]}"
    (tiny_root / "audio" / gone).unlink()
    with pytest.raises(DataError, match="1 of 10 clips") as err:
        load_index(tiny_root)
    assert gone in str(err.value)
    assert "data.missing=skip" in str(err.value)
    index = load_index(tiny_root, missing="skip")
    assert index.missing == [gone]
    assert len(index.clips) == 9
    assert df["slice_file_name"][3] not in set(index.clips["slice_file_name"])
    assert index.class_names == list(CLASS_NAMES)  # from the CSV, also for the absent clip


def test_every_fold_empty_is_an_error_even_when_skipping(tiny_root: Path) -> None:
    shutil.rmtree(tiny_root / "audio")
    with pytest.raises(DataError, match="none of the 10 clips"):
        load_index(tiny_root, missing="skip")


def _edit_csv(root: Path, edit) -> Path:
    csv = root / "metadata" / "UrbanSound8K.csv"
    df = pd.read_csv(csv)
    df = edit(df)
    df.to_csv(csv, index=False)
    return csv


def _row_of(df: pd.DataFrame, class_id: int) -> int:
    return int((df["classID"] == class_id).to_numpy().nonzero()[0][0])


def _set(df: pd.DataFrame, row: int, col: str, value) -> pd.DataFrame:
    df[col] = df[col].astype(object)
    df.loc[row, col] = value
    return df


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda df: df.drop(columns=["salience"]), "missing column(s) salience"),
        (lambda df: df.drop(columns=["fold", "class"]), "missing column(s) fold, class"),
        (lambda df: _set(df, _row_of(df, 2), "class", "siren"), "classID and class disagree"),
        (lambda df: _set(df, _row_of(df, 2), "classID", 8), "classID and class disagree"),
        (lambda df: _set(df, 2, "fold", 11), "fold must be 1-10"),
        (lambda df: _set(df, 2, "fold", 0), "fold must be 1-10"),
        (lambda df: _set(df, 2, "fold", "x"), "column fold must hold integers"),
        (lambda df: _set(df, 2, "classID", 2.5), "column classID must hold integers"),
        (lambda df: _set(df, 2, "start", "soon"), "column start must hold numbers"),
        (lambda df: pd.concat([df, df.iloc[[0]]]), "duplicate slice_file_name"),
        (lambda df: df[df["classID"] != 4], "no row has classID 4"),
        (lambda df: df.iloc[0:0], "lists no clips"),
    ],
)
def test_csv_problems_name_the_file(tiny_root: Path, edit, expected: str) -> None:
    csv = _edit_csv(tiny_root, edit)
    with pytest.raises(DataError) as err:
        load_index(tiny_root, missing="skip")
    msg = str(err.value)
    assert msg.startswith(str(csv.resolve()))
    assert expected in msg
    assert "\n" not in msg


def test_class_disagreement_names_both_labels(tiny_root: Path) -> None:
    _edit_csv(tiny_root, lambda d: _set(d, _row_of(d, 2), "class", "siren"))
    with pytest.raises(DataError, match="class siren has classIDs 2, 8"):
        load_index(tiny_root)
    _edit_csv(tiny_root, lambda d: _set(d, _row_of(d, 8), "class", "car_horn"))
    with pytest.raises(DataError, match="class car_horn has classIDs 1, 8"):
        load_index(tiny_root)


def test_class_id_with_two_names_is_reported(demo_root: Path, tmp_path: Path) -> None:
    root = _copy_tiny(demo_root, tmp_path / "tiny", n_per_class=2)
    _edit_csv(root, lambda d: _set(d, _row_of(d, 2), "class", "street_noise"))
    with pytest.raises(DataError, match="classID 2 is labelled children_playing, street_noise"):
        load_index(root)


def test_unreadable_csv_and_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist; set data\.root"):
        load_index(tmp_path / "nowhere")
    (tmp_path / "metadata").mkdir()
    with pytest.raises(DataError) as err:
        load_index(tmp_path)
    assert str(tmp_path / "metadata" / "UrbanSound8K.csv") in str(err.value)
    assert "not found" in str(err.value)
    (tmp_path / "metadata" / "UrbanSound8K.csv").write_bytes(b"\xff\xfe\x00garbage\x00\xff")
    with pytest.raises(DataError, match=r"cannot read it as a CSV|missing column"):
        load_index(tmp_path)


def _edit_cell(root: Path, row: int, col: str, text: str) -> Path:
    """Overwrite one cell of the CSV as raw text (pandas would reformat or re-quote it)."""
    csv = root / "metadata" / "UrbanSound8K.csv"
    lines = csv.read_text().splitlines()
    fields = lines[row + 1].split(",")
    fields[list(CSV_COLUMNS).index(col)] = text
    lines[row + 1] = ",".join(fields)
    csv.write_text("\n".join(lines) + "\n")
    return csv


@pytest.mark.parametrize(
    ("col", "text", "expected"),
    [
        ("fold", "inf", "column fold must hold integers; row 4 ({name}) has 'inf'"),
        ("fold", "1e30", "column fold must hold integers; row 4 ({name}) has '1e30'"),
        ("fold", "", "column fold must hold integers; row 4 ({name}) has an empty cell"),
        ("fold", "nan", "column fold must hold integers; row 4 ({name}) has 'nan'"),
        ("classID", "-inf", "column classID must hold integers; row 4 ({name}) has '-inf'"),
        ("fsID", "1e300", "column fsID must hold integers; row 4 ({name}) has '1e300'"),
        ("start", "inf", "column start must hold numbers; row 4 ({name}) has 'inf'"),
        ("end", "", "column end must hold numbers; row 4 ({name}) has an empty cell"),
        ("class", "", "column class is empty in row 4"),
        ("slice_file_name", " ", "column slice_file_name is empty in row 4"),
    ],
)
def test_non_finite_huge_or_empty_cells_are_named(
    tiny_root: Path, col: str, text: str, expected: str
) -> None:
    # Before: inf in fold was a pandas IntCastingNaNError traceback, 1e30 became fold
    # -9223372036854775808 in the message, an empty cell was shown as np.float64(nan).
    name = pd.read_csv(tiny_root / "metadata" / "UrbanSound8K.csv")["slice_file_name"][2]
    csv = _edit_cell(tiny_root, 2, col, text)
    with pytest.raises(DataError) as err:
        load_index(tiny_root, missing="skip")
    msg = str(err.value)
    assert msg.startswith(str(csv.resolve())) and "\n" not in msg
    assert expected.format(name=name) in msg


def test_huge_class_id_is_a_gap_error_without_exhausting_memory(tiny_root: Path) -> None:
    # Before: the gap check built range(classID + 1): 10**11 integers, killed by the OOM killer.
    # Checked in a child process limited to 2 GiB, so a regression fails instead of taking the
    # machine's memory.
    import resource
    import subprocess
    import sys

    _edit_csv(tiny_root, lambda d: _set(d, _row_of(d, 9), "classID", 99999999999))
    code = (
        "import sys; from urbansound.data.index import load_index\n"
        "from urbansound.errors import DataError\n"
        "try: load_index(sys.argv[1], missing='skip')\n"
        "except DataError as e: print(e)\n"
    )

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    proc = subprocess.run(
        [sys.executable, "-c", code, str(tiny_root)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "classIDs must run 0..99999999999 without gaps; no row has classID 9, ..." in (
        proc.stdout
    )


@pytest.mark.parametrize("where", ["first", "middle"])
def test_row_with_more_fields_than_the_header_is_named(tiny_root: Path, where: str) -> None:
    csv = tiny_root / "metadata" / "UrbanSound8K.csv"
    lines = csv.read_text().splitlines()
    at = 1 if where == "first" else 5
    lines[at] += ","  # a trailing comma
    csv.write_text("\n".join(lines) + "\n")
    # Before: on the first row pandas took slice_file_name as the index and shifted every
    # column ("column fsID must hold integers ... has np.float64(0.0)"); in the middle its
    # ParserError message ended in a newline, so the error was two lines.
    with pytest.raises(DataError) as err:
        load_index(tiny_root, missing="skip")
    msg = str(err.value)
    assert msg.startswith(str(csv.resolve())) and "\n" not in msg
    assert f"line {at + 1}" in msg and "9" in msg


def test_csv_that_is_not_utf8_says_so(tiny_root: Path) -> None:
    csv = tiny_root / "metadata" / "UrbanSound8K.csv"
    csv.write_bytes(csv.read_text().replace(".wav", "\u00e9.wav", 1).encode("latin-1"))
    with pytest.raises(DataError, match=r"it is not UTF-8 text .*save it as UTF-8"):
        load_index(tiny_root, missing="skip")


@pytest.mark.parametrize(
    "transform",
    [
        lambda b: b"\xef\xbb\xbf" + b,  # a BOM (Excel's "CSV UTF-8")
        lambda b: b.replace(b"\n", b"\r\n"),  # Windows line endings
        lambda b: b.replace(b",", b", ", 7),  # spaces after the header's commas
        lambda b: b.replace(b"\n", b"\n\n"),  # blank lines
    ],
    ids=["bom", "crlf", "header-spaces", "blank-lines"],
)
def test_harmless_csv_variants_read_the_same(tiny_root: Path, transform) -> None:
    want = load_index(tiny_root)
    csv = tiny_root / "metadata" / "UrbanSound8K.csv"
    csv.write_bytes(transform(csv.read_bytes()))
    got = load_index(tiny_root)
    pd.testing.assert_frame_equal(got.clips, want.clips)
    assert got.class_names == want.class_names


def test_missing_mode_is_checked(tiny_root: Path) -> None:
    with pytest.raises(ValueError, match="missing must be one of"):
        load_index(tiny_root, missing="ignore")


# --------------------------------------------------------------------------------------------
# resolve_dataset: data.root > $URBANSOUND8K > ./data/UrbanSound8K > the demo corpus


def _fake_dataset(path: Path) -> Path:
    (path / "metadata").mkdir(parents=True)
    (path / "metadata" / "UrbanSound8K.csv").write_text(",".join(CSV_COLUMNS) + "\n")
    return path


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("URBANSOUND8K", raising=False)
    return {
        "root": _fake_dataset(tmp_path / "given"),
        "env": _fake_dataset(tmp_path / "from_env"),
        "local": cwd / "data" / "UrbanSound8K",
        "demo": tmp_path / "demo",
    }


def test_resolve_prefers_root_then_env_then_local(
    places: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    _fake_dataset(places["local"])
    monkeypatch.setenv("URBANSOUND8K", str(places["env"]))
    with caplog.at_level(logging.INFO, logger="urbansound.data.source"):
        assert resolve_dataset(DataSettings(root=str(places["root"]))) == (
            places["root"].resolve(),
            "urbansound8k",
        )
    assert "from data.root" in caplog.text
    assert resolve_dataset(DataSettings()) == (places["env"].resolve(), "urbansound8k")
    monkeypatch.delenv("URBANSOUND8K")
    assert resolve_dataset(DataSettings()) == (places["local"].resolve(), "urbansound8k")
    assert not places["demo"].exists()


def test_resolve_falls_back_to_the_demo_corpus(
    places: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    settings = DataSettings(demo_dir=str(places["demo"]), demo_clips_per_class=1)
    with caplog.at_level(logging.WARNING, logger="urbansound.data.source"):
        root, name = resolve_dataset(settings)
    assert name == "demo"
    assert root.parent == places["demo"].resolve()
    assert "DEMO corpus" in caplog.text
    index = load_index(root, name=name)
    assert len(index.clips) == index.n_listed == 10
    # a relative demo_dir is relative to the working directory, and generated once
    mtime = (root / "metadata" / "UrbanSound8K.csv").stat().st_mtime_ns
    assert resolve_dataset(settings) == (root, "demo")
    assert (root / "metadata" / "UrbanSound8K.csv").stat().st_mtime_ns == mtime
    rel_root, _ = resolve_dataset(DataSettings(demo_dir="out/demo", demo_clips_per_class=1))
    assert rel_root.parent == (Path.cwd() / "out" / "demo").resolve()


def test_resolve_explicit_root_that_does_not_exist_is_an_error(
    places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = DataSettings(root=str(places["root"] / "typo"), demo_dir=str(places["demo"]))
    with pytest.raises(DataError, match=r"data.root=.*typo does not exist"):
        resolve_dataset(settings)
    monkeypatch.setenv("URBANSOUND8K", str(places["env"] / "typo"))
    with pytest.raises(DataError, match=r"\$URBANSOUND8K=.*typo does not exist"):
        resolve_dataset(DataSettings(demo_dir=str(places["demo"])))
    assert not places["demo"].exists()


# Recording leakage: slices of one recording (fsID) in two folds (issue 11 item 7)
REAL_LEAKY = {77751: [2, 7], 106905: [1, 8], 132016: [1, 4], 176638: [1, 4], 180937: [1, 9]}


def test_real_csv_recordings_split_across_folds_are_named(real_root: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="urbansound.data.index"):
        index = load_index(real_root, missing="skip")
    assert {r["fsID"]: r["folds"] for r in index.leaky_recordings} == REAL_LEAKY
    (line,) = [r.getMessage() for r in caplog.records if "more than one fold" in r.getMessage()]
    assert "5 recording(s)" in line
    for fs, folds in REAL_LEAKY.items():
        assert f"fsID {fs} in folds {folds[0]}, {folds[1]}" in line


def test_leaky_recording_is_a_warning_not_an_error(tiny_root: Path, caplog) -> None:
    csv = tiny_root / "metadata" / "UrbanSound8K.csv"
    df = pd.read_csv(csv)
    assert load_index(tiny_root).leaky_recordings == []  # the demo keeps recordings in one fold
    # two clips of different folds now claim one recording; a third keeps its own fold
    moved = df.index[df["fold"] != df["fold"][0]][0]
    df.loc[moved, "fsID"] = df["fsID"][0]
    df.to_csv(csv, index=False)
    with caplog.at_level(logging.WARNING, logger="urbansound.data.index"):
        index = load_index(tiny_root)
    folds = sorted(int(f) for f in (df["fold"][0], df["fold"][moved]))
    assert index.leaky_recordings == [{"fsID": int(df["fsID"][0]), "folds": folds}]
    assert f"fsID {df['fsID'][0]} in folds {folds[0]}, {folds[1]}" in caplog.text
    assert len(index.clips) == 10


def test_paths_too_long_are_one_line_data_errors(
    places: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Path.is_dir() raises ENAMETOOLONG (pathlib ignores only ENOENT, ENOTDIR, EBADF, ELOOP):
    # before, data.root, $URBANSOUND8K or data.demo_dir with a component over 255 bytes was an
    # OSError traceback.
    long = tmp_path / ("y" * 300)
    with pytest.raises(DataError, match=r"data\.root=.* does not exist"):
        resolve_dataset(DataSettings(root=str(long)))
    monkeypatch.setenv("URBANSOUND8K", str(long))
    with pytest.raises(DataError, match=r"\$URBANSOUND8K=.* does not exist"):
        resolve_dataset(DataSettings())
    monkeypatch.delenv("URBANSOUND8K")
    with pytest.raises(DataError, match=r"data\.demo_dir=.*File name too long.*writable folder"):
        resolve_dataset(DataSettings(demo_dir=str(long / "demo"), demo_clips_per_class=1))
    with pytest.raises(DataError, match="does not exist"):
        load_index(long)
