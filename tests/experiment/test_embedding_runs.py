"""Runs on embedding features: every family trains on them through the same CV, results.json
records the network (name, file hash, runtime, licence), and the command line says a feature
kind set without its group in one line."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import cli_env, fit_settings
from tests.helpers.embeddings import build_onnx_embedder, needs_birdnet
from urbansound.config.settings import (
    EmbeddingFeatureSettings,
    ForestSettings,
    HistGBSettings,
    KNNSettings,
    LogRegSettings,
    ModelSettings,
    OnnxEmbeddingSettings,
    SklearnSettings,
    SVMSettings,
)
from urbansound.experiment.run import run_experiment
from urbansound.features.embeddings.model import file_sha256

FAMILIES = {
    "mlp": ModelSettings(hidden=(32,), dropout=0.0),
    "logreg": LogRegSettings(C=0.1),
    "svm": SVMSettings(),
    "random_forest": ForestSettings(n_estimators=30, stages=2),
    "extra_trees": ForestSettings(family="extra_trees", n_estimators=30, stages=2),
    "hist_gb": HistGBSettings(max_iter=20, stages=2),
    "knn": KNNSettings(n_neighbors=3),
    "sklearn": SklearnSettings(target="sklearn.naive_bayes.GaussianNB"),
}


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "embedder.onnx"
    build_onnx_embedder(path, samples=1600, dim=16)
    return path


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_trains_on_onnx_embeddings(
    family: str, onnx_model: Path, demo_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cache = tmp_path_factory.getbasetemp() / "embedding-runs-cache"  # shared: one extraction
    base = fit_settings(demo_dir, cache, epochs=5)
    features = EmbeddingFeatureSettings(
        kind="onnx",
        embedding=OnnxEmbeddingSettings(path=str(onnx_model), sample_rate=16_000, hop=0.05),
        pooling="mean_std",
        cache_dir=str(cache),
        n_jobs=2,
    )
    settings = dataclasses.replace(base, features=features, model=FAMILIES[family])
    run_dir = tmp_path_factory.mktemp(family)
    outcome = run_experiment(settings, run_dir=run_dir, progress=False)
    assert outcome.result.status == "complete"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["n_features"] == 32  # mean and std of 16 dimensions
    assert len(results["folds"]) == 10 and 0.0 <= results["mean_accuracy"] <= 1.0
    model = results["feature_model"]
    assert model["name"] == "onnx:embedder.onnx" and model["runtime"] == "onnxruntime"
    assert model["sha256"] == file_sha256(onnx_model) and model["path"] == str(onnx_model)


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "urbansound.run", *args, "tracking.mode=disabled"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_feature_kind_set_without_its_group_is_one_error_line(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "features.kind=birdnet")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "error: features.kind=birdnet: write features=birdnet instead (the config "
        "group brings the kind's own keys; features.kind alone keeps another "
        "kind's)"
    ]
    assert not (tmp_path / "outputs" / "runs").exists() or not list(
        (tmp_path / "outputs" / "runs").rglob("results.json")
    )


def _tiny_real_dataset(real_root: Path, dest: Path, per_fold: int = 3) -> Path:
    """An UrbanSound8K-layout folder with the full metadata and a few real clips of three folds
    (run it with ``data.missing=skip``)."""
    meta = pd.read_csv(real_root / "metadata" / "UrbanSound8K.csv")
    meta["file"] = [
        real_root / "audio" / f"fold{f}" / n
        for f, n in zip(meta.fold, meta.slice_file_name, strict=True)
    ]
    present = meta[[p.is_file() for p in meta.file]]
    folds = present.fold.value_counts().index[:3]
    (dest / "metadata").mkdir(parents=True)
    shutil.copy(real_root / "metadata" / "UrbanSound8K.csv", dest / "metadata")
    for f in folds:
        for path in present[present.fold == f].file.head(per_fold):
            (dest / "audio" / f"fold{f}").mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest / "audio" / f"fold{f}" / path.name)
    return dest


@needs_birdnet
@pytest.mark.slow
def test_a_birdnet_run_records_the_model_and_its_licence(real_root: Path, tmp_path: Path) -> None:
    root = _tiny_real_dataset(real_root, tmp_path / "us8k")
    proc = _cli(
        tmp_path,
        "features=birdnet",
        "model=logreg",
        "model.C=0.1",
        f"data.root={root}",
        "data.missing=skip",
        "features.n_jobs=2",
        "hydra.run.dir=run",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["n_features"] == 1024 and results["n_clips"] == 9
    model = results["feature_model"]
    assert model["name"] == "BirdNET V2.4" and model["licence"] == "CC BY-NC-SA 4.0"
    assert model["layer"] == "model/GLOBAL_AVG_POOL/Mean" and len(model["sha256"]) == 64
    assert "dataset figures not drawn" not in proc.stderr
