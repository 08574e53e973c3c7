"""Small model files for the inference tests, written by :func:`save_model` without training.

An MLP of random weights on 13 MFCCs (``n_features`` 13) or a fitted scikit-learn pipeline on
random data: the format and its checks do not depend on what was learned.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from urbansound.config.settings import FeatureSettings
from urbansound.inference.modelfile import Member, save_model
from urbansound.inference.stage import feature_settings_dict, feature_stage
from urbansound.inference.validation import content_digest

CLASSES = [f"class{i}" for i in range(10)]
N_MFCC = 13


def metadata(n_classes: int = len(CLASSES)) -> dict[str, Any]:
    """What a fit writes, for 13 mean-pooled MFCCs."""
    from urbansound.features.extraction import feature_names

    settings = FeatureSettings(n_mfcc=N_MFCC)
    return {
        "class_names": CLASSES[:n_classes],
        "window_s": 4.0,
        "features": {
            "settings": feature_settings_dict(settings),
            "names": feature_names(settings),
            "n_features": N_MFCC,
            "stage": feature_stage(),
        },
        "train": {"seeds": [0]},
        "training_data": {"n_clips": 60, "clips_per_class": {c: 6 for c in CLASSES}},
        "evaluation": {"accuracy": 0.5, "n_clips": 60},
    }


def mlp_member(seed: int = 0) -> Member:
    """A standardising MLP member 13 -> 16 -> 10 of random weights."""
    rng = np.random.default_rng(seed)
    params = [
        (rng.standard_normal((N_MFCC, 16)).astype(np.float32) * 0.3, np.zeros(16, np.float32)),
        (rng.standard_normal((16, 10)).astype(np.float32) * 0.3, np.zeros(10, np.float32)),
    ]
    return Member(
        seed=seed,
        fold="all",
        params=params,
        mean=rng.standard_normal(N_MFCC) * 10,
        std=rng.uniform(1.0, 5.0, N_MFCC),
    )


def sklearn_member(estimator: Any = None, family: str = "sklearn") -> Member:
    """A fitted ``StandardScaler`` + classifier pipeline (logistic regression by default) on
    random 13-wide features of the 10 classes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, N_MFCC)).astype(np.float32)
    y = np.arange(100) % 10
    classifier = LogisticRegression(max_iter=200) if estimator is None else estimator
    pipe = make_pipeline(StandardScaler(), classifier)
    return Member(seed=0, fold="all", family=family, estimator=pipe.fit(X, y))


def write_model(path: Path, members: list[Member] | None = None) -> Path:
    """A model file of ``members`` (one MLP by default) at ``path``."""
    return save_model(path, members or [mlp_member()], metadata())


def rewrite(path: Path, dest: Path, change: Any, *, checksum: str = "recompute") -> Path:
    """``path`` rewritten to ``dest`` with ``change(meta, tensors)`` applied (it edits the
    metadata dict and the tensors in place). ``checksum``: ``"recompute"`` (as someone editing
    the file would), ``"keep"`` (the stored one: damage) or ``"drop"`` (an earlier version's
    file, which had none)."""
    from safetensors.numpy import load, save

    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])["__metadata__"]
    meta = json.loads(header["urbansound"])
    tensors = load(raw)
    change(meta, tensors)
    text = json.dumps(meta)
    header = {**header, "urbansound": text}
    if checksum == "recompute":
        header["sha256"] = content_digest(text, tensors)
    elif checksum == "drop":
        header.pop("sha256")
    dest.write_bytes(save(tensors, metadata=header))
    return dest
