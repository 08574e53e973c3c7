"""Tests of urbansound.features.extraction.

Librosa-equal features, the staged cache, errors, resume after kill -9.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
import warnings
from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.stats
import soundfile as sf

from urbansound.config.checks import settings_from_config
from urbansound.config.settings import FeatureSettings
from urbansound.errors import AudioError
from urbansound.features import cache as feature_cache
from urbansound.features import dsp
from urbansound.features import extraction as features
from urbansound.features.audio import load_audio
from urbansound.features.dsp import POOLING_STATS, log_mel
from urbansound.features.extraction import extract_features, feature_names


def _settings(tmp_path: Path, **kw) -> FeatureSettings:
    kw.setdefault("n_jobs", 1)
    return dataclasses.replace(FeatureSettings(), cache_dir=str(tmp_path / "cache"), **kw)


def _librosa_features(path: Path | str, s: FeatureSettings) -> np.ndarray:
    """The same features computed with librosa only (the tutorial's calls, generalised)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y, sr = librosa.load(path, sr=s.sr)
        mel_kw = {
            "n_fft": s.n_fft,
            "hop_length": s.hop_length,
            "win_length": s.win_length,
            "window": s.window,
            "n_mels": s.n_mels,
            "fmin": s.fmin,
            "fmax": s.fmax,
        }
        if s.kind == "mfcc" and s.top_db == 80.0:  # librosa.feature.mfcc's own power_to_db
            F = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=s.n_mfcc, lifter=s.lifter, **mel_kw)
        else:
            mel = librosa.feature.melspectrogram(y=y, sr=sr, **mel_kw)
            F = librosa.power_to_db(mel, top_db=s.top_db)
            if s.kind == "mfcc":
                F = librosa.feature.mfcc(S=F, n_mfcc=s.n_mfcc, lifter=s.lifter)
    F = np.concatenate([F, *(librosa.feature.delta(F, order=k) for k in range(1, s.deltas + 1))])
    stats = {
        "mean": lambda a: np.mean(a.T, axis=0),
        "std": lambda a: np.std(a, axis=1),
        "min": lambda a: np.min(a, axis=1),
        "max": lambda a: np.max(a, axis=1),
        "median": lambda a: np.median(a, axis=1),
        "skew": lambda a: scipy.stats.skew(a, axis=1),
        "kurtosis": lambda a: scipy.stats.kurtosis(a, axis=1),
    }
    return np.concatenate([stats[k](F) for k in POOLING_STATS[s.pooling]]).astype(np.float32)


def _assert_features_close(ours: np.ndarray, ref: np.ndarray, s: FeatureSettings) -> None:
    """Equal within float32 rounding: each statistic's block to 2e-5 of its largest value."""
    assert ours.shape == ref.shape
    assert np.isfinite(ours).all()
    for block, stat in zip(
        np.split(np.arange(ours.shape[1]), len(POOLING_STATS[s.pooling])),
        POOLING_STATS[s.pooling],
        strict=True,
    ):
        scale = float(np.abs(ref[:, block]).max())
        err = float(np.abs(ours[:, block] - ref[:, block]).max())
        assert err <= 2e-5 * scale + 1e-6, f"{stat}: max error {err} (scale {scale})"


def _one_per_format(root: Path, limit: int = 10) -> list[Path]:
    seen: dict[tuple, Path] = {}
    for path in sorted((root / "audio").glob("fold*/*.wav")):
        info = sf.info(path)
        seen.setdefault((info.subtype, info.samplerate, info.channels), path)
    return list(seen.values())[:limit]


PARAMETER_SETS = {
    "tutorial": {},
    "mfcc20-lifter-deltas-stats": dict(
        n_mfcc=20,
        lifter=22.0,
        deltas=2,
        pooling="stats",
        top_db=60.0,
        n_fft=1024,
        hop_length=256,
        win_length=800,
        window="hamming",
        n_mels=64,
        fmin=50.0,
        fmax=8000.0,
    ),
    "logmel-16k-mean_std": dict(
        kind="logmel",
        sr=16000,
        n_fft=512,
        hop_length=160,
        window="blackman",
        n_mels=40,
        top_db=None,
        deltas=1,
        pooling="mean_std",
    ),
    "mfcc60-44k": dict(sr=44100, n_mfcc=60, hop_length=1024, deltas=1, pooling="mean_std"),
}


@pytest.mark.parametrize("name", list(PARAMETER_SETS))
def test_features_equal_librosa_on_real_clips(real_root: Path, tmp_path: Path, name: str) -> None:
    s = _settings(tmp_path, **PARAMETER_SETS[name])
    clips = _one_per_format(real_root)
    result = extract_features(clips, s, progress=False)
    ref = np.stack([_librosa_features(p, s) for p in clips])
    assert result.ok.all() and result.n_computed == len(clips)
    assert result.X.dtype == np.float32 and result.X.shape[1] == len(feature_names(s))
    _assert_features_close(result.X, ref, s)


def test_tutorial_features_exactly_as_the_tutorial_writes_them(demo_root: Path, tmp_path) -> None:
    clips = sorted((demo_root / "audio").glob("fold*/*.wav"))[::6]
    result = extract_features(clips, _settings(tmp_path), progress=False)
    tutorial = []
    for path in clips:
        y, sr = librosa.load(path)
        tutorial.append(np.mean(librosa.feature.mfcc(y=y, sr=sr, n_mfcc=40).T, axis=0))
    assert result.X.shape == (len(clips), 40)
    _assert_features_close(result.X, np.stack(tutorial), _settings(tmp_path))


@pytest.mark.parametrize("n", [1, 300, 511, 512, 513, 2047, 2048, 2049, 22050])
def test_log_mel_stage_frames_like_librosa_for_any_length(n: int) -> None:
    s = FeatureSettings()
    y = (0.5 * np.sin(np.arange(n) * 0.3) + 0.01 * np.cos(np.arange(n) * 2.1)).astype(np.float32)
    ours = log_mel(y, s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_fft=2048 is too large for input signal"
        ref = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=s.sr), top_db=None)
    assert ours.shape == ref.shape == (s.n_mels, 1 + n // s.hop_length)
    # A float32 FFT (librosa's is float64): equal to 1e-3 dB within 80 dB of the clip's peak, the
    # range the default top_db keeps; bands far below it carry the FFT's float32 rounding.
    kept = ref >= ref.max() - 80.0
    np.testing.assert_allclose(ours[kept], ref[kept], rtol=0, atol=1e-3)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=0.5)


def test_feature_names_follow_the_column_layout() -> None:
    s = dataclasses.replace(FeatureSettings(), n_mfcc=2, deltas=1, pooling="mean_std")
    assert feature_names(s) == [
        "mean_mfcc0",
        "mean_mfcc1",
        "mean_d1_mfcc0",
        "mean_d1_mfcc1",
        "std_mfcc0",
        "std_mfcc1",
        "std_d1_mfcc0",
        "std_d1_mfcc1",
    ]
    s = dataclasses.replace(FeatureSettings(), kind="logmel", n_mels=3, pooling="stats")
    names = feature_names(s)
    assert len(names) == 3 * 7 and names[:4] == ["mean_mel0", "mean_mel1", "mean_mel2", "std_mel0"]
    assert names[-1] == "kurtosis_mel2"


def _write(path: Path, y: np.ndarray, sr: int = 22050) -> Path:
    sf.write(path, y, sr, subtype="FLOAT")
    return path


@pytest.mark.parametrize("pooling", list(POOLING_STATS))
@pytest.mark.parametrize("kind", ["mfcc", "logmel"])
def test_silent_constant_and_tiny_clips_give_finite_features(
    tmp_path: Path, pooling: str, kind: str
) -> None:
    clips = [
        _write(tmp_path / "silent.wav", np.zeros(4 * 22050)),
        _write(tmp_path / "one_sample.wav", np.array([0.5])),
        _write(tmp_path / "short.wav", np.full(300, 0.2)),
        _write(tmp_path / "three_frames.wav", np.sin(np.arange(1100) * 0.2)),
        _write(tmp_path / "dc.wav", np.full(22050, 0.1)),
    ]
    s = _settings(tmp_path, kind=kind, pooling=pooling, deltas=2)
    result = extract_features(clips, s, progress=False)
    assert result.ok.all() and result.X.shape == (5, len(feature_names(s)))
    assert np.isfinite(result.X).all()
    # Silence is -100 dB in every band (power floor 1e-10), exactly as librosa.power_to_db says.
    if kind == "logmel":
        np.testing.assert_allclose(result.X[0, : s.n_mels], -100.0)


def test_cache_reuses_the_stage_for_every_on_load_setting(demo_root: Path, tmp_path) -> None:
    (tmp_path / "clips").mkdir()
    clips = [  # copies: the test touches one, and the demo corpus is shared by the session
        Path(shutil.copy2(p, tmp_path / "clips"))
        for p in sorted((demo_root / "audio").glob("fold*/*.wav"))[:12]
    ]
    base = _settings(tmp_path)
    first = extract_features(clips, base, progress=False)
    assert (first.n_computed, first.n_cached) == (12, 0)
    stage_files = sorted((tmp_path / "cache" / "logmel").glob("*/*.bin"))
    assert len(stage_files) == 12
    assert all(f.parent.name == f.name[:2] and len(f.stem) == 64 for f in stage_files)

    again = extract_features(clips, base, progress=False)
    assert (again.n_computed, again.n_cached) == (0, 12)
    np.testing.assert_array_equal(again.X, first.X)

    for i, change in enumerate(
        [
            dict(n_mfcc=20),
            dict(pooling="stats", deltas=2),
            dict(top_db=50.0, lifter=10.0),
            dict(kind="logmel", pooling="mean_std"),
        ]
    ):
        s = dataclasses.replace(base, **change)
        cached = extract_features(clips, s, progress=False)
        assert (cached.n_computed, cached.n_cached) == (0, 12), change
        fresh = extract_features(
            clips,
            dataclasses.replace(s, cache_dir=str(tmp_path / f"fresh{i}")),
            progress=False,
        )
        assert fresh.n_computed == 12
        np.testing.assert_array_equal(cached.X, fresh.X)
    assert len(list((tmp_path / "cache" / "logmel").glob("*/*.bin"))) == 12

    # A stage parameter changes every key; a touched file changes its own.
    assert (
        extract_features(clips, dataclasses.replace(base, n_mels=64), progress=False).n_computed
        == 12
    )
    os.utime(clips[3], ns=(time.time_ns(), time.time_ns()))
    touched = extract_features(clips, base, progress=False)
    assert (touched.n_computed, touched.n_cached) == (1, 11)
    assert not list((tmp_path / "cache" / "tmp").iterdir())


def test_cache_key_includes_library_versions(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clips = sorted((demo_root / "audio").glob("fold*/*.wav"))[:3]
    s = _settings(tmp_path)
    assert extract_features(clips, s, progress=False).n_computed == 3
    spec = features._stage_spec(s)["versions"]
    assert {"librosa", "soxr", "soundfile", "libsndfile"} <= set(spec)
    monkeypatch.setattr(librosa, "__version__", "0.0.0-test")
    assert extract_features(clips, s, progress=False).n_computed == 3


def _filled_cache(demo_root: Path, tmp_path: Path, n: int):
    """``n`` demo clips extracted once into a fresh cache: (clips, settings, features, the
    stage entries sorted, the whole-matrix entry)."""
    clips = sorted((demo_root / "audio").glob("fold*/*.wav"))[:n]
    s = _settings(tmp_path)
    good = extract_features(clips, s, progress=False)
    stage_files = sorted((tmp_path / "cache" / "logmel").glob("*/*.bin"))
    (memo,) = (tmp_path / "cache" / "features").glob("*.bin")
    return clips, s, good, stage_files, memo


def test_corrupt_entries_are_detected_and_recomputed(
    demo_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clips, s, good, stage_files, memo = _filled_cache(demo_root, tmp_path, 8)

    data = stage_files[0].read_bytes()
    stage_files[0].write_bytes(data[: len(data) // 2])  # truncated
    data = bytearray(stage_files[1].read_bytes())
    data[-100] ^= 0xFF  # one flipped payload byte
    stage_files[1].write_bytes(bytes(data))
    stage_files[2].write_bytes(b"garbage" * 1000)  # not an entry at all
    stage_files[3].write_bytes(stage_files[4].read_bytes())  # another clip's entry
    memo.write_bytes(memo.read_bytes()[:-8])

    with caplog.at_level("WARNING", logger="urbansound.features.extraction"):
        again = extract_features(clips, s, progress=False)
    assert (again.n_computed, again.n_cached) == (4, 4)
    np.testing.assert_array_equal(again.X, good.X)
    assert sum("corrupt feature cache entry" in r.getMessage() for r in caplog.records) == 5
    # The recomputed entries replaced the corrupt ones.
    third = extract_features(clips, dataclasses.replace(s, pooling="mean_std"), progress=False)
    assert (third.n_computed, third.n_cached) == (0, 8)


def test_well_formed_entries_of_the_wrong_shape_are_recomputed(
    demo_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Entries with the right magic, key and checksum whose array has the wrong shape (a foreign
    # or hand-made file under the entry's name): before, a ValueError traceback from matmul or
    # from the top_db floor of an empty array, in the middle of the extraction.
    clips, s, good, stage_files, memo = _filled_cache(demo_root, tmp_path, 5)
    tmp_dir = tmp_path / "cache" / "tmp"

    def rewrite(entry: Path, change) -> None:
        key = entry.read_bytes()[8:40]
        array = feature_cache.read_entry(entry, key)
        feature_cache.write_entry(entry, key, change(array), tmp_dir=tmp_dir)

    rewrite(stage_files[0], lambda a: np.ascontiguousarray(a.T))  # transposed
    rewrite(stage_files[1], lambda a: a[:-1])  # one mel band fewer
    key = stage_files[2].read_bytes()[8:40]  # no frames: a header alone, its checksum right
    stage_files[2].write_bytes(feature_cache.HEAD.pack(feature_cache.MAGIC, key, 0, 128, 0))
    rewrite(memo, lambda a: a[:, :-1])  # the whole matrix, one column fewer

    with caplog.at_level("WARNING", logger="urbansound.features.extraction"):
        again = extract_features(clips, s, progress=False)
    np.testing.assert_array_equal(again.X, good.X)
    assert (again.n_computed, again.n_cached) == (3, 2)
    shapes = [r.getMessage() for r in caplog.records if "array, not (" in r.getMessage()]
    assert len(shapes) == 4, caplog.text
    third = extract_features(clips, dataclasses.replace(s, pooling="mean_std"), progress=False)
    assert (third.n_computed, third.n_cached) == (0, 5)


def test_fifo_in_place_of_an_entry_does_not_hang(demo_root: Path, tmp_path: Path) -> None:
    import threading

    clips = sorted((demo_root / "audio").glob("fold*/*.wav"))[:3]
    s = _settings(tmp_path)
    good = extract_features(clips, s, progress=False)
    for entry in sorted((tmp_path / "cache").glob("*/**/*.bin")):
        entry.unlink()
        os.mkfifo(entry)  # before: open() waited forever for a writer
    result: dict = {}
    worker = threading.Thread(
        target=lambda: result.update(fs=extract_features(clips, s, progress=False)), daemon=True
    )
    worker.start()
    worker.join(120)
    if worker.is_alive():  # release the blocked reader, then fail
        for entry in sorted((tmp_path / "cache").glob("*/**/*.bin")):
            if entry.is_fifo():
                os.close(os.open(entry, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(30)
        pytest.fail("extract_features blocked on a FIFO in the feature cache")
    np.testing.assert_array_equal(result["fs"].X, good.X)
    assert result["fs"].n_computed == 3
    # The FIFOs were replaced by entries.
    again = extract_features(clips, dataclasses.replace(s, pooling="mean_std"), progress=False)
    assert (again.n_computed, again.n_cached) == (0, 3)


def test_stale_temporary_files_are_removed(demo_root: Path, tmp_path: Path) -> None:
    tmp = tmp_path / "cache" / "tmp"
    tmp.mkdir(parents=True)
    old, new = tmp / "old.bin.123.abcd.tmp", tmp / "new.bin.456.abcd.tmp"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    clips = sorted((demo_root / "audio").glob("fold*/*.wav"))[:1]
    extract_features(clips, _settings(tmp_path), progress=False)
    assert not old.exists() and new.exists()


def _bad_files(tmp_path: Path, good: list[Path]) -> list[Path]:
    data = good[0].read_bytes()
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("not audio\n" * 50)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 3])
    return [empty, text, cut, tmp_path / "missing.wav"]


def test_on_error_skip_lists_and_leaves_out_bad_files(demo_root: Path, tmp_path: Path) -> None:
    good = sorted((demo_root / "audio").glob("fold*/*.wav"))[:3]
    bad = _bad_files(tmp_path, good)
    paths = [good[0], bad[0], good[1], bad[1], bad[2], bad[3], good[2]]
    s = _settings(tmp_path, on_error="skip")
    result = extract_features(paths, s, progress=False)
    assert result.ok.tolist() == [True, False, True, False, False, False, True]
    assert [d["path"] for d in result.skipped] == [str(p) for p in bad]
    reasons = ["empty", "Format not recognised", "truncated", "no such file"]
    for entry, reason in zip(result.skipped, reasons, strict=True):
        assert entry["path"] in entry["error"] and reason in entry["error"]
        assert "replace or remove" not in entry["error"]  # the hint is for errors, not the list
    only_good = extract_features(good, _settings(tmp_path / "b"), progress=False)
    np.testing.assert_array_equal(result.X, only_good.X)
    assert (result.n_computed, result.n_cached) == (3, 0)
    assert not (tmp_path / "cache" / "features").exists()  # no whole-result entry with skips


def test_on_error_error_raises_naming_the_file(demo_root: Path, tmp_path: Path) -> None:
    good = sorted((demo_root / "audio").glob("fold*/*.wav"))[:2]
    for bad in _bad_files(tmp_path, good):
        with pytest.raises(AudioError, match=str(bad)):
            extract_features([good[0], bad, good[1]], _settings(tmp_path), progress=False)


def test_config_presets_compose(compose_cfg) -> None:
    mfcc = settings_from_config(compose_cfg([])).features
    assert (mfcc.kind, mfcc.n_mfcc, mfcc.pooling) == ("mfcc", 40, "mean")
    logmel = settings_from_config(compose_cfg(["features=logmel"])).features
    assert logmel.kind == "logmel"
    assert len(feature_names(logmel)) == logmel.n_mels * len(POOLING_STATS[logmel.pooling])


def test_empty_input(tmp_path: Path) -> None:
    result = extract_features([], _settings(tmp_path), progress=False)
    assert result.X.shape == (0, 40) and result.ok.shape == (0,)


def _peak_bytes(clips: list[Path], s: FeatureSettings) -> int:
    tracemalloc.start()
    try:
        extract_features(clips, s, progress=False)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_peak_memory_is_far_below_the_decoded_audio(demo_root: Path, tmp_path: Path) -> None:
    clips = sorted((demo_root / "audio").glob("fold*/*.wav"))
    copies = tmp_path / "copies"
    copies.mkdir()
    more = list(clips)
    for k in (1, 2):  # the same audio under other names: other cache keys, three times the work
        for p in clips:
            (copies / f"{k}-{p.name}").hardlink_to(p)
            more.append(copies / f"{k}-{p.name}")
    decoded = 3 * sum(load_audio(p, sr=22050).nbytes for p in clips)
    peak = _peak_bytes(more, _settings(tmp_path))
    # One clip at a time: the peak is a few clips' worth, far below the decoded audio (55 MB).
    assert peak < decoded / 4, (peak, decoded)


@pytest.mark.slow
def test_parallel_workers_give_the_same_features(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(features, "_MIN_CLIPS_PER_WORKER", 4)  # workers even for a few clips
    clips = sorted((demo_root / "audio").glob("fold*/*.wav"))[:24]
    one = extract_features(clips, _settings(tmp_path / "a", pooling="stats"), progress=False)
    two = extract_features(
        clips, _settings(tmp_path / "b", pooling="stats", n_jobs=2), progress=False
    )
    assert two.n_computed == 24
    np.testing.assert_allclose(two.X, one.X, rtol=1e-6, atol=1e-4)
    # Workers write the cache too: a second parallel run reads every clip back.
    again = extract_features(
        clips, _settings(tmp_path / "b", pooling="mean", n_jobs=2), progress=False
    )
    assert (again.n_computed, again.n_cached) == (0, 24)


_CHILD = textwrap.dedent(
    """
    import dataclasses, sys
    from pathlib import Path
    from urbansound.config.settings import FeatureSettings
    from urbansound.features.extraction import extract_features
    root, cache = sys.argv[1], sys.argv[2]
    clips = sorted(Path(root).glob("audio/fold*/*.wav"))
    s = dataclasses.replace(FeatureSettings(), cache_dir=cache, n_jobs=1, hop_length=128)
    extract_features(clips, s, progress=False)
    """
)


@pytest.mark.slow
def test_resume_after_kill_9_reuses_finished_clips(demo_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(demo_root), str(cache)])
    stage = cache / "logmel"
    try:
        deadline = time.monotonic() + 120
        while len(list(stage.glob("*/*.bin"))) < 3:
            assert child.poll() is None, "the extraction ended before it could be killed"
            assert time.monotonic() < deadline, "no cache entries appeared"
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    clips = sorted(demo_root.glob("audio/fold*/*.wav"))
    done = len(list(stage.glob("*/*.bin")))
    assert 3 <= done < len(clips)

    s = dataclasses.replace(FeatureSettings(), cache_dir=str(cache), n_jobs=1, hop_length=128)
    resumed = extract_features(clips, s, progress=False)
    assert (resumed.n_cached, resumed.n_computed) == (done, len(clips) - done)
    fresh = extract_features(
        clips, dataclasses.replace(s, cache_dir=str(tmp_path / "fresh")), progress=False
    )
    np.testing.assert_array_equal(resumed.X, fresh.X)


@pytest.mark.parametrize("window", ["hann", "hamming", "blackman", "boxcar", "bartlett", "triang"])
def test_window_equals_librosa(window: str) -> None:
    for win_length, n_fft in [(2048, 2048), (800, 1024), (511, 512), (1, 16), (2, 16), (3, 16)]:
        ref = librosa.filters.get_window(window, win_length, fftbins=True)
        ref = librosa.util.pad_center(ref, size=n_fft).astype(np.float32)
        np.testing.assert_array_equal(dsp.window_function(window, win_length, n_fft), ref)


@pytest.mark.parametrize(
    ("sr", "n_fft", "n_mels", "fmin", "fmax"),
    [
        (22050, 2048, 128, 0.0, 11025.0),
        (16000, 512, 40, 0.0, 8000.0),
        (44100, 1024, 64, 50.0, 8000.0),
        (8000, 256, 20, 300.0, 4000.0),
        (48000, 4096, 256, 1000.0, 24000.0),
    ],
)
def test_mel_matrix_equals_librosa(
    sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> None:
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    np.testing.assert_array_equal(dsp.mel_basis_t(sr, n_fft, n_mels, fmin, fmax), ref.T)


@pytest.mark.parametrize("n_frames", [1, 2, 3, 4, 8, 9, 10, 173])
def test_deltas_equal_librosa_for_any_length(n_frames: int) -> None:
    rng = np.random.default_rng(n_frames)
    f = (rng.standard_normal((12, n_frames)) * 40 + np.linspace(0, 300, n_frames)).astype(
        np.float32
    )
    width = min(9, n_frames if n_frames % 2 else n_frames - 1)
    for order in (1, 2):
        ours = dsp._delta(f, order)
        if width < 3:  # librosa refuses; ours is zero (no slope without three frames)
            np.testing.assert_array_equal(ours, 0)
            continue
        ref = librosa.feature.delta(f, order=order, width=width)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize(
    "change", [{}, {"kind": "logmel"}, {"top_db": None, "lifter": 22.0}, {"n_mfcc": 13}]
)
def test_mean_pooling_shortcut_equals_pooling_the_frames(change: dict) -> None:
    s = dataclasses.replace(FeatureSettings(), **change)
    stage = np.random.default_rng(0).uniform(-100, 40, (s.n_mels, 173)).astype(np.float32)
    direct = dsp.pool(dsp.frame_features(stage, s), "mean")
    shortcut = dsp.clip_features(stage, s)
    np.testing.assert_allclose(shortcut, direct, rtol=0, atol=1e-5 * np.abs(direct).max())


# --------------------------------------------------------------------------------------------
# Faults: non-finite audio and features, cache failures, clean exits (issue 11)


def _float_wav(path: Path, value: float, n: int = 22050) -> Path:
    x = 0.1 * np.sin(np.arange(n) / 5.0)
    x[n // 2] = value
    sf.write(path, x, 22050, subtype="FLOAT")
    return path


def test_non_finite_audio_is_a_bad_clip_named_and_skippable(
    demo_root: Path, tmp_path: Path
) -> None:
    good = sorted((demo_root / "audio").glob("fold*/*.wav"))[:2]
    nan = _float_wav(tmp_path / "nan.wav", np.nan)
    inf = _float_wav(tmp_path / "inf.wav", -np.inf)
    huge = _float_wav(tmp_path / "huge.wav", 1e30)  # finite, but its power spectrum is not
    paths = [good[0], nan, inf, huge, good[1]]
    for bad in (nan, inf, huge):
        with pytest.raises(AudioError) as err:
            extract_features([good[0], bad], _settings(tmp_path), progress=False)
        assert str(bad) in str(err.value) and "not finite" in str(err.value)
    result = extract_features(paths, _settings(tmp_path, on_error="skip"), progress=False)
    assert result.ok.tolist() == [True, False, False, False, True]
    assert [d["path"] for d in result.skipped] == [str(nan), str(inf), str(huge)]
    assert "1 audio samples are not finite" in result.skipped[0]["error"]
    assert "overflow the float32 power spectrum" in result.skipped[2]["error"]
    assert np.isfinite(result.X).all() and result.X.shape == (2, 40)


def _entries(cache: Path, kind: str) -> list[Path]:
    return sorted((cache / kind).rglob("*.bin"))


def _poison(entry: Path) -> None:
    """Rewrite a valid entry (right key, right checksum) with one NaN in it."""
    key = entry.read_bytes()[8:40]
    array = feature_cache.read_entry(entry, key).copy()
    array.flat[array.size // 2] = np.nan
    feature_cache.write_entry(entry, key, array, tmp_dir=entry.parent)


def test_non_finite_cache_entries_are_recomputed(demo_root: Path, tmp_path: Path, caplog) -> None:
    clips = sorted((demo_root / "audio").glob("fold*/*.wav"))[:3]
    s = _settings(tmp_path)
    first = extract_features(clips, s, progress=False)
    (result_entry,) = _entries(tmp_path / "cache", "features")
    _poison(result_entry)
    again = extract_features(clips, s, progress=False)
    assert (again.n_cached, again.n_computed) == (3, 0)  # per clip, the whole entry ignored
    np.testing.assert_array_equal(again.X, first.X)
    assert "holds non-finite values" in caplog.text

    _poison(_entries(tmp_path / "cache", "logmel")[0])
    s13 = dataclasses.replace(s, n_mfcc=13)  # another whole-result key: the stages are read
    fresh = extract_features(clips, _settings(tmp_path / "fresh", n_mfcc=13), progress=False)
    redone = extract_features(clips, s13, progress=False)
    assert (redone.n_cached, redone.n_computed) == (2, 1)
    np.testing.assert_array_equal(redone.X, fresh.X)


_EXIT_CHILD = textwrap.dedent(
    """
    import dataclasses, sys
    from pathlib import Path
    from urbansound.features import cache as feature_cache
    from urbansound.features import extraction as features
    from urbansound.config.settings import FeatureSettings
    from urbansound.errors import UrbansoundError
    features._MIN_CLIPS_PER_WORKER = 2  # threads even for a short list
    root, cache, bad = sys.argv[1], sys.argv[2], sys.argv[3:]
    clips = sorted(Path(root).glob("audio/fold*/*.wav"))[:40]
    for k, path in enumerate(bad):
        clips.insert(10 + 10 * k, Path(path))
    s = dataclasses.replace(FeatureSettings(), cache_dir=cache, n_jobs=2)
    try:
        features.extract_features(clips, s, progress=False)
    except UrbansoundError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    """
)


def _run_child(demo_root: Path, cache: Path | str, *bad: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _EXIT_CHILD, str(demo_root), str(cache), *map(str, bad)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _assert_one_line_exit_2(proc: subprocess.CompletedProcess, *expected: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.mark.parametrize("repeat", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_bad_clip_with_threads_running_exits_2_cleanly(
    demo_root: Path, tmp_path: Path, repeat: int
) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "text.wav"
    text.write_text("not audio\n" * 50)
    for k in range(repeat):
        for bad in (empty, text):
            # a fresh cache: the bad clip is met by a worker thread while the other runs
            proc = _run_child(demo_root, tmp_path / f"cache{k}{bad.stem}", bad)
            _assert_one_line_exit_2(proc, str(bad), "cannot decode audio file")
            assert not list((tmp_path / f"cache{k}{bad.stem}" / "tmp").iterdir())


def test_cache_dir_in_the_way_is_one_line_exit_2(demo_root: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    proc = _run_child(demo_root, blocker / "cache")
    _assert_one_line_exit_2(proc, f"cannot write {blocker}", "a file is in the way")
    assert "features.cache_dir=" in proc.stderr
    proc = _run_child(demo_root, blocker)  # the cache folder itself is a file
    _assert_one_line_exit_2(proc, str(blocker), "a file is in the way", "features.cache_dir=")
    assert blocker.read_text() == "a file where a folder should be"


def test_read_only_cache_dir_is_one_line_exit_2(demo_root: Path, tiny_mount) -> None:
    ro = tiny_mount("ro")
    proc = _run_child(demo_root, ro / "cache")
    _assert_one_line_exit_2(proc, str(ro / "cache"), "read-only", "features.cache_dir=")


def test_full_disk_is_one_line_exit_2_and_leaves_nothing_partial(
    demo_root: Path, tiny_mount
) -> None:
    full = tiny_mount("rw")
    proc = _run_child(demo_root, full / "cache")
    _assert_one_line_exit_2(proc, str(full / "cache"), "the disk is full", "features.cache_dir=")
    assert not list((full / "cache" / "tmp").iterdir())  # no half-written entry
    for entry in _entries(full / "cache", "logmel"):  # the ones that fit are whole
        assert feature_cache.read_entry(entry, entry.read_bytes()[8:40]) is not None


def test_directory_in_place_of_an_entry_warns_once_and_goes_on(
    demo_root: Path, tmp_path: Path, caplog
) -> None:
    clips = sorted((demo_root / "audio").glob("fold*/*.wav"))[:3]
    s = _settings(tmp_path)
    first = extract_features(clips, s, progress=False)
    for entry in [
        *_entries(tmp_path / "cache", "logmel")[:2],
        *_entries(tmp_path / "cache", "features"),
    ]:
        entry.unlink()
        entry.mkdir()  # a directory where the entry should be
    (entry / "x").write_text("keep me")
    caplog.clear()
    again = extract_features(clips, s, progress=False)
    np.testing.assert_array_equal(again.X, first.X)
    assert (again.n_computed, again.n_cached) == (2, 1)
    warned = [
        r.getMessage() for r in caplog.records if "a directory is in the way" in r.getMessage()
    ]
    assert len(warned) == 1 and "features.cache_dir=" in warned[0], caplog.text
    assert "3 feature cache entries could not be written" in caplog.text
    assert (entry / "x").read_text() == "keep me"


def test_cache_dir_with_a_tilde_is_under_home(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # features.cache_dir="~/cache" (as data.root=~/... is expanded): before, a folder named "~"
    # in the working directory.
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    clips = sorted((demo_root / "audio").glob("fold*/*.wav"))[:2]
    s = dataclasses.replace(FeatureSettings(), cache_dir="~/cache", n_jobs=1)
    assert extract_features(clips, s, progress=False).n_computed == 2
    assert not (cwd / "~").exists()
    assert len(list((home / "cache" / "logmel").glob("*/*.bin"))) == 2


@pytest.mark.parametrize("cache_dir", ["", " "])
def test_empty_cache_dir_is_a_config_error(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_dir: str
) -> None:
    # Before: the cache's logmel/, features/ and tmp/ folders were spread in the working
    # directory (or in a folder named " ").
    from urbansound.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    clips = sorted((demo_root / "audio").glob("fold*/*.wav"))[:1]
    s = dataclasses.replace(FeatureSettings(), cache_dir=cache_dir, n_jobs=1)
    with pytest.raises(ConfigError, match=r"features\.cache_dir=.* is empty"):
        extract_features(clips, s, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cache_dir_name_too_long_is_one_line_exit_2(demo_root: Path, tmp_path: Path) -> None:
    # Before: output_error's Path.is_dir() raised ENAMETOOLONG itself: an OSError traceback.
    long = tmp_path / ("x" * 300) / "cache"
    proc = _run_child(demo_root, long)
    _assert_one_line_exit_2(proc, "File name too long", "features.cache_dir=")


@pytest.mark.parametrize(
    "kw",
    [
        {},  # MFCC means: the mel product and the DCT of the mean
        {"deltas": 2, "pooling": "stats"},  # the DCT of every frame
        {"kind": "logmel", "pooling": "mean_std"},
    ],
    ids=["mfcc-mean", "mfcc-deltas-stats", "logmel"],
)
def test_features_do_not_depend_on_the_thread_or_blas_threads(
    demo_root: Path, tmp_path: Path, kw: dict
) -> None:
    """The same bits from any thread and under any BLAS thread count. Before, OpenBLAS split the
    mel product over its threads, and the limit extraction set was not honoured in a thread once
    the main thread had set and restored one: features 1e-6 apart (the FIFO test above found it).
    """
    import threading

    from threadpoolctl import threadpool_limits

    clips = sorted((demo_root / "audio").glob("fold*/*.wav"))[:3]
    s = _settings(tmp_path / "main", **kw)
    reference = extract_features(clips, s, progress=False).X
    result: dict = {}
    s_thread = _settings(tmp_path / "thread", **kw)
    worker = threading.Thread(
        target=lambda: result.update(X=extract_features(clips, s_thread, progress=False).X)
    )
    worker.start()
    worker.join()
    np.testing.assert_array_equal(result["X"], reference)

    y = load_audio(clips[0], sr=s.sr)
    with threadpool_limits(1, user_api="blas"):
        stage = log_mel(y, s)
        row = dsp.clip_features(stage.copy(), s)
    with threadpool_limits(4, user_api="blas"):
        np.testing.assert_array_equal(log_mel(y, s), stage)
        np.testing.assert_array_equal(dsp.clip_features(stage.copy(), s), row)
