"""The built-in demo corpus: layout, determinism, format mix, recording-level folds."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from urbansound.data.demo import make_demo_corpus
from urbansound.data.index import load_index
from urbansound.data.layout import CLASS_NAMES, CSV_COLUMNS
from urbansound.errors import DataError

NAME = re.compile(r"^(\d+)-(\d)-(\d+)-(\d+)\.wav$")


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def demo(demo_root: Path) -> pd.DataFrame:
    index = load_index(demo_root, name="demo")
    info = [sf.info(p) for p in index.clips["path"]]
    return index.clips.assign(
        samplerate=[i.samplerate for i in info],
        subtype=[i.subtype for i in info],
        channels=[i.channels for i in info],
        frames=[i.frames for i in info],
        seconds=[i.duration for i in info],
    )


def test_layout_and_metadata_match_urbansound8k(demo_root: Path, demo: pd.DataFrame) -> None:
    assert (demo_root / "metadata" / "UrbanSound8K.csv").is_file()
    assert sorted(p.name for p in (demo_root / "audio").iterdir()) == sorted(
        f"fold{f}" for f in range(1, 11)
    )
    csv = pd.read_csv(demo_root / "metadata" / "UrbanSound8K.csv")
    assert tuple(csv.columns) == CSV_COLUMNS
    assert len(demo) == len(csv) == 60
    assert demo["classID"].value_counts().to_dict() == dict.fromkeys(range(10), 6)
    assert dict(zip(demo["classID"], demo["class"], strict=True)) == dict(enumerate(CLASS_NAMES))
    assert sorted(demo["fold"].unique()) == list(range(1, 11))  # every fold has clips
    for row in demo.itertuples():
        fsid, class_id, _occurrence, _slice = NAME.match(row.slice_file_name).groups()
        assert (int(fsid), int(class_id)) == (row.fsID, row.classID)
        assert Path(row.path).parent.name == f"fold{row.fold}"
        assert row.salience in (1, 2)
        assert row.end - row.start == pytest.approx(row.seconds, abs=1.5 / row.samplerate)
        assert 0.0 < row.seconds <= 4.0
    manifest = json.loads((demo_root / "demo.json").read_text())
    assert manifest["clips_per_class"] == 6
    assert manifest["n_clips"] == 60


def test_recording_level_grouping(demo: pd.DataFrame) -> None:
    per_recording = demo.groupby("fsID")
    assert (per_recording["fold"].nunique() == 1).all()
    assert (per_recording["classID"].nunique() == 1).all()
    # one format per recording, as one original recording has one format
    assert (per_recording[["samplerate", "subtype", "channels"]].nunique() == 1).all().all()
    assert per_recording.size().max() > 1  # recordings do contribute several slices
    assert demo["fsID"].nunique() < len(demo)


def test_format_mix_like_the_real_data(demo: pd.DataFrame) -> None:
    assert {44100, 48000, 96000} <= set(demo["samplerate"])
    assert set(demo["samplerate"]) & {22050, 11025}
    assert {"PCM_U8", "PCM_16", "PCM_24", "FLOAT"} <= set(demo["subtype"])
    assert set(demo["channels"]) == {1, 2}
    assert (demo["seconds"] < 4.0).any()
    assert (demo["seconds"] == 4.0).any()


def test_clips_decode_to_sound(demo: pd.DataFrame) -> None:
    for path in demo.groupby("subtype")["path"].first():
        y, sr = librosa.load(path, sr=22050)
        assert sr == 22050
        assert np.isfinite(y).all()
        assert 0.01 < np.abs(y).max() <= 1.0
        assert np.std(y) > 1e-3


@pytest.mark.slow
def test_classes_differ_in_sound(demo: pd.DataFrame) -> None:
    """Class-specific synthesis: per-class mean spectra are far apart relative to within-class."""
    feats = np.array(
        [
            librosa.feature.mfcc(y=librosa.load(p, sr=22050)[0], sr=22050, n_mfcc=20).mean(1)
            for p in demo["path"]
        ]
    )
    y = demo["classID"].to_numpy()
    z = (feats - feats.mean(0)) / feats.std(0)
    centroids = np.array([z[y == c].mean(0) for c in range(10)])
    nearest = np.argmin(((z[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (nearest == y).mean() > 0.5  # far above chance (0.1) even with in-sample centroids


def test_generation_is_deterministic(demo_root: Path, tmp_path: Path) -> None:
    again = make_demo_corpus(tmp_path, clips_per_class=6, progress=False)
    assert again.name == demo_root.name
    assert _digests(again) == _digests(demo_root)


def test_seed_and_size_get_their_own_folder(tmp_path: Path) -> None:
    a = make_demo_corpus(tmp_path, clips_per_class=1, seed=0, progress=False)
    b = make_demo_corpus(tmp_path, clips_per_class=1, seed=1, progress=False)
    c = make_demo_corpus(tmp_path, clips_per_class=2, seed=0, progress=False)
    assert len({a, b, c}) == 3
    assert len(pd.read_csv(c / "metadata" / "UrbanSound8K.csv")) == 20
    assert _digests(a) != _digests(b)
    # nothing but finished corpora is left in dest
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([a.name, b.name, c.name])


def test_complete_corpus_is_reused_and_partial_one_ignored(tmp_path: Path) -> None:
    root = make_demo_corpus(tmp_path / "a", clips_per_class=1, progress=False)
    marker = root / "audio" / "fold1" / "extra.txt"
    marker.write_text("kept")
    assert make_demo_corpus(tmp_path / "a", clips_per_class=1, progress=False) == root
    assert marker.read_text() == "kept"
    marker.unlink()
    # an interrupted run's temporary folder, or a corpus without its manifest, is not reused
    crashed = tmp_path / "b" / f".{root.name}.tmp-crashed"
    (crashed / "metadata").mkdir(parents=True)
    half = tmp_path / "b" / root.name
    (half / "metadata").mkdir(parents=True)
    (half / "metadata" / "UrbanSound8K.csv").write_text("slice_file_name\n")
    with pytest.raises(DataError, match="exists but is not a complete demo corpus"):
        make_demo_corpus(tmp_path / "b", clips_per_class=1, progress=False)
    assert (half / "metadata" / "UrbanSound8K.csv").read_text() == "slice_file_name\n"
    (half / "metadata" / "UrbanSound8K.csv").unlink()
    (half / "metadata").rmdir()
    half.rmdir()
    again = make_demo_corpus(tmp_path / "b", clips_per_class=1, progress=False)
    assert again == half
    assert _digests(again) == _digests(root)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted([crashed.name, half.name])


def test_unwritable_destination_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(DataError, match=r"cannot create the demo corpus in .*data\.demo_dir"):
        make_demo_corpus(tmp_path / "file" / "demo", clips_per_class=1, progress=False)


def test_bad_size_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="clips_per_class must be >= 1"):
        make_demo_corpus(tmp_path, clips_per_class=0)
    assert not any(tmp_path.iterdir())


def test_parallel_generation_writes_the_same_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import urbansound.data.demo as demo

    one = make_demo_corpus(tmp_path / "one", clips_per_class=3, progress=False)
    monkeypatch.setattr(demo, "_MIN_CLIPS_PER_WORKER", 10)
    monkeypatch.setattr(demo.os, "cpu_count", lambda: 2)
    two = make_demo_corpus(tmp_path / "two", clips_per_class=3, progress=False)
    assert _digests(one) == _digests(two)
