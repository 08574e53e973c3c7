"""fit and run under conditions users cause: an address-space limit too small for torch, a user
classifier that a model file could not hold (see also tests/inference)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from tests.helpers import DEMO_CLIPS_PER_CLASS, REPO, cli_env, fit_settings
from urbansound.config.settings import SklearnSettings, TrainSettings
from urbansound.data.cv import Split
from urbansound.errors import ConfigError
from urbansound.training.cross_validation import cross_validate
from urbansound.training.problem import CVProblem

QUICK = [
    "train.epochs=2",
    "train.batch_size=16",
    "model.hidden=[32]",
    "n_mfcc=13",
    "train.device=cpu",
    "tracking.mode=disabled",
]


def _demo(demo_dir: Path) -> list[str]:
    return [f"data.demo_dir={demo_dir}", f"data.demo_clips_per_class={DEMO_CLIPS_PER_CLASS}"]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc are Linux's")
@pytest.mark.parametrize("module", ["run", "fit"])
def test_a_limit_too_small_for_torch_is_one_line_naming_memory(
    demo_dir: Path, tmp_path: Path, module: str
) -> None:
    """Before: an ImportError from torch's loader (`failed to map segment`), a RuntimeError
    `std::bad_alloc` traceback, or an abort, depending on the limit."""
    for mib in (300, 700):  # torch, scikit-learn, scipy and librosa need more than 700 MiB
        run_dir = tmp_path / f"{module}-{mib}"
        args = [sys.executable, "-m", f"urbansound.{module}", *QUICK, *_demo(demo_dir),
                f"features.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}"]  # fmt: skip
        command = " ".join(shlex.quote(a) for a in args)
        proc = subprocess.run(
            ["bash", "-c", f"ulimit -v {mib * 1024} && exec {command}"],
            cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr[-3000:]
        (line,) = proc.stderr.splitlines()
        assert line.startswith(
            "error: not enough memory for loading torch and the training code: the address-space "
            "limit (ulimit -v) is "
        ), line
        assert "raise the limit" in line and "Traceback" not in proc.stdout
        assert not run_dir.exists()  # nothing half-written: the empty run directory is removed


# --------------------------------------------------------------------------------------------
# A user's classifier: broken ones never score, one a model file cannot hold is refused by fit
# before training (issue 22, items 1 and 7)


class Centroid(ClassifierMixin, BaseEstimator):
    """A user's own, well-behaved classifier: softmax of minus the distances to the centroids."""

    def __init__(self, broken: str = "") -> None:
        self.broken = broken

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.centroids_ = np.stack([X[y == c].mean(axis=0) for c in self.classes_])
        return self

    def predict_proba(self, X):
        d = ((X[:, None, :] - self.centroids_[None]) ** 2).sum(axis=2)
        e = np.exp(-(d - d.min(axis=1, keepdims=True)))
        p = e / e.sum(axis=1, keepdims=True)
        if self.broken == "nans":
            p[::3] = np.nan
        elif self.broken == "columns":
            p = p[:, :3]
        elif self.broken == "sum":
            p = p * 2
        elif self.broken == "negative":
            p = p - 0.5
        return p

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class StringClasses(Centroid):
    """classes_ of class names, not ids."""

    def fit(self, X, y):
        super().fit(X, y)
        self.classes_ = np.array([f"c{c}" for c in self.classes_])
        return self


HERE = "tests.experiment.test_fit_trust"


def _blobs(n_classes: int = 4) -> tuple[np.ndarray, np.ndarray, list[Split]]:
    rng = np.random.default_rng(0)
    y = np.arange(80) % n_classes
    X = (rng.standard_normal((80, 5)) + y[:, None] * 2).astype(np.float32)
    folds = (np.arange(80) // n_classes) % 4  # every class in every fold
    splits = [Split(fold=k + 1, train=np.flatnonzero(folds != k), test=np.flatnonzero(folds == k))
              for k in range(4)]  # fmt: skip
    return X, y, splits


def _cv(target: str, **params: Any):
    X, y, splits = _blobs()
    model = SklearnSettings(target=target, params=params)
    problem = CVProblem(X, y, splits, n_classes=10, model=model, train=TrainSettings(threads=1))
    return cross_validate(problem, progress=False)


def test_a_users_well_behaved_classifier_trains_and_scores() -> None:
    assert _cv(f"{HERE}.Centroid").mean_accuracy > 0.5


@pytest.mark.parametrize(
    ("target", "params", "said"),
    [
        ("Centroid", {"broken": "nans"}, "predict_proba gave 28 values that are NaN or infinite"),
        ("Centroid", {"broken": "columns"}, "predict_proba gave shape (20, 3) for 20 rows and 4"),
        ("Centroid", {"broken": "sum"}, "predict_proba gave values outside [0, 1]"),
        ("Centroid", {"broken": "negative"}, "predict_proba gave values outside [0, 1]"),
        ("StringClasses", {}, "its classes_ ['c0', 'c1', 'c2', 'c3'] are <U2 values, not integer"),
    ],
    ids=["nan", "three-columns", "sum-2", "negative", "string-classes"],
)
def test_a_classifier_breaking_the_output_contract_is_one_line_never_a_score(
    target: str, params: dict[str, Any], said: str
) -> None:
    """Before: NaN probabilities gave accuracy 0.100 (a trial value that could win a study);
    three columns or string classes_ a numpy traceback."""
    with pytest.raises(ConfigError) as info:
        _cv(f"{HERE}.{target}", **params)
    message = str(info.value)
    assert message.startswith(f"model._target_={HERE}.{target}: on fold 1 {said}"), message
    assert "a classifier must give finite probabilities in [0, 1] summing to 1" in message
    assert "\n" not in message


def test_rows_that_do_not_sum_to_one_are_refused() -> None:
    from urbansound.training.contract import output_breach

    p = np.full((4, 3), 0.3)
    assert output_breach(p, [0, 1, 2], n_rows=4, n_classes=10) == (
        "predict_proba gave 4 rows that sum to 0.9, not 1"
    )
    assert output_breach(p / 0.9, [0, 1, 2], n_rows=4, n_classes=10) is None
    assert "not distinct class ids 0..9" in output_breach(p / 0.9, [0, 1, 12], n_rows=4,
                                                          n_classes=10)  # fmt: skip


@pytest.mark.parametrize(
    ("target", "params", "key"),
    [
        ("numpy.memmap", {}, "model._target_=numpy.memmap"),
        ("sklearn.externals.array_api_compat.numpy.memmap", {}, "model._target_=sklearn.externals"),
        ("os.system", {}, "model._target_=os.system"),
        (
            "sklearn.ensemble.BaggingClassifier",
            {"estimator": {"_target_": "numpy.memmap"}},
            "model.estimator._target_=numpy.memmap",
        ),
    ],
    ids=["memmap", "memmap-reexported", "function", "nested"],
)
def test_a_target_that_is_no_classifier_class_is_refused_before_any_call(
    tmp_path: Path, target: str, params: dict[str, Any], key: str
) -> None:
    """A foreign config's model._target_=numpy.memmap opened (and truncated) the file its
    arguments named before the "not a classifier" check."""
    victim = tmp_path / "precious.dat"
    victim.write_bytes(b"x" * 64)
    args = {"filename": str(victim), "mode": "w+", "shape": [16]}
    if "estimator" in params:
        params = {"estimator": {**params["estimator"], **args}}
    else:
        params = {**params, **args}
    with pytest.raises(ConfigError) as info:
        _cv(target, **params)
    assert str(info.value).startswith(f"{key}") and "nothing was instantiated" in str(info.value)
    assert victim.read_bytes() == b"x" * 64


def test_fit_refuses_a_classifier_a_model_file_cannot_hold_before_training(
    demo_dir: Path, tmp_path: Path
) -> None:
    from dataclasses import replace

    from urbansound.experiment.fit import fit_model

    settings = replace(
        fit_settings(demo_dir, tmp_path / "cache"),
        model=SklearnSettings(target=f"{HERE}.Centroid", params={}),
    )
    with pytest.raises(ConfigError) as info:
        fit_model(settings, run_dir=tmp_path / "fit", progress=False)
    message = str(info.value)
    assert message.startswith(f"model._target_={HERE}.Centroid cannot be stored in a model file")
    assert f"{HERE}.Centroid" in message.split("(it holds ")[1] and "nothing was trained" in message
    assert not (tmp_path / "cache").exists() and not (tmp_path / "fit").exists()
    # scikit-learn's own classifiers are stored, the allowlist holds them
    settings = replace(settings, model=SklearnSettings(target="sklearn.naive_bayes.GaussianNB"))
    outcome = fit_model(settings, run_dir=tmp_path / "nb", progress=False)
    assert outcome.model_path.is_file()


def _env_with_tests() -> dict[str, str]:
    """The CLI environment with the repository on the path: the test classes are importable."""
    return {**cli_env(), "PYTHONPATH": str(REPO)}


@pytest.mark.slow
def test_on_the_command_line_a_broken_classifier_is_one_line_and_a_sweep_trial_fails(
    demo_dir: Path, tmp_path: Path
) -> None:
    import optuna

    quick = [o for o in QUICK if not o.startswith("model.")]  # the MLP's keys
    base = [sys.executable, "-m", "urbansound.run", *quick, *_demo(demo_dir), "model=sklearn",
            f"features.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    proc = subprocess.run(
        [*base, f"model._target_={HERE}.Centroid", "+model.broken=nans",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=_env_with_tests(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "predict_proba gave" in errors[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "run" / "results.json").exists()

    # a sweep: the broken classifier's trial is FAIL (no value), the well-behaved one wins
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    proc = subprocess.run(
        [*base[:3], "-m", *base[3:], f"model._target_={HERE}.Centroid", "+model.broken=nans,ok",
         f"hydra.sweep.dir={tmp_path / 'sweep'}", f"hydra.sweeper.storage={storage}",
         "hydra.sweeper.study_name=broken"],
        cwd=tmp_path, env=_env_with_tests(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    study = optuna.load_study(study_name="broken", storage=storage)
    states = {t.params["model.broken"]: (t.state.name, t.value) for t in study.trials}
    assert states["nans"] == ("FAIL", None), (states, proc.stderr[-3000:])
    assert states["ok"][0] == "COMPLETE" and study.best_trial.params["model.broken"] == "ok"
