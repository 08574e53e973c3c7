"""The scikit-learn model families: same splits, same CVResult, same run outputs as the MLP."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException
from sklearn.base import BaseEstimator, ClassifierMixin

from tests.helpers import DEMO_CLIPS_PER_CLASS
from urbansound.config.checks import settings_from_config
from urbansound.config.schema import config_error
from urbansound.config.settings import (
    FAMILIES,
    ForestSettings,
    HistGBSettings,
    KNNSettings,
    LogRegSettings,
    SklearnSettings,
    SVMSettings,
    TrainSettings,
)
from urbansound.data.cv import Split
from urbansound.errors import ConfigError, DataError, TrialPruned
from urbansound.training.cross_validation import cross_validate
from urbansound.training.families import stage_sizes
from urbansound.training.problem import CVProblem

N_CLASSES = 6  # class 5 never occurs: its column must still be there, all zeros


class CentroidClassifier(ClassifierMixin, BaseEstimator):
    """A user's own classifier (importable as tests.training.test_families.CentroidClassifier):
    softmax over minus the squared distances to the class centroids, divided by a temperature."""

    def __init__(self, temperature: float = 1.0, random_state: int | None = None) -> None:
        self.temperature = temperature
        self.random_state = random_state

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.centroids_ = np.stack([X[y == c].mean(axis=0) for c in self.classes_])
        return self

    def predict_proba(self, X):
        d = ((X[:, None, :] - self.centroids_[None]) ** 2).sum(axis=2) / self.temperature
        e = np.exp(-(d - d.min(axis=1, keepdims=True)))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


SMALL = {
    "svm": SVMSettings(C=1.0),
    "logreg": LogRegSettings(),
    "random_forest": ForestSettings(n_estimators=20, stages=4),
    "extra_trees": ForestSettings(family="extra_trees", n_estimators=20, stages=4),
    "hist_gb": HistGBSettings(max_iter=15, stages=3),
    "knn": KNNSettings(n_neighbors=3),
    "sklearn": SklearnSettings(
        target="tests.training.test_families.CentroidClassifier", params={"temperature": 4.0}
    ),
}


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray, list[Split]]:
    """200 clips, 8 features, 5 overlapping classes, 4 folds."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 40)
    X = (rng.normal(size=(5, 8)) * 2.0)[y] + rng.normal(size=(200, 8)) * 1.5 + 10.0
    fold = np.tile(np.arange(1, 5), 50)
    splits = [
        Split(fold=k, train=np.flatnonzero(fold != k), test=np.flatnonzero(fold == k))
        for k in range(1, 5)
    ]
    return X.astype(np.float32), y, splits


def _cv(data, model, **kw):
    X, y, splits = data
    train = kw.pop("train", TrainSettings(threads=2))
    return cross_validate(
        CVProblem(X, y, splits, n_classes=N_CLASSES, model=model, train=train),
        progress=False,
        **kw,
    )


def test_small_settings_cover_every_scikit_learn_family() -> None:
    assert sorted(SMALL) == sorted(f for f in FAMILIES if f != "mlp")


@pytest.mark.parametrize("family", sorted(SMALL))
def test_each_family_gives_metrics_that_follow_from_its_predictions(blobs, family) -> None:
    X, y, splits = blobs
    model = SMALL[family]
    result = _cv(blobs, model, keep_models=True)
    assert [f.fold for f in result.folds] == [1, 2, 3, 4]
    assert [p.fold for p in result.predictions] == [1, 2, 3, 4]
    for fold, pred, split, pipe in zip(
        result.folds, result.predictions, splits, result.models, strict=True
    ):
        assert (fold.n_train, fold.n_test) == (150, 50)
        np.testing.assert_array_equal(pred.test_index, split.test)
        proba = pred.probabilities
        assert proba.shape == (50, N_CLASSES) and proba.dtype == np.float32
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
        assert np.all(proba[:, 5] == 0.0)  # the class no training part has
        truth = y[split.test]
        assert fold.accuracy == pytest.approx(np.mean(proba.argmax(axis=1) == truth))
        p_true = np.clip(proba[np.arange(50), truth].astype(np.float64), 1e-7, 1.0)
        assert fold.loss == pytest.approx(-np.mean(np.log(p_true)), rel=1e-5)
        confusion = np.array(fold.confusion)
        assert confusion.shape == (N_CLASSES, N_CLASSES) and confusion.sum() == 50
        np.testing.assert_array_equal(confusion.sum(axis=1), np.bincount(truth, minlength=6))
        assert np.trace(confusion) / 50 == pytest.approx(fold.accuracy)
        per_class = [confusion[c, c] / 10 for c in range(5)]
        assert fold.per_class_accuracy == pytest.approx([*per_class, None])
        # the kept model is the fold's fitted Pipeline and gives back its probabilities
        assert [name for name, _ in pipe.steps] == ["scaler", "classifier"]
        np.testing.assert_allclose(pipe.predict_proba(X[split.test]), proba[:, :5], atol=1e-6)
    accs = [f.accuracy for f in result.folds]
    assert result.mean_accuracy == pytest.approx(np.mean(accs))
    assert result.std_accuracy == pytest.approx(np.std(accs))
    assert result.mean_accuracy > 0.5  # 5 classes: chance is 0.2
    # one report per stage; the last one is the final model's
    assert [h.epoch for h in result.history] == list(range(1, len(stage_sizes(model)) + 1))
    np.testing.assert_allclose(result.history[-1].test_accuracy, accs)
    np.testing.assert_allclose(result.history[-1].test_loss, [f.loss for f in result.folds])
    assert np.isnan(result.history[-1].train_loss).all()


def test_iterative_families_report_every_stage_and_others_once() -> None:
    assert stage_sizes(HistGBSettings(max_iter=200, stages=10)) == list(range(20, 201, 20))
    assert stage_sizes(ForestSettings(n_estimators=500, stages=3)) == [167, 333, 500]
    assert stage_sizes(ForestSettings(n_estimators=4, stages=10)) == [1, 2, 3, 4]
    assert len(stage_sizes(HistGBSettings(early_stopping=True))) == 1
    assert len(stage_sizes(ForestSettings(stages=1))) == 1
    for family in ("svm", "logreg", "knn", "sklearn"):
        assert len(stage_sizes(SMALL[family])) == 1


@pytest.mark.parametrize(
    "model",
    [ForestSettings(n_estimators=12, stages=4), HistGBSettings(max_iter=12, stages=4)],
    ids=["random_forest", "hist_gb"],
)
def test_growing_in_stages_gives_the_model_of_one_fit(blobs, model) -> None:
    staged = _cv(blobs, model)
    at_once = _cv(blobs, replace(model, stages=1))
    assert len(staged.history) == 4 and len(at_once.history) == 1
    for a, b in zip(staged.predictions, at_once.predictions, strict=True):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)


@pytest.mark.parametrize(
    "model",
    [
        ForestSettings(n_estimators=12, stages=4),
        ForestSettings(family="extra_trees", n_estimators=12, stages=4),
        HistGBSettings(max_iter=12, stages=4),
    ],
    ids=["random_forest", "extra_trees", "hist_gb"],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_each_stage_reports_what_a_model_of_that_size_scores(blobs, model, threads) -> None:
    train = TrainSettings(threads=threads)
    staged = _cv(blobs, model, train=train)
    grow = "max_iter" if model.family == "hist_gb" else "n_estimators"
    sizes = stage_sizes(model)
    assert sizes == [3, 6, 9, 12]
    for metrics, size in zip(staged.history, sizes, strict=True):
        alone = _cv(blobs, replace(model, stages=1, **{grow: size}), train=train).history[0]
        np.testing.assert_array_equal(metrics.test_accuracy, alone.test_accuracy)
        np.testing.assert_allclose(metrics.test_loss, alone.test_loss, rtol=1e-9)
    # the stages' accuracies are not all the same (the test above could not fail otherwise)
    assert len({tuple(m.test_accuracy) for m in staged.history}) > 1


def test_results_do_not_depend_on_the_thread_count(blobs) -> None:
    model = ForestSettings(n_estimators=10, stages=2)
    one = _cv(blobs, model, train=TrainSettings(threads=1))
    two = _cv(blobs, model, train=TrainSettings(threads=2))
    for a, b in zip(one.predictions, two.predictions, strict=True):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)
    other_seed = _cv(blobs, model, train=TrainSettings(threads=1, seed=1))
    assert any(
        not np.allclose(a.probabilities, b.probabilities)
        for a, b in zip(one.predictions, other_seed.predictions, strict=True)
    )


def test_a_callback_sees_each_stage_and_can_prune(blobs) -> None:
    seen = []

    def pruner(m):
        seen.append((m.epoch, m.mean_test_accuracy, list(m.folds)))
        if m.epoch == 2:
            raise TrialPruned(epoch=m.epoch, value=m.mean_test_accuracy)

    with pytest.raises(TrialPruned):
        _cv(blobs, HistGBSettings(max_iter=20, stages=5), callbacks=[pruner])
    assert [e for e, _, _ in seen] == [1, 2]
    assert seen[0][2] == [1, 2, 3, 4]


def test_standardize_false_drops_the_scaler(blobs) -> None:
    X, _, splits = blobs
    scaled = _cv(blobs, SMALL["knn"], keep_models=True)
    scaler = scaled.models[0].named_steps["scaler"]
    np.testing.assert_allclose(scaler.mean_, X[splits[0].train].mean(axis=0), rtol=1e-5)
    raw = _cv(blobs, SMALL["knn"], keep_models=True, train=TrainSettings(standardize=False))
    assert [name for name, _ in raw.models[0].steps] == ["classifier"]


def test_a_users_own_classifier_by_target(compose_cfg, blobs) -> None:
    cfg = compose_cfg(
        [
            "model=sklearn",
            "model._target_=tests.training.test_families.CentroidClassifier",
            "model.temperature=4.0",  # the group is open: no `+` needed
            "train.seed=7",
        ]
    )
    s = settings_from_config(cfg)
    result = _cv(blobs, s.model, train=s.train, keep_models=True)
    classifier = result.models[0].named_steps["classifier"]
    assert isinstance(classifier, CentroidClassifier)
    assert classifier.temperature == 4.0
    assert classifier.random_state == 7  # train.seed where the class has a random_state
    assert result.mean_accuracy > 0.5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model._target_=no_such_module.Classifier"], "model._target_=no_such_module.Classifier"),
        (["model._target_=collections.OrderedDict"], "is no scikit-learn classifier"),
        (["model.n_trees=3"], "model._target_=sklearn.ensemble.RandomForestClassifier"),
        (
            ["model.n_estimators=-3"],
            "model._target_=sklearn.ensemble.RandomForestClassifier: The 'n_estimators' parameter",
        ),
    ],
)
def test_a_bad_target_or_keyword_is_one_config_error_line(
    compose_cfg, blobs, overrides, message
) -> None:
    s = settings_from_config(compose_cfg(["model=sklearn", *overrides]))
    with pytest.raises(ConfigError) as info:
        _cv(blobs, s.model)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_an_unknown_svm_key_names_the_close_match(compose_cfg) -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg(["model=svm", "model.gama=0.1"])
    assert str(config_error(info.value)) == "unknown key model.gama; did you mean model.gamma?"


def _with_rare_class(data, per_fold: int):
    """The blobs with only ``per_fold`` clips of class 4 in each fold."""
    X, y, splits = data
    keep = np.concatenate(
        [
            np.flatnonzero(y != 4),
            *(
                np.flatnonzero((y == 4) & np.isin(np.arange(len(y)), s.test))[:per_fold]
                for s in splits
            ),
        ]
    )
    keep.sort()
    remap = np.full(len(y), -1)
    remap[keep] = np.arange(len(keep))
    sub = [
        Split(s.fold, remap[np.intersect1d(s.train, keep)], remap[np.intersect1d(s.test, keep)])
        for s in splits
    ]
    return X[keep], y[keep], sub


def test_svm_calibrates_on_fewer_internal_folds_for_a_rare_class(blobs) -> None:
    """3 training clips of class 4: Platt scaling on 3 internal folds instead of 5."""
    X, y, splits = _with_rare_class(blobs, per_fold=1)
    result = _cv((X, y, splits), SMALL["svm"], keep_models=True)
    assert [f.n_train for f in result.folds] == [123] * 4
    assert [m.named_steps["classifier"].cv for m in result.models] == [3] * 4
    assert all(f.per_class_accuracy[4] is not None for f in result.folds)


def test_svm_with_one_training_clip_of_a_class_names_the_fold(blobs) -> None:
    X, y, splits = _with_rare_class(blobs, per_fold=1)
    keep = np.flatnonzero((y != 4) | np.isin(np.arange(len(y)), splits[0].test))  # 1 clip left
    X, y = X[keep], y[keep]
    remap = np.full(len(keep) + 10, -1)
    remap[keep] = np.arange(len(keep))
    splits = [
        Split(s.fold, remap[np.intersect1d(s.train, keep)], remap[np.intersect1d(s.test, keep)])
        for s in splits
    ]
    with pytest.raises(DataError, match=r"^fold [234]: a class has 1 training clip; model=svm"):
        _cv((X, y, splits), SMALL["svm"])


# -- end to end -------------------------------------------------------------------------------

QUICK = ["features.n_jobs=2", "hydra/sweeper=basic", "train.threads=2", "n_mfcc=13"]


def _demo(demo_dir: Path) -> list[str]:
    return [f"data.demo_dir={demo_dir}", f"data.demo_clips_per_class={DEMO_CLIPS_PER_CLASS}"]


@pytest.mark.slow
def test_random_forest_run_writes_results_and_predictions(run_cli, tmp_path, demo_dir) -> None:
    run_dir = tmp_path / "rf"
    run_cli(
        *QUICK,
        *_demo(demo_dir),
        "model=random_forest",
        "model.n_estimators=40",
        "model.stages=4",
        "tracking.mode=disabled",
        f"hydra.run.dir={run_dir}",
    )
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "complete" and results["dataset"] == "demo"
    assert [h["epoch"] for h in results["history"]] == [1, 2, 3, 4]
    folds = results["folds"]
    assert len(folds) == 10
    for f in folds:
        assert np.array(f["confusion"]).sum() == f["n_test"]
        assert f["n_train"] + f["n_test"] == results["n_clips"]
    assert results["history"][-1]["test_accuracy"] == pytest.approx([f["accuracy"] for f in folds])
    with np.load(run_dir / "predictions.npz") as npz:
        proba, y_true, fold = npz["probabilities"], npz["y_true"], npz["fold"]
        assert proba.shape == (results["n_clips"], len(results["class_names"]))
        for f in folds:
            rows = fold == str(f["fold"])
            assert np.mean(proba[rows].argmax(axis=1) == y_true[rows]) == pytest.approx(
                f["accuracy"]
            )
    assert (run_dir / "config.yaml").read_text().count("family: random_forest") == 1


@pytest.mark.slow
def test_a_family_run_is_tracked_offline(run_cli, tmp_path, demo_dir) -> None:
    run_dir = tmp_path / "gb"
    proc = run_cli(
        *QUICK,
        *_demo(demo_dir),
        "model=hist_gb",
        "model.max_iter=10",
        "model.stages=2",
        "tracking.mode=offline",
        f"tracking.offline_dir={tmp_path / 'comet'}",
        f"features.cache_dir={tmp_path / 'cache' / 'features'}",  # class figures drawn afresh
        f"hydra.run.dir={run_dir}",
    )
    results = json.loads((run_dir / "results.json").read_text())
    archive = Path(results["tracking"]["archive"])
    assert archive.is_file() and archive.parent == tmp_path / "comet"
    # the class-samples experiment is logged after the run; the upload command names both
    samples = json.loads((run_dir / "figures" / "dataset" / "samples.json").read_text())
    samples_archive = Path(samples["tracking"]["archive"])
    assert samples_archive.is_file() and samples_archive != archive
    console = proc.stdout + proc.stderr
    assert "Comet: 2 offline archive(s)" in console
    assert archive.name in console and samples_archive.name in console
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
        assert "experiment.json" in names
        metrics = "".join(
            z.read(n).decode("utf-8", "replace") for n in names if n.endswith(".json")
        )
    assert "test_accuracy" in metrics and "hist_gb" in metrics


@pytest.mark.slow
def test_a_bad_target_stops_the_run_before_the_features(run_cli, tmp_path, demo_dir) -> None:
    run_dir = tmp_path / "bad"
    proc = run_cli(
        *QUICK,
        *_demo(demo_dir),
        "model=sklearn",
        "model._target_=sklearn.ensemble.NoSuchForest",
        "tracking.mode=disabled",
        f"hydra.run.dir={run_dir}",
        check=False,
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: model._target_=sklearn.ensemble.NoSuchForest: cannot")
    assert not (run_dir / "results.json").exists()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"n_estimatorz": 3},
            "unknown key model.n_estimatorz for model._target_=sklearn.ensemble."
            "RandomForestClassifier; did you mean model.n_estimators?",
        ),
        ({"zzz": 3}, "unknown key model.zzz for model._target_=sklearn.ensemble."),
        (
            {"n_estimators": "abc"},
            "model._target_=sklearn.ensemble.RandomForestClassifier: The 'n_estimators' "
            "parameter of RandomForestClassifier must be an int in the range [1, inf). "
            "Got 'abc' instead.",
        ),
    ],
)
def test_a_keyword_the_target_refuses_is_named_before_the_features(params, message) -> None:
    """model=sklearn: an unknown keyword names the close match, a bad value scikit-learn's own
    rule, when the estimator is made (before the features), as for the other families."""
    from urbansound.config.settings import SklearnSettings
    from urbansound.errors import ConfigError
    from urbansound.training.families import make_estimator

    settings = SklearnSettings(target="sklearn.ensemble.RandomForestClassifier", params=params)
    with pytest.raises(ConfigError) as info:
        make_estimator(settings)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_more_neighbours_than_a_training_part_has_is_one_line_naming_the_key(blobs) -> None:
    from urbansound.config.settings import KNNSettings
    from urbansound.errors import ConfigError

    with pytest.raises(ConfigError) as info:  # 150 clips train each of the 4 folds
        _cv(blobs, KNNSettings(n_neighbors=151))
    assert str(info.value).startswith("model.n_neighbors (151) must be <= the clips of every")
    assert "trains on 150; lower model.n_neighbors" in str(info.value)
    assert _cv(blobs, KNNSettings(n_neighbors=150)).mean_accuracy > 0
