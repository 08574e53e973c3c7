"""Tests of embedding features on a small ONNX model the tests build (no download): windows, the
model interface, the cached extraction, pooling, concatenation, errors.

BirdNET itself: test_birdnet.py.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.embeddings import build_onnx_embedder, numpy_embedding
from urbansound.config.settings import (
    EmbeddingFeatureSettings,
    FeatureSettings,
    OnnxEmbeddingSettings,
)
from urbansound.errors import AudioError, ConfigError
from urbansound.features.audio import load_audio
from urbansound.features.dsp import POOLING_STATS, pool
from urbansound.features.embeddings.model import frame_windows, n_windows
from urbansound.features.embeddings.onnx_model import OnnxModel
from urbansound.features.embeddings.stage import embedding_names, embedding_spec, hop_samples
from urbansound.features.extraction import extract_features, feature_names

SR = 16_000
WINDOW = 1600  # 0.1 s


@pytest.fixture
def onnx_file(tmp_path: Path) -> tuple[Path, np.ndarray]:
    path = tmp_path / "embedder.onnx"
    return path, build_onnx_embedder(path, samples=WINDOW, dim=8)


def _settings(model: Path, cache: Path, **embedding) -> EmbeddingFeatureSettings:
    pooling = embedding.pop("pooling", "mean")
    n_jobs = embedding.pop("n_jobs", 1)
    on_error = embedding.pop("on_error", "error")
    e = OnnxEmbeddingSettings(path=str(model), sample_rate=SR, **embedding)
    return EmbeddingFeatureSettings(
        kind="onnx",
        embedding=e,
        pooling=pooling,
        cache_dir=str(cache),
        n_jobs=n_jobs,
        on_error=on_error,
    )


def _clips(demo_root: Path, n: int) -> list[Path]:
    return sorted((demo_root / "audio").glob("fold*/*.wav"))[:n]


class _Counter:
    """Counts the windows every OnnxModel runs (whatever thread runs them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.windows = 0
        run = OnnxModel.run_session

        def counting(model, session, windows):
            self.calls += 1
            self.windows += windows.shape[0]
            return run(model, session, windows)

        monkeypatch.setattr(OnnxModel, "run_session", counting)


# --------------------------------------------------------------------------------------------
# Windows


@pytest.mark.parametrize(
    ("n", "window", "hop", "count"),
    [
        (1, 10, 10, 1),  # shorter than a window: one padded window
        (10, 10, 10, 1),
        (11, 10, 10, 2),
        (20, 10, 10, 2),
        (40, 30, 30, 2),  # a 4 s clip with 3 s windows: [0, 3) and [3, 6) padded
        (40, 30, 10, 2),
        (40, 30, 5, 3),
        (41, 30, 5, 4),
    ],
)
def test_window_count_and_padding(n: int, window: int, hop: int, count: int) -> None:
    assert n_windows(n, window=window, hop=hop) == count == 1 + math.ceil(max(n - window, 0) / hop)
    y = np.arange(1, n + 1, dtype=np.float32)
    frames = frame_windows(y, window=window, hop=hop)
    assert frames.shape == (count, window) and frames.dtype == np.float32
    for i in range(count):
        piece = y[i * hop : i * hop + window]
        np.testing.assert_array_equal(frames[i, : len(piece)], piece)
        assert not frames[i, len(piece) :].any()  # zero padding
    # Any slice of windows equals the same rows of all of them.
    for first in range(count):
        for k in range(count - first + 1):
            part = frame_windows(y, window=window, hop=hop, first=first, count=k)
            np.testing.assert_array_equal(part, frames[first : first + k])


def test_hop_defaults_to_the_window(onnx_file, tmp_path: Path) -> None:
    path, _ = onnx_file
    model = OnnxModel(path=path, sample_rate=SR)
    assert hop_samples(model, _settings(path, tmp_path)) == WINDOW
    assert hop_samples(model, _settings(path, tmp_path, hop=0.025)) == 400


# --------------------------------------------------------------------------------------------
# The ONNX model


def test_onnx_model_embeds_as_its_graph_says_bitwise_for_any_batch(onnx_file) -> None:
    path, weights = onnx_file
    windows = np.random.default_rng(1).standard_normal((13, WINDOW)).astype(np.float32)
    outs = []
    for batch in (1, 4, 13, 32):
        model = OnnxModel(path=path, sample_rate=SR, batch_size=batch)
        assert (model.sample_rate, model.window_samples, model.dim) == (SR, WINDOW, 8)
        outs.append(model.embed(windows))
    np.testing.assert_allclose(outs[0], numpy_embedding(windows, weights), rtol=1e-5, atol=1e-5)
    for other in outs[1:]:
        np.testing.assert_array_equal(other, outs[0])
    ident = model.identity
    assert ident.runtime == "onnxruntime" and ident.layer == "embedding"
    assert ident.path == str(path) and len(ident.sha256) == 64
    assert "not stated" in ident.licence


def test_onnx_model_with_a_dynamic_length_takes_window_s(tmp_path: Path) -> None:
    path = tmp_path / "dynamic.onnx"
    weights = build_onnx_embedder(path, samples=None, dim=4)
    with pytest.raises(ConfigError, match=r"set features\.embedding\.window_s"):
        OnnxModel(path=path, sample_rate=SR)
    model = OnnxModel(path=path, sample_rate=SR, window_s=0.2)
    assert model.window_samples == 3200
    windows = np.random.default_rng(2).standard_normal((3, 3200)).astype(np.float32)
    np.testing.assert_allclose(
        model.embed(windows), numpy_embedding(windows, weights), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"path": "missing.onnx"}, "features.embedding.path=.*missing.onnx: no such file"),
        ({"path": "garbage"}, "features.embedding.path=.*onnxruntime cannot load it"),
        (
            {"input": "wave"},
            "features.embedding.input=wave: .* no input of that name; its inputs: audio",
        ),
        ({"output": "logits"}, "no output of that name; its outputs: embedding"),
        (
            {"window_s": 0.5},
            r"window_s=0.5 is 8000 samples at 16000 Hz, .* takes 1600: set "
            r"window_s=0.1 or null",
        ),
    ],
)
def test_onnx_model_errors_name_the_key(
    onnx_file, tmp_path: Path, change: dict, message: str
) -> None:
    path, _ = onnx_file
    (tmp_path / "garbage").write_bytes(b"not a model" * 10)
    kw = {"path": path, "sample_rate": SR} | change
    if isinstance(kw["path"], str):
        kw["path"] = tmp_path / kw["path"]
    with pytest.raises(ConfigError, match=message) as err:
        OnnxModel(**kw)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------
# Extraction


def test_rows_are_the_pooled_embeddings_of_each_clips_windows(
    onnx_file, demo_root: Path, tmp_path: Path
) -> None:
    path, weights = onnx_file
    clips = _clips(demo_root, 5)
    for pooling in ("mean", "max", "mean_std", "stats"):
        s = _settings(path, tmp_path / "cache", pooling=pooling, hop=0.05)
        fs = extract_features(clips, s, progress=False)
        assert fs.X.shape == (5, len(feature_names(s))) and fs.ok.all()
        first = POOLING_STATS[pooling][0]
        assert feature_names(s)[:2] == [f"{first}_onnx0", f"{first}_onnx1"]
        for row, clip in zip(fs.X, clips, strict=True):
            windows = frame_windows(load_audio(clip, sr=SR), window=WINDOW, hop=800)
            expected = pool(numpy_embedding(windows, weights).T, pooling)
            np.testing.assert_allclose(row, expected, rtol=1e-4, atol=1e-5)
    assert fs.feature_model["name"] == "onnx:embedder.onnx"
    assert (
        fs.feature_model["sha256"]
        == embedding_spec(OnnxModel(path=path, sample_rate=SR), s)["sha256"]
    )


def test_warm_cache_runs_no_inference_for_pooling_or_concatenation(
    onnx_file, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = onnx_file
    clips = _clips(demo_root, 12)
    counter = _Counter(monkeypatch)
    s = _settings(path, tmp_path / "cache", batch_size=4)
    first = extract_features(clips, s, progress=False)
    expected_windows = sum(
        n_windows(load_audio(c, sr=SR).shape[0], window=WINDOW, hop=WINDOW) for c in clips
    )
    assert first.n_computed == 12 and counter.windows == expected_windows
    # Full batches across clip boundaries: only the last batch may be short.
    assert counter.calls == math.ceil(expected_windows / 4)

    counter.calls = counter.windows = 0
    again = extract_features(clips, s, progress=False)  # the pooled matrix
    np.testing.assert_array_equal(again.X, first.X)
    for change in (
        {"pooling": "stats"},
        {"pooling": "max"},
        {"concat_mfcc": 13},
        {"n_jobs": 2},
        {"batch_size": 1},
    ):
        warm = extract_features(
            clips, _settings(path, tmp_path / "cache", **change), progress=False
        )
        assert (warm.n_cached, warm.n_computed) == (12, 0)
    assert counter.calls == 0  # the network never ran
    # What changes the embeddings runs it again: the hop, the model file.
    hop = extract_features(clips, _settings(path, tmp_path / "cache", hop=0.05), progress=False)
    assert hop.n_computed == 12 and counter.calls > 0
    counter.calls = 0
    build_onnx_embedder(path, samples=WINDOW, dim=8, seed=1)  # another model, same path
    other = extract_features(clips, s, progress=False)
    assert other.n_computed == 12 and counter.calls > 0
    assert not np.array_equal(other.X, first.X)


def test_cache_key_holds_the_model_hash_runtime_and_windows_not_the_path(
    onnx_file, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = onnx_file
    model = OnnxModel(path=path, sample_rate=SR)
    spec = embedding_spec(model, _settings(path, tmp_path))
    assert spec["sha256"] == model.identity.sha256
    assert spec["runtime"] == "onnxruntime" and spec["runtime_version"]
    assert (spec["sample_rate"], spec["window"], spec["hop"]) == (SR, WINDOW, WINDOW)
    assert {"soxr", "soundfile", "libsndfile", "numpy"} == set(spec["versions"])
    assert str(path) not in repr(spec)

    clips = _clips(demo_root, 4)
    extract_features(clips, _settings(path, tmp_path / "cache"), progress=False)
    moved = tmp_path / "elsewhere" / "same.onnx"  # another machine's install of the same file
    moved.parent.mkdir()
    shutil.copy(path, moved)
    counter = _Counter(monkeypatch)
    shared = extract_features(
        clips, _settings(moved, tmp_path / "cache", pooling="max"), progress=False
    )
    assert (shared.n_cached, counter.calls) == (4, 0)
    # A new runtime version recomputes.
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda d: "0.0-test" if d == "onnxruntime" else real(d)
    )
    upgraded = extract_features(clips, _settings(path, tmp_path / "cache"), progress=False)
    assert upgraded.n_computed == 4 and counter.calls > 0


def test_threads_and_batch_sizes_give_bitwise_the_same_rows(
    onnx_file, demo_root: Path, tmp_path: Path
) -> None:
    path, _ = onnx_file
    clips = _clips(demo_root, 20)
    one = extract_features(
        clips, _settings(path, tmp_path / "a", n_jobs=1, batch_size=1), progress=False
    )
    two = extract_features(
        clips, _settings(path, tmp_path / "b", n_jobs=2, batch_size=7), progress=False
    )
    np.testing.assert_array_equal(one.X, two.X)


def test_concat_mfcc_appends_the_tutorials_mfcc_means(
    onnx_file, demo_root: Path, tmp_path: Path
) -> None:
    path, _ = onnx_file
    clips = _clips(demo_root, 6)
    s = _settings(path, tmp_path / "cache", concat_mfcc=20)
    fs = extract_features(clips, s, progress=False)
    alone = extract_features(clips, _settings(path, tmp_path / "cache"), progress=False)
    mfcc = extract_features(
        clips, FeatureSettings(n_mfcc=20, cache_dir=str(tmp_path / "m")), progress=False
    )
    np.testing.assert_array_equal(fs.X, np.hstack([alone.X, mfcc.X]))
    names = feature_names(s)
    assert len(names) == 8 + 20 and names[8:10] == ["mean_mfcc0", "mean_mfcc1"]
    assert embedding_names(s, dim=8) == names


def test_bad_clips_raise_or_are_skipped_and_listed(
    onnx_file, demo_root: Path, tmp_path: Path
) -> None:
    path, _ = onnx_file
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEfmt " + b"\0" * 20)
    clips = [*_clips(demo_root, 3), bad, tmp_path / "missing.wav", *_clips(demo_root, 5)[3:]]
    with pytest.raises(AudioError, match=r"missing\.wav: no such file"):
        extract_features(clips, _settings(path, tmp_path / "c1"), progress=False)
    with pytest.raises(AudioError, match=r"bad\.wav"):
        extract_features([*clips[:4], *clips[5:]], _settings(path, tmp_path / "c2"), progress=False)
    for concat in (0, 13):
        fs = extract_features(
            clips,
            _settings(path, tmp_path / "c3", on_error="skip", concat_mfcc=concat),
            progress=False,
        )
        assert fs.ok.tolist() == [True, True, True, False, False, True, True]
        assert [s["path"] for s in fs.skipped] == [str(bad), str(tmp_path / "missing.wav")]
        assert fs.X.shape == (5, 8 + concat)


def test_corrupt_and_non_finite_entries_are_recomputed(
    onnx_file, demo_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from urbansound.features import cache as feature_cache

    path, _ = onnx_file
    clips = _clips(demo_root, 4)
    s = _settings(path, tmp_path / "cache", pooling="mean_std")
    good = extract_features(clips, s, progress=False)
    entries = sorted((tmp_path / "cache" / "embeddings").glob("*/*.bin"))
    assert len(entries) == 4
    entries[0].write_bytes(entries[0].read_bytes()[:-4])
    key = entries[1].read_bytes()[8:40]
    array = feature_cache.read_entry(entries[1], key).copy()
    array[0, 0] = np.nan
    feature_cache.write_entry(entries[1], key, array, tmp_dir=tmp_path)
    again = extract_features(clips, dataclasses.replace(s, pooling="mean"), progress=False)
    assert (again.n_computed, again.n_cached) == (2, 2)
    assert "corrupt feature cache entry" in caplog.text and "non-finite" in caplog.text
    fresh = extract_features(clips, _settings(path, tmp_path / "fresh"), progress=False)
    np.testing.assert_array_equal(again.X, fresh.X)
    assert good.X.shape == (4, 16)


_CHILD = textwrap.dedent(
    """
    import sys, time
    from tests.helpers.embeddings import build_onnx_embedder
    from urbansound.config.settings import EmbeddingFeatureSettings, OnnxEmbeddingSettings
    from urbansound.features.embeddings.onnx_model import OnnxModel
    from urbansound.features.extraction import extract_features
    from pathlib import Path
    run = OnnxModel.run_session
    def slow(model, session, windows):
        time.sleep(0.05)
        return run(model, session, windows)
    OnnxModel.run_session = slow
    root, model, cache = sys.argv[1:4]
    clips = sorted(Path(root).glob("audio/fold*/*.wav"))[:40]
    e = OnnxEmbeddingSettings(path=model, sample_rate=16000, batch_size=4)
    s = EmbeddingFeatureSettings(kind="onnx", embedding=e, cache_dir=cache, n_jobs=2)
    print("started", flush=True)
    extract_features(clips, s, progress=False)
    print("done", flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_an_interrupted_extraction_keeps_every_finished_clip(
    onnx_file, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sig: int
) -> None:
    path, _ = onnx_file
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(demo_root), str(path), str(cache)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    entries = cache / "embeddings"
    deadline = time.monotonic() + 120
    while len(list(entries.glob("*/*.bin"))) < 5 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert "done" not in out, "the extraction finished before it was interrupted"
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in err and proc.returncode != 0
    kept = len(list(entries.glob("*/*.bin")))
    assert 5 <= kept < 40
    if sig == signal.SIGINT:  # the batches in flight were abandoned without a partial entry
        assert not list((cache / "tmp").iterdir())

    counter = _Counter(monkeypatch)
    clips = _clips(demo_root, 40)
    s = _settings(path, cache, batch_size=4, n_jobs=2)
    resumed = extract_features(clips, s, progress=False)
    assert (resumed.n_cached, resumed.n_computed) == (kept, 40 - kept)
    fresh = extract_features(clips, _settings(path, tmp_path / "fresh"), progress=False)
    np.testing.assert_array_equal(resumed.X, fresh.X)
    assert counter.calls > 0


def test_a_clip_embedded_outside_the_cache_gives_bitwise_its_training_row(
    onnx_file, demo_root: Path, tmp_path: Path
) -> None:
    from urbansound.features.embeddings.stage import audio_row

    path, _ = onnx_file
    clips = _clips(demo_root, 6)
    s = _settings(path, tmp_path / "cache", hop=0.03, pooling="stats", concat_mfcc=13, n_jobs=2)
    trained = extract_features(clips, s, progress=False)
    model = OnnxModel(path=path, sample_rate=SR, batch_size=1)
    from threadpoolctl import threadpool_limits

    for clip, row in zip(clips, trained.X, strict=True):
        with threadpool_limits(1, user_api="blas"):  # as the extraction and predict
            got = audio_row(
                load_audio(clip, sr=SR), model, s, mfcc_audio=load_audio(clip, sr=22_050)
            )
        np.testing.assert_array_equal(got, row)
