"""Figures: confusion matrix, per-run figures, the per-dataset class examples and their cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from urbansound.config.settings import FeatureSettings
from urbansound.experiment import plots
from urbansound.training.results import CVResult, EpochMetrics, FoldResult, RunResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_MAGIC, f"{path} is not a PNG"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _results(n_classes: int = 3) -> dict:
    names = [f"class{i}" for i in range(n_classes)]
    folds = []
    for k, diag in ((1, 4), (2, 3)):
        cm = np.ones((n_classes, n_classes), int)
        np.fill_diagonal(cm, diag)
        acc = float(np.trace(cm) / cm.sum())
        folds.append({"fold": k, "accuracy": acc, "confusion": cm.tolist()})
    history = [
        {
            "epoch": e,
            "train_loss": [1.0 / e, 1.1 / e],
            "test_loss": [1.2 / e, 1.3 / e],
            "test_accuracy": [0.3 + 0.1 * e, 0.25 + 0.1 * e],
            "mean_test_accuracy": 0.275 + 0.1 * e,
        }
        for e in (1, 2, 3)
    ]
    return {
        "dataset": "demo",
        "protocol": "folds",
        "class_names": names,
        "folds": folds,
        "history": history,
    }


def _run_result(*, pruned: bool = False) -> RunResult:
    """``_results()`` as the typed result of a complete run (or of one pruned after 3 epochs)."""
    res = _results()
    folds = [
        FoldResult(
            f["fold"], f["accuracy"], 0.5, 10, int(np.sum(f["confusion"])), [], f["confusion"]
        )
        for f in res["folds"]
    ]
    history = [EpochMetrics.from_dict(h, folds=[1, 2]) for h in res["history"]]
    common = {
        "dataset": "demo",
        "data_root": "",
        "protocol": "folds",
        "leaky": False,
        "n_listed": 24,
        "n_clips": 24,
        "n_missing": 0,
        "empty_folds": [],
        "skipped": [],
        "class_names": res["class_names"],
        "n_features": 13,
        "overrides": [],
        "trial": {"study_name": None, "number": None},
    }
    if pruned:
        return RunResult(status="pruned", history=history, pruned_at_epoch=3, **common)
    return RunResult(status="complete", cv=CVResult(folds=folds, history=history), **common)


def test_confusion_matrix_counts_and_accuracy(tmp_path):
    cm = np.array([[3, 1, 0], [0, 2, 2], [1, 0, 3]])
    fig = plots.confusion_matrix_figure(cm, ["a", "b", "c"], title="t")
    ax = fig.axes[0]
    # one annotation per non-zero cell, holding its count
    assert sorted(t.get_text() for t in ax.texts) == sorted(str(v) for v in cm.ravel() if v)
    # 8 of 12 clips on the diagonal
    assert "12 test clips, accuracy 0.667" in ax.get_title()
    # colours are row shares: row b is split 2/4 and 2/4
    assert ax.images[0].get_array()[1].tolist() == [0.0, 0.5, 0.5]
    w, h = _png_size(plots.save_figure(fig, tmp_path / "cm.png"))
    assert w > 200 and h > 200
    assert list(tmp_path.iterdir()) == [tmp_path / "cm.png"]  # no temporary file left behind


def test_confusion_matrix_shape_mismatch():
    with pytest.raises(ValueError, match="must be 2x2"):
        plots.confusion_matrix_figure(np.eye(3, dtype=int), ["a", "b"])


def test_summed_confusion():
    res = _results()
    total = plots.summed_confusion(res["folds"])
    assert total.tolist() == (np.ones((3, 3)) * 2 + np.eye(3) * 5).astype(int).tolist()


def test_write_run_figures(tmp_path):
    written = plots.write_run_figures(tmp_path, _run_result())
    assert [p.name for p in written] == ["confusion_matrix.png", "epoch_curves.png"]
    for p in written:
        assert p.parent == tmp_path / "figures"
        _png_size(p)
    # a pruned run: history only
    pruned = _run_result(pruned=True)
    assert [p.name for p in plots.write_run_figures(tmp_path / "p", pruned)] == ["epoch_curves.png"]


def test_epoch_curves_of_a_run_result_equal_those_of_its_results_json():
    typed = plots.epoch_curves_figure(_run_result().epochs)
    raw = plots.epoch_curves_figure(_results()["history"])
    for a, b in zip(typed.axes, raw.axes, strict=True):
        assert [ln.get_ydata().tolist() for ln in a.lines] == [
            ln.get_ydata().tolist() for ln in b.lines
        ]


def test_epoch_curves_lines():
    fig = plots.epoch_curves_figure(_results()["history"])
    acc_ax = fig.axes[1]
    mean_line = next(ln for ln in acc_ax.lines if ln.get_label() == "mean over folds")
    assert mean_line.get_ydata().tolist() == pytest.approx([0.375, 0.475, 0.575])
    assert len(acc_ax.lines) == 3  # two folds + the mean


def _write_clips(root: Path) -> pd.DataFrame:
    """Two short clips per class for three classes; class 1's first file is not audio."""
    rows = []
    sr = 8000
    t = np.arange(int(0.4 * sr)) / sr
    for cid in range(3):
        for j in range(2):
            path = root / f"{cid}-{j}.wav"
            if cid == 1 and j == 0:
                path.write_bytes(b"not audio at all")
            else:
                y = 0.3 * np.sin(2 * np.pi * (300 + 200 * cid + 50 * j) * t)
                sf.write(path, y.astype(np.float32), sr)
            rows.append({"path": str(path), "classID": cid, "fold": 1 + j})
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_dataset_figures_drawn_once_per_stage_settings_and_linked(tmp_path):
    clips = _write_clips(tmp_path)
    names = ["air_conditioner", "car_horn", "children_playing"]
    feats = FeatureSettings(sr=8000, n_fft=512, hop_length=128, n_mels=32, n_mfcc=13)
    kw = {"class_names": names, "dataset": "demo", "cache_dir": tmp_path / "cache"}
    first = plots.dataset_figures(clips, dest=tmp_path / "run1", features=feats, **kw)
    assert sorted(first.figures) == [
        "class_0_air_conditioner",
        "class_1_car_horn",
        "class_2_children_playing",
        "classes_overview",
    ]
    assert [name for name, _ in first.samples] == names
    (cached,) = (tmp_path / "cache").iterdir()
    assert cached.name.startswith("demo-")
    done = json.loads((cached / "done.json").read_text())
    # class 1's first clip cannot be decoded: its second clip is drawn instead
    assert done["clips"]["car_horn"].endswith("1-1.wav")
    assert done["clips"]["air_conditioner"].endswith("0-0.wav")
    # the sample is the clip decoded at features.sr, 16-bit PCM
    wav = dict(first.samples)["car_horn"]
    y, sr = sf.read(wav)
    assert sr == 8000 and sf.info(wav).subtype == "PCM_16"
    ref, _ = sf.read(tmp_path / "1-1.wav")
    assert np.abs(y - ref).max() < 1e-4
    stamps = {p.name: p.stat().st_mtime_ns for p in cached.glob("*.png")}

    # n_mfcc, pooling and the model do not change the figures: the cache entry is reused
    other = FeatureSettings(**{**feats.__dict__, "n_mfcc": 20, "pooling": "max"})
    second = plots.dataset_figures(clips, dest=tmp_path / "run2", features=other, **kw)
    assert sorted(second.figures) == sorted(first.figures)
    assert {p.name: p.stat().st_mtime_ns for p in cached.glob("*.png")} == stamps  # not redrawn
    for p in [*second.figures.values(), *(w for _, w in second.samples)]:
        assert p.parent == tmp_path / "run2"
        assert p.stat().st_ino == (cached / p.name).stat().st_ino  # a link, not a copy
    for p in second.figures.values():
        _png_size(p)

    # other stage settings, other cache entry
    plots.dataset_figures(clips, features=FeatureSettings(**{**feats.__dict__, "n_mels": 16}), **kw)
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_class_example_figure_shows_log_mel_in_db_with_colour_bar():
    feats = FeatureSettings(sr=8000, n_fft=512, hop_length=128, n_mels=32)
    t = np.arange(8000) / 8000
    y = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    s_db = plots._log_mel_db(y, feats)
    assert s_db.max() == 0.0 and s_db.min() >= -80.0
    fig = plots.class_example_figure(y, s_db, features=feats, title="a")
    _wave, spec, cbar = fig.axes
    assert spec.get_xlabel() == "time (s)" and spec.get_ylabel() == "frequency (Hz)"
    assert "dB" in cbar.get_ylabel()


def test_epoch_axis_ticks_are_integers():
    fig = plots.epoch_curves_figure(_results()["history"])
    for ax in fig.axes:
        ticks = ax.get_xticks()
        assert np.all(ticks == np.round(ticks)), ticks


def test_the_figure_cache_is_inside_the_cache_directory_chosen(tmp_path):
    """It was ``Path(features.cache_dir).parent / "figures"``: a cache_dir of /data/cache wrote
    /data/figures, outside what the user chose."""
    chosen = tmp_path / "mine" / "cache"
    feats = FeatureSettings(cache_dir=str(chosen))
    assert plots.dataset_figures_cache(feats) == chosen / "figures"
    home = FeatureSettings(cache_dir="~/urbansound-cache")
    assert plots.dataset_figures_cache(home) == Path.home() / "urbansound-cache" / "figures"
