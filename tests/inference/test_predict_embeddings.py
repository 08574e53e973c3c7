"""Fit and predict on embedding features: the model file records the network (file, SHA-256,
runtime, licence), predict embeds new audio with the training windows and gives the trainer's
probabilities on training clips bitwise, long recordings are windowed, and a network file that
changed since the fit is refused in one line."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import cli_env, fit_settings
from tests.helpers.embeddings import build_onnx_embedder, needs_birdnet
from urbansound.config.settings import (
    EmbeddingFeatureSettings,
    EmbeddingSettings,
    LogRegSettings,
    OnnxEmbeddingSettings,
)
from urbansound.features.embeddings.model import file_sha256
from urbansound.inference.modelfile import ModelFileError, load_model
from urbansound.inference.predict import min_hop, predict_files


def _fit(settings, tmp: Path):
    from urbansound.experiment.fit import fit_model

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("URBANSOUND8K", raising=False)
        mp.chdir(tmp)
        return fit_model(settings, run_dir=tmp / "fit", progress=False)


@pytest.fixture(scope="module")
def onnx_fitted(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """An MLP fitted on the demo corpus's ONNX embeddings (pooled mean and std, the MFCC means
    appended), in process; the model file sits beside the fit's run directory."""
    tmp = tmp_path_factory.mktemp("onnx-fitted")
    model = tmp / "embedder.onnx"
    build_onnx_embedder(model, samples=1600, dim=16)
    features = EmbeddingFeatureSettings(
        kind="onnx",
        embedding=OnnxEmbeddingSettings(
            path="embedder.onnx", sample_rate=16_000, hop=0.05, concat_mfcc=13
        ),  # a path relative to the fit's working directory: the model file keeps it absolute
        pooling="mean_std",
        cache_dir=str(tmp / "cache"),
        n_jobs=2,
    )
    settings = dataclasses.replace(fit_settings(demo_dir, tmp / "cache"), features=features)
    return _fit(settings, tmp), model


def test_the_model_file_records_the_network_and_predict_gives_the_trainers_probabilities(
    onnx_fitted, tmp_path: Path
) -> None:
    fitted, onnx_file = onnx_fitted
    model = load_model(fitted.model_path)
    recorded = model.feature_model
    assert recorded["sha256"] == file_sha256(onnx_file) and recorded["path"] == str(onnx_file)
    assert recorded["runtime"] == "onnxruntime" and "not stated" in recorded["licence"]
    assert (recorded["dim"], recorded["sample_rate"], recorded["hop_samples"]) == (16, 16_000, 800)
    assert model.n_features == 2 * 16 + 13
    assert model.features.embedding.concat_mfcc == 13
    assert min_hop(model) == pytest.approx(0.05)

    preds = predict_files(model, fitted.test_paths)  # from another working directory
    assert all(len(p.windows) == 1 for p in preds)
    got = np.stack([p.windows[0].probabilities for p in preds])
    np.testing.assert_array_equal(got, fitted.probabilities)  # bitwise

    # a long recording: windows of the training clips' length, each embedded as a clip
    sr = 16_000
    from urbansound.features.audio import load_audio

    clips = [load_audio(p, sr=sr) for p in fitted.test_paths[:30]]
    clips = [c for c in clips if len(c) == 4 * sr][:3]
    long_file = tmp_path / "long.wav"
    sf.write(long_file, np.concatenate(clips), sr, subtype="FLOAT")
    (pred,) = predict_files(model, [str(long_file)])
    assert [(w.start, w.end) for w in pred.windows] == [(0.0, 4.0), (4.0, 8.0), (8.0, 12.0)]


def test_a_network_file_changed_since_the_fit_is_one_error_line(
    onnx_fitted, tmp_path: Path
) -> None:
    fitted, onnx_file = onnx_fitted
    original = onnx_file.read_bytes()
    try:
        build_onnx_embedder(onnx_file, samples=1600, dim=16, seed=7)  # same shape, new weights
        model = load_model(fitted.model_path)
        with pytest.raises(ModelFileError, match=r"now has .*restore the file the model was"):
            predict_files(model, fitted.test_paths[:1])
        proc = subprocess.run(
            [sys.executable, "-m", "urbansound.predict", str(fitted.model_path),
             fitted.test_paths[0]],
            cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 2
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("error: ") and f"embeddings of {onnx_file}" in line
        onnx_file.unlink()
        with pytest.raises(ModelFileError, match=r"cannot be used here: .*no such file"):
            predict_files(load_model(fitted.model_path), fitted.test_paths[:1])
    finally:
        onnx_file.write_bytes(original)


@needs_birdnet
@pytest.mark.slow
def test_a_birdnet_model_file_predicts_what_the_fit_did_and_records_the_licence(
    real_root: Path, tmp_path: Path
) -> None:
    from tests.experiment.test_embedding_runs import _tiny_real_dataset

    root = _tiny_real_dataset(real_root, tmp_path / "us8k")
    base = fit_settings(tmp_path / "demo", tmp_path / "cache")
    settings = dataclasses.replace(
        base,
        data=dataclasses.replace(base.data, root=str(root), missing="skip"),
        features=EmbeddingFeatureSettings(
            embedding=EmbeddingSettings(hop=1.5), cache_dir=str(tmp_path / "cache"), n_jobs=2
        ),
        model=LogRegSettings(C=0.1),
    )
    fitted = _fit(settings, tmp_path)
    model = load_model(fitted.model_path)
    assert model.feature_model["licence"] == "CC BY-NC-SA 4.0"
    assert model.feature_model["name"] == "BirdNET V2.4" and model.n_features == 1024
    proc = subprocess.run(
        [sys.executable, "-m", "urbansound.predict", str(fitted.model_path), *fitted.test_paths],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    got = np.array([[np.float32(r[n]) for n in model.class_names] for r in rows], np.float32)
    np.testing.assert_array_equal(got, fitted.probabilities)
    meta = json.loads(json.dumps(model.metadata))  # JSON-ready, as written
    assert meta["features"]["settings"]["embedding"] == {"hop": 1.5, "concat_mfcc": 0}
