"""results.json's costs: what a fitted model costs to keep and to use, for a hand-made feature
kind and an embedding kind (an ONNX network), measured as ``predict`` would spend them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tests.helpers.embeddings import build_onnx_embedder
from urbansound.config.settings import (
    EmbeddingFeatureSettings,
    FeatureSettings,
    OnnxEmbeddingSettings,
)
from urbansound.experiment.costs import measure_costs, model_member
from urbansound.inference.modelfile import save_model

COSTS = {
    "model_bytes",
    "model_ms_per_clip",
    "feature_ms_per_clip",
    "inference_ms_per_clip",
    "train_seconds",
}


def _fitted(n_features: int) -> tuple[object, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, n_features)).astype(np.float32)
    y = np.arange(80) % 3
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=200)).fit(X, y), X


@pytest.mark.parametrize("kind", ["mfcc", "onnx"])
def test_costs_are_measured_for_hand_made_and_embedding_features(
    kind: str, demo_dir: Path, tmp_path: Path
) -> None:
    if kind == "mfcc":
        features = FeatureSettings()
    else:
        network = tmp_path / "embedder.onnx"
        build_onnx_embedder(network, samples=1600, dim=16)
        features = EmbeddingFeatureSettings(
            kind="onnx",
            embedding=OnnxEmbeddingSettings(path=str(network), sample_rate=16_000, hop=0.05),
        )
    model, X = _fitted(12)
    clips = sorted(str(p) for p in demo_dir.rglob("*.wav"))[:3]
    costs = measure_costs(
        model,
        X,
        n_classes=3,
        clip_paths=clips,
        features=features,
        family="logreg",
        seed=0,
        train_seconds=1.5,
    )
    assert set(costs) == COSTS
    assert costs["inference_ms_per_clip"] == pytest.approx(
        costs["feature_ms_per_clip"] + costs["model_ms_per_clip"]
    )
    assert costs["feature_ms_per_clip"] > 0 and costs["model_ms_per_clip"] > 0
    assert costs["train_seconds"] == 1.5
    # the size of the model as a model file stores it (skops inside safetensors)
    member = model_member(model, seed=0, fold=0, family="logreg")
    written = save_model(tmp_path / "m.safetensors", [member], {"purpose": "costs"})
    assert costs["model_bytes"] == written.stat().st_size


def test_clips_that_do_not_decode_leave_the_feature_times_out(tmp_path: Path) -> None:
    model, X = _fitted(4)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio")
    costs = measure_costs(
        model,
        X,
        n_classes=3,
        clip_paths=[str(broken)],
        features=FeatureSettings(),
        family="logreg",
        seed=0,
        train_seconds=0.1,
    )
    assert set(costs) == {"model_bytes", "model_ms_per_clip", "train_seconds"}


class _Custom(LogisticRegression):
    """A type no model file stores (off its allowlist)."""


def test_a_model_no_model_file_stores_leaves_model_bytes_out(demo_dir: Path) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 6)).astype(np.float32)
    model = _Custom(max_iter=200).fit(X, np.arange(60) % 3)
    costs = measure_costs(
        model,
        X,
        n_classes=3,
        clip_paths=sorted(str(p) for p in demo_dir.rglob("*.wav"))[:1],
        features=FeatureSettings(),
        family="sklearn",
        seed=0,
        train_seconds=0.1,
    )
    assert "model_bytes" not in costs
    assert costs["inference_ms_per_clip"] > costs["model_ms_per_clip"] > 0
