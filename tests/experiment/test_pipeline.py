"""The one pipeline of run and fit: the task's clips, their features, labels and folds in step,
and a selection that cannot work said before any audio is decoded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import DEMO_CLIPS_PER_CLASS, fit_settings
from urbansound.errors import DataError
from urbansound.experiment.pipeline import prepare_data


def test_prepared_data_holds_the_selected_clips_features_labels_and_folds(
    demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from urbansound.features.extraction import extract_features

    monkeypatch.delenv("URBANSOUND8K", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = fit_settings(demo_dir, tmp_path / "cache")
    data = prepare_data(
        settings, select=lambda clips: clips[clips["fold"].isin([2, 5])], progress=False
    )
    assert data.dataset == "demo" and data.n_listed == 10 * DEMO_CLIPS_PER_CLASS
    assert sorted(set(data.folds.tolist())) == [2, 5]
    assert data.n_clips == len(data.clips) == len(data.y) == len(data.folds)
    assert list(data.clips.index) == list(range(data.n_clips))  # rows of X, in order
    np.testing.assert_array_equal(data.y, data.clips["classID"].to_numpy())
    np.testing.assert_array_equal(data.folds, data.clips["fold"].to_numpy())
    direct = extract_features(list(data.clips["path"]), settings.features, progress=False)
    np.testing.assert_array_equal(data.X, direct.X)
    assert data.n_features == 13 and data.class_names[8] == "siren"
    assert data.n_computed + data.n_cached == data.n_clips and not data.skipped
    assert set(data.durations) == {"index", "features"}


def test_a_selection_that_cannot_work_stops_before_any_feature(
    demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("URBANSOUND8K", raising=False)
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"

    def refuse(clips):
        raise DataError("cv.outer_fold=11 names a fold with no clips")

    with pytest.raises(DataError, match=r"cv\.outer_fold=11"):
        prepare_data(fit_settings(demo_dir, cache), select=refuse, progress=False)
    assert not cache.exists()
