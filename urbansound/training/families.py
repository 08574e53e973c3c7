"""Cross-validation of the scikit-learn model families (``model=svm``, ``random_forest``, ...).

:func:`cross_validate_sklearn` is what :func:`urbansound.training.cross_validation.cross_validate`
runs for every family but the MLP: the same splits, the same
:class:`~urbansound.training.results.CVResult`.

Per split, a ``Pipeline([("scaler", StandardScaler()), ("classifier", estimator)])``: the scaler
is fitted on the split's training part only (as the MLP's standardiser; ``train.standardize=false``
leaves it out). The splits are fitted in parallel by joblib (threading backend, one pool for the
whole run): ``train.threads`` cores (all of them when null) are shared out as
``min(cores, n_splits)`` splits at a time and the rest per split, which is what an estimator's own
``n_jobs`` (forests, ``model.n_jobs: null``) and its OpenMP/BLAS threads (``threadpoolctl``)
get, so the two levels never ask for more threads than there are cores.

Reports for pruning. Iterative families grow in ``model.stages`` steps with ``warm_start`` (which
gives the same model as one fit): ``hist_gb`` boosts ``k/stages`` of ``max_iter`` iterations,
``random_forest``/``extra_trees`` hold ``k/stages`` of ``n_estimators`` trees at stage ``k``; every
split is evaluated on its test part after each stage and the callbacks get one
:class:`~urbansound.training.results.EpochMetrics` per stage (``epoch`` = stage). The other families
(``svm``, ``logreg``, ``knn``, ``sklearn``) report once, as epoch 1. ``train_loss`` is NaN: a
training loss would cost a prediction of every training part. A forest's intermediate stages
predict only the trees added since the last stage and keep the running sum (the forest's
``predict_proba`` is the mean of its trees'), so each tree predicts the test part once; the last
stage is the forest's own ``predict_proba``, so the saved probabilities are exactly one fit's.
``hist_gb`` predicts with all iterations so far at every stage (about ``stages/2`` predictions of
the test part: ~3% of its fit on the demo corpus, not worth scikit-learn's private API).

The output contract, checked on every split at every stage
(:func:`urbansound.training.contract.output_breach`): integer
``classes_`` among the dataset's class ids, one ``predict_proba`` column per entry of
``classes_``, finite probabilities in [0, 1] whose rows sum to 1 within
:data:`PROBABILITY_TOLERANCE`. A classifier that breaks it (a user's ``model=sklearn`` class
returning NaN, three columns or string classes) stops the run with one
:class:`~urbansound.errors.ConfigError` line naming ``model._target_`` and the fold, so it can
never score (a sweep records the trial as FAIL, with no value).

``model=sklearn`` instantiates nothing before it has checked that ``model._target_`` (and every
nested ``_target_`` of its keys, such as a meta-estimator's ``estimator``) names a scikit-learn
estimator class: a foreign config naming ``numpy.memmap`` is refused before anything is called.

Metrics: the class probabilities are ``predict_proba`` aligned to all ``n_classes`` columns (a
class absent from a training part gets probability 0); a clip's prediction is their argmax, so the
fold accuracy, per-class accuracy and confusion matrix follow from the saved probabilities
(:func:`urbansound.training.metrics.fold_result`); the loss is
:func:`urbansound.training.metrics.cross_entropy`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from urbansound.config.settings import AnyModelSettings, TrainSettings
from urbansound.data.cv import Split
from urbansound.errors import ConfigError, DataError
from urbansound.training.contract import (
    PROBABILITY_TOLERANCE,
    check_estimator_class,
    nested_targets,
    output_breach,
)
from urbansound.training.metrics import cross_entropy
from urbansound.training.problem import CVProblem
from urbansound.training.results import (
    CVResult,
    EpochCallback,
    EpochMetrics,
)
from urbansound.utils.progress import progress_bar

logger = logging.getLogger(__name__)

__all__ = ["cross_validate_sklearn", "make_estimator", "make_pipeline", "stage_sizes"]


_CLASSES = {
    "logreg": "sklearn.linear_model.LogisticRegression",
    "random_forest": "sklearn.ensemble.RandomForestClassifier",
    "extra_trees": "sklearn.ensemble.ExtraTreesClassifier",
    "hist_gb": "sklearn.ensemble.HistGradientBoostingClassifier",
    "knn": "sklearn.neighbors.KNeighborsClassifier",
}
#: The key of each iterative family that grows stage by stage.
_GROWS = {"random_forest": "n_estimators", "extra_trees": "n_estimators", "hist_gb": "max_iter"}


def _import(path: str) -> Any:
    import importlib

    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def make_estimator(model: AnyModelSettings, *, seed: int = 0, n_jobs: int | None = None) -> Any:
    """An unfitted scikit-learn classifier for the family settings ``model``.

    ``seed`` becomes ``random_state`` where the estimator has one (a ``model=sklearn`` estimator
    keeps a ``random_state`` given as a key); ``n_jobs`` is the forests' thread count when
    ``model.n_jobs`` is null.

    Raises
    ------
    ConfigError
        ``model=sklearn`` with a ``_target_`` that cannot be imported or instantiated with the
        given keys, or that is no classifier with ``fit`` and ``predict_proba`` (one line).
    """
    family = model.family
    if family == "mlp":
        raise ValueError("the MLP is trained by urbansound.training.lockstep, not scikit-learn")
    if family == "sklearn":
        return _instantiate(model.target, model.params, seed)
    params = {k: v for k, v in asdict(model).items() if k not in ("family", "stages")}
    if family == "svm":
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import SVC

        # SVC(probability=True) is deprecated since scikit-learn 1.9 for exactly this: Platt
        # scaling fitted on 5 internal folds, then one SVC refitted on the whole training part.
        return CalibratedClassifierCV(SVC(**params), method="sigmoid", cv=5, ensemble=False)
    if family in ("random_forest", "extra_trees"):
        params["n_jobs"] = params["n_jobs"] if params["n_jobs"] is not None else n_jobs
    return _import(_CLASSES[family])(
        **params, **({} if family == "knn" else {"random_state": seed})
    )


def _unknown_keyword(target: str, params: dict[str, Any], exc: BaseException) -> str | None:
    """``unknown key model.X for <target>; did you mean model.Y?`` when the class's constructor
    does not take a keyword of ``params`` (as an unknown key of the other families says)."""
    import difflib
    import inspect

    if not isinstance(exc.__cause__, TypeError) or "keyword" not in str(exc.__cause__):
        return None
    try:
        signature = inspect.signature(_import(target)).parameters
    except Exception:
        return None
    if any(p.kind == p.VAR_KEYWORD for p in signature.values()):
        return None
    known = list(signature)
    wrong = [k for k in params if k not in known]
    if not wrong:
        return None
    match = difflib.get_close_matches(wrong[0], known, n=1)
    hint = f"did you mean model.{match[0]}?" if match else f"it takes {', '.join(known)}"
    return f"unknown key model.{wrong[0]} for model._target_={target}; {hint}"


def _instantiate(target: str, params: dict[str, Any], seed: int) -> Any:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    check_estimator_class(target, "model._target_", classifier=True)
    for key, nested in nested_targets(params, "model"):
        check_estimator_class(nested, key, classifier=False)
    try:
        estimator = instantiate({"_target_": target, **params}, _convert_="all")
    except InstantiationException as exc:
        unknown = _unknown_keyword(target, params, exc)
        if unknown:
            raise ConfigError(unknown) from None
        reason = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else ""
        raise ConfigError(
            f"model._target_={target}: cannot instantiate it ({reason}); give the dotted path of "
            "a scikit-learn classifier class and its keyword arguments as model.<key>=<value>"
        ) from None
    missing = [m for m in ("fit", "predict_proba", "get_params") if not hasattr(estimator, m)]
    if missing:
        raise ConfigError(
            f"model._target_={target} is no scikit-learn classifier: it has no "
            f"{', '.join(missing)} (model=sklearn needs fit, predict_proba and get_params)"
        )
    if "random_state" not in params and "random_state" in estimator.get_params(deep=False):
        estimator.set_params(random_state=seed)
    # scikit-learn's own parameter checks, which it would otherwise run only at fit (after the
    # features); a user's class without constraints is left to its fit.
    validate = getattr(estimator, "_validate_params", None)
    if callable(validate) and hasattr(estimator, "_parameter_constraints"):
        from sklearn.utils._param_validation import InvalidParameterError

        try:
            validate()
        except InvalidParameterError as exc:
            raise ConfigError(f"model._target_={target}: {str(exc).splitlines()[0]}") from None
    return estimator


def make_pipeline(estimator: Any, *, standardize: bool = True) -> Any:
    """``Pipeline([("scaler", StandardScaler()), ("classifier", estimator)])`` (no scaler
    without ``standardize``)."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [("scaler", StandardScaler())] if standardize else []
    return Pipeline([*steps, ("classifier", estimator)])


def stage_sizes(model: AnyModelSettings) -> list[int]:
    """The sizes an iterative family grows through (``[n]`` for one fit), e.g. ``max_iter=200,
    stages=10`` -> ``[20, 40, ..., 200]``; ``hist_gb`` with early stopping fits at once."""
    key = _GROWS.get(model.family)
    if key is None or (model.family == "hist_gb" and model.early_stopping):
        return [0]
    total = int(getattr(model, key))
    stages = min(int(model.stages), total)
    return sorted({max(1, round(total * k / stages)) for k in range(1, stages + 1)})


def _cores(train: TrainSettings) -> int:
    if train.threads is not None:
        return int(train.threads)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class _Fold:
    """One split's pipeline, its (scaled) training and test parts, grown stage by stage."""

    def __init__(self, problem: CVProblem, split: Split, pipeline: Any) -> None:
        self.split = split
        self.pipeline = pipeline
        model = problem.model
        self.label = (
            f"model._target_={model.target}"
            if model.family == "sklearn"
            else f"model={model.family}"
        )
        self.n_classes = problem.n_classes
        self.X_train, self.y_train = problem.X[split.train], problem.y[split.train]
        self.X_test, self.y_test = problem.X[split.test], problem.y[split.test]
        self.probabilities = np.zeros((len(split.test), self.n_classes), dtype=np.float32)
        #: A forest's summed tree probabilities of the test part so far, and how many trees.
        self._tree_sum: np.ndarray | None = None
        self._trees_summed = 0

    def fit_stage(
        self, grow: str | None, size: int, first: bool, last: bool = True
    ) -> tuple[float, float]:
        """Fit (the first stage) or grow the classifier to ``size``; the test loss and accuracy.

        The last stage's probabilities are the classifier's ``predict_proba``; a forest's earlier
        ones add only the new trees' to a running sum (each tree is predicted once).
        """
        classifier = self.pipeline[-1]
        if first and len(self.pipeline) > 1:
            scaler = self.pipeline[0].fit(self.X_train)
            self.X_train, self.X_test = (
                scaler.transform(self.X_train),
                scaler.transform(self.X_test),
            )
            self._fit_calibration_folds(classifier)
        if grow is not None:
            classifier.set_params(**{grow: size, "warm_start": True})
        from sklearn.utils._param_validation import InvalidParameterError

        n_neighbors = getattr(classifier, "n_neighbors", None)
        if isinstance(n_neighbors, int) and n_neighbors > len(self.X_train):
            # KNeighborsClassifier says so only when it predicts, as a ValueError traceback
            raise ConfigError(
                f"model.n_neighbors ({n_neighbors}) must be <= the clips of every training "
                f"part: fold {self.split.fold} trains on {len(self.X_train)}; lower "
                "model.n_neighbors"
            )
        try:
            classifier.fit(self.X_train, self.y_train)
        except InvalidParameterError as exc:  # a value scikit-learn checks only at fit
            raise ConfigError(f"model: {str(exc).splitlines()[0]}") from None
        if not last and hasattr(classifier, "estimators_") and grow == "n_estimators":
            proba = self._forest_proba(classifier)
        else:
            proba = classifier.predict_proba(self.X_test)
        classes = getattr(classifier, "classes_", None)
        breach = output_breach(proba, classes, n_rows=len(self.X_test), n_classes=self.n_classes)
        if breach is not None:
            raise ConfigError(
                f"{self.label}: on fold {self.split.fold} {breach}; a classifier must give "
                f"finite probabilities in [0, 1] summing to 1 (within {PROBABILITY_TOLERANCE:g}) "
                "per row, one column per entry of classes_, and integer classes_ among the "
                f"dataset's class ids 0..{self.n_classes - 1}"
            )
        proba = np.asarray(proba, dtype=np.float64)
        classes = np.asarray(classes, dtype=np.int64)
        full = np.zeros((len(self.X_test), self.n_classes), dtype=np.float64)
        full[:, classes] = proba
        self.probabilities = full.astype(np.float32)
        return cross_entropy(full, self.y_test), float(np.mean(full.argmax(axis=1) == self.y_test))

    def _forest_proba(self, forest: Any) -> np.ndarray:
        """The mean of the forest's trees' ``predict_proba`` on the test part ``(n_test,
        n_classes_)``, as the forest's own ``predict_proba`` (equal up to the order of the float
        additions), predicting only the trees added since the last call."""
        from sklearn.utils.parallel import Parallel, delayed

        X = np.ascontiguousarray(self.X_test, dtype=np.float32)  # as the forest's check
        if self._tree_sum is None:
            self._tree_sum = np.zeros((len(X), int(forest.n_classes_)), dtype=np.float64)
        lock = threading.Lock()

        def add(tree: Any) -> None:
            proba = tree.predict_proba(X, check_input=False)
            with lock:
                self._tree_sum += proba

        new = forest.estimators_[self._trees_summed :]
        Parallel(n_jobs=forest.n_jobs, backend="threading")(delayed(add)(t) for t in new)
        self._trees_summed = len(forest.estimators_)
        return self._tree_sum / self._trees_summed

    def _fit_calibration_folds(self, classifier: Any) -> None:
        """``model=svm`` calibrates on 5 internal folds, fewer where a class has < 5 clips."""
        from sklearn.calibration import CalibratedClassifierCV

        if not isinstance(classifier, CalibratedClassifierCV) or not isinstance(classifier.cv, int):
            return
        smallest = int(np.bincount(self.y_train)[np.unique(self.y_train)].min())
        if smallest < 2:
            raise DataError(
                f"fold {self.split.fold}: a class has 1 training clip; model=svm calibrates its "
                "probabilities on internal folds and needs >= 2 clips of each class present"
            )
        classifier.set_params(cv=min(classifier.cv, smallest))


@contextlib.contextmanager
def _thread_limit(n: int) -> Iterator[None]:
    """OpenMP/BLAS pools limited to ``n`` threads each (``hist_gb``, ``knn``, BLAS in logreg)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n):
        yield


def cross_validate_sklearn(
    problem: CVProblem,
    *,
    callbacks: Sequence[EpochCallback],
    progress: bool,
    keep_models: bool,
) -> CVResult:
    """Fit the family's pipeline on every split's training part; evaluate on its test part (a
    :class:`~urbansound.training.problem.Trainer`).

    Uses ``train.seed`` (``random_state``), ``train.threads`` and ``train.standardize``; the MLP's
    optimiser settings do not apply.

    Returns
    -------
    CVResult
        Per-fold metrics of the final model, one :class:`EpochMetrics` per stage (``history``),
        every split's test probabilities ``(n_test, n_classes)``; with ``keep_models`` the fitted
        ``Pipeline`` of every split (``models``, split order).

    Raises
    ------
    ConfigError
        A ``model=sklearn`` target that is no classifier, or a value scikit-learn rejects.
    TrialPruned
        Raised by a callback (the pruner); propagates after the running stage.
    """
    splits, model, train = problem.splits, problem.model, problem.train
    cores = max(1, _cores(train))
    jobs = min(cores, len(splits))
    inner = max(1, cores // jobs)
    sizes = stage_sizes(model)
    grow = _GROWS.get(model.family) if len(sizes) > 1 else None
    folds = [
        _Fold(
            problem,
            s,
            make_pipeline(
                make_estimator(model, seed=train.seed, n_jobs=inner), standardize=train.standardize
            ),
        )
        for s in splits
    ]
    logger.info(
        "fitting %s on %d split(s), %d at a time (%d thread(s) each)%s",
        type(folds[0].pipeline[-1]).__name__,
        len(splits),
        jobs,
        inner,
        f", {len(sizes)} stages of {grow}" if grow else "",
    )
    from joblib import Parallel, delayed

    history: list[EpochMetrics] = []
    bar = progress_bar(
        total=len(sizes), desc="train", unit="stage", mode=None if progress else "none"
    )
    with (
        contextlib.closing(bar),
        _thread_limit(inner),
        Parallel(n_jobs=jobs, backend="threading") as parallel,
    ):
        for stage, size in enumerate(sizes, start=1):
            rows = parallel(
                delayed(f.fit_stage)(grow, size, stage == 1, stage == len(sizes)) for f in folds
            )
            losses, accuracies = (np.array(v, dtype=np.float64) for v in zip(*rows, strict=True))
            metrics = EpochMetrics(
                epoch=stage,
                folds=[s.fold for s in splits],
                train_loss=np.full(len(splits), np.nan),
                test_loss=losses,
                test_accuracy=accuracies,
            )
            history.append(metrics)
            bar.update(1)
            bar.set_postfix(acc=f"{metrics.mean_test_accuracy:.4f}", refresh=False)
            for cb in callbacks:
                cb(metrics)
    if grow is not None:
        for f in folds:  # a kept model refits as configured, not warm
            f.pipeline[-1].set_params(warm_start=False)
    return problem.result(
        [f.probabilities for f in folds],
        history=history,
        models=[f.pipeline for f in folds] if keep_models else [],
    )
