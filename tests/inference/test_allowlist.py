"""A model file never runs code or touches files: the allowlist of a scikit-learn member's types.

The crafted members are skops' own format (its zip and ``schema.json``), made by ``skops.io.dumps``
where skops writes such a node itself and by adding a node of skops' node format where it does
not (a constructor called with stored arguments): never a hand-written pickle.
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import operator
import subprocess
import sys
import tempfile
import threading
import types
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import cli_env
from tests.inference.models import rewrite, sklearn_member, write_model
from urbansound.inference.allowlist import (
    DATA,
    FITTED_STATE,
    FRONT,
    classifier_types,
    schema_types,
    trusted_types,
    untrusted_types,
)
from urbansound.inference.modelfile import ModelFileError, load_model
from urbansound.inference.validation import UntrustedMember, load_estimator

# --------------------------------------------------------------------------------------------
# Crafting members in skops' format


def _schema(obj: Any) -> dict[str, Any]:
    """The root node skops writes for ``obj``."""
    import skops.io

    with zipfile.ZipFile(io.BytesIO(skops.io.dumps(obj))) as z:
        return json.loads(z.read("schema.json"))


def _with_attribute(blob: bytes, node: dict[str, Any], extra: dict[str, bytes] | None = None):
    """skops bytes ``blob`` whose root object gets one more attribute, ``evil``, of ``node``
    (a DictNode holds its keys' types beside them: a str key's type is added too)."""
    src = zipfile.ZipFile(io.BytesIO(blob))
    schema = json.loads(src.read("schema.json"))
    attrs = schema["content"]
    attrs["content"]["evil"] = node
    attrs["key_types"]["content"].append(
        {"__class__": "str", "__module__": "builtins", "__loader__": "TypeNode"}
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name in src.namelist():
            if name != "schema.json":
                z.writestr(name, src.read(name))
        for name, data in (extra or {}).items():
            z.writestr(name, data)
        z.writestr("schema.json", json.dumps(schema))
    return out.getvalue()


def _constructor(module: str, name: str, args: tuple) -> dict[str, Any]:
    """A skops node that calls ``module.name(*args)`` when loaded (what skops writes for an
    object whose ``__reduce__`` is its type and arguments)."""
    return {
        "__class__": name,
        "__module__": module,
        "__loader__": "ConstructorFromReduceNode",
        "content": _schema(args),
    }


def _reexport(obj: Any) -> tuple[str, str]:
    """A scikit-learn module that re-exports ``obj`` and the attribute it does so under (the
    path the old trust rule, "any type reachable as sklearn.<module>.<attr>", accepted); the
    defining module where scikit-learn re-exports none."""
    import sklearn.externals.array_api_compat.numpy  # noqa: F401  (the issue's module)
    from sklearn.utils import all_estimators

    all_estimators()  # imports scikit-learn's estimator modules
    for name in sorted(m for m in sys.modules if m.startswith("sklearn.")):
        module = sys.modules[name]
        for attr in sorted(vars(module)) if module is not None else ():
            if vars(module)[attr] is obj and not attr.startswith("__"):
                return name, attr
    return obj.__module__, obj.__name__


@pytest.fixture(scope="module")
def base_blob() -> bytes:
    import skops.io

    return skops.io.dumps(sklearn_member().estimator)


def _assert_refused(blob: bytes, *names: str) -> None:
    with pytest.raises(UntrustedMember) as info:
        load_estimator(blob)
    message = str(info.value)
    assert "\n" not in message and all(n in message for n in names), message


# --------------------------------------------------------------------------------------------
# The instance and its siblings


def test_a_memmap_node_is_refused_by_name_and_its_file_is_untouched(
    base_blob: bytes, tmp_path: Path
) -> None:
    victim = tmp_path / "precious.dat"
    victim.write_bytes(b"do not truncate me" * 10)
    module, attr = _reexport(np.memmap)
    assert (module, attr) == ("sklearn.externals.array_api_compat.numpy", "memmap")
    node = _constructor(module, attr, (str(victim), "uint8", "w+", 0, (16,)))
    blob = _with_attribute(base_blob, node)
    _assert_refused(blob, f"{module}.memmap (ConstructorFromReduceNode)")
    # the same type by its own module is no better
    _assert_refused(_with_attribute(base_blob, {**node, "__module__": "numpy"}), "numpy.memmap")
    assert victim.read_bytes() == b"do not truncate me" * 10


@pytest.mark.parametrize(
    "target",
    [
        functools.partial,
        threading.Thread,
        tempfile.TemporaryDirectory,
        operator.attrgetter,
        types.FunctionType,
        types.ModuleType,
        types.MethodType,
    ],
    ids=lambda t: t.__name__,
)
def test_a_type_scikit_learn_re_exports_is_not_trusted_for_it(
    base_blob: bytes, tmp_path: Path, target: type
) -> None:
    module, attr = _reexport(target)
    before = set(tmp_path.iterdir()), threading.active_count()
    for loader in ("ObjectNode", "TypeNode"):
        node = {"__class__": attr, "__module__": module, "__loader__": loader, "content": {}}
        if loader == "TypeNode":
            node.pop("content")
        _assert_refused(_with_attribute(base_blob, node), f"{module}.{attr}")
    made = _constructor(module, attr, ("", "evil-", str(tmp_path)))
    _assert_refused(_with_attribute(base_blob, made), f"{module}.{attr}")
    assert (set(tmp_path.iterdir()), threading.active_count()) == before


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (functools.partial(print, "x"), "functools.partial (PartialNode)"),
        (operator.attrgetter("shape"), "operator.attrgetter (OperatorFuncNode)"),
        (eval, "builtins.eval"),
        (exec, "builtins.exec"),
        (np.save, "numpy.save (FunctionNode)"),
        (np.add, "numpy.add (FunctionNode)"),  # a ufunc: skops trusts these by default
        (types.ModuleType, "builtins.module"),
        (print, "builtins.print"),
    ],
    ids=["partial", "attrgetter", "eval", "exec", "numpy.save", "numpy.add", "module", "print"],
)
def test_callables_skops_writes_itself_are_refused(
    base_blob: bytes, value: Any, named: str
) -> None:
    _assert_refused(_with_attribute(base_blob, _schema(value)), named)


def test_a_crafted_member_with_a_recomputed_checksum_is_refused_by_type_on_the_command_line(
    tmp_path: Path,
) -> None:
    """The issue's instance end to end: `predict` with a model file whose member truncates a
    file on loading, its checksum recomputed so that only the type check can stop it."""
    import skops.io
    import soundfile as sf

    victim = tmp_path / "precious.dat"
    victim.write_bytes(b"x" * 100)
    module, attr = _reexport(np.memmap)
    node = _constructor(module, attr, (str(victim), "uint8", "w+", 0, (16,)))
    blob = _with_attribute(skops.io.dumps(sklearn_member().estimator), node)
    good = write_model(tmp_path / "good.safetensors", [sklearn_member()])

    def swap(meta: dict, tensors: dict) -> None:
        tensors["m0.skops"] = np.frombuffer(blob, dtype=np.uint8).copy()

    bad = rewrite(good, tmp_path / "bad.safetensors", swap, checksum="recompute")
    with pytest.raises(ModelFileError, match=rf"^{bad}: member 0 \(sklearn\) holds types .*memmap"):
        load_model(bad)
    damaged = rewrite(good, tmp_path / "damaged.safetensors", swap, checksum="keep")
    with pytest.raises(ModelFileError, match="memmap"):  # by type, before the checksum
        load_model(damaged)
    clip = tmp_path / "clip.wav"
    sf.write(clip, np.sin(np.arange(22050) / 10.0).astype(np.float32) * 0.1, 22050)
    proc = subprocess.run(
        [sys.executable, "-m", "urbansound.predict", str(bad), str(clip)],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"error: {bad}: member 0 (sklearn) holds types")
    assert "memmap" in proc.stderr and proc.stderr.count("\n") == 1
    assert victim.read_bytes() == b"x" * 100


# --------------------------------------------------------------------------------------------
# The list itself


def test_every_allowed_type_is_a_class_named_by_its_own_module() -> None:
    for name in (*FRONT, *FITTED_STATE, *DATA, *classifier_types()):
        module, _, attr = name.rpartition(".")
        obj = getattr(importlib.import_module(module), attr)
        assert isinstance(obj, type), f"{name} is no class"
        own = "builtins" if module == "builtins" else obj.__module__
        assert f"{own}.{obj.__name__}" == name, f"{name} is a re-export of {own}.{obj.__name__}"
    assert not any(n.startswith("sklearn.externals") for n in trusted_types())


#: Variants of the classifiers: the keys of urbansound's families and the options that change
#: what a fitted classifier holds (losses, neighbour indexes and metrics, calibrations, solvers).
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "SGDClassifier": [
        {"loss": loss}
        for loss in ("hinge", "log_loss", "modified_huber", "squared_hinge", "perceptron")
    ],
    "KNeighborsClassifier": [
        {"algorithm": a, "p": p} for a in ("kd_tree", "ball_tree", "brute") for p in (1, 2, 3)
    ]
    + [{"metric": "chebyshev"}, {"weights": "distance"}],
    "RadiusNeighborsClassifier": [
        {"radius": 10.0, "algorithm": a} for a in ("kd_tree", "ball_tree")
    ],
    "CalibratedClassifierCV": [
        {"method": m, "ensemble": e} for m in ("sigmoid", "isotonic") for e in (True, False)
    ],
    "GaussianProcessClassifier": [{}, {"multi_class": "one_vs_one"}],
    "MLPClassifier": [{"solver": s, "max_iter": 20} for s in ("adam", "sgd", "lbfgs")],
    "HistGradientBoostingClassifier": [{"max_iter": 5}],
    "GradientBoostingClassifier": [{"n_estimators": 5}, {"n_estimators": 5, "loss": "exponential"}],
    "RandomForestClassifier": [{"n_estimators": 5}],
    "ExtraTreesClassifier": [{"n_estimators": 5}],
}
#: Classifiers whose fitted state holds a function: refused (and binary-only: no use here).
HOLD_A_FUNCTION = {"TunedThresholdClassifierCV"}
#: Classifiers of several outputs (a 2-D y): fitted on one.
MULTI_OUTPUT = {"ClassifierChain", "MultiOutputClassifier"}


def _classifiers():
    import inspect

    from sklearn.linear_model import LogisticRegression
    from sklearn.utils import all_estimators

    for name, cls in all_estimators(type_filter="classifier"):
        params = inspect.signature(cls).parameters
        base: dict[str, Any] = {}
        if "estimator" in params and params["estimator"].default in (inspect.Parameter.empty, None):
            base["estimator"] = LogisticRegression(max_iter=100)
        if "estimators" in params and params["estimators"].default is inspect.Parameter.empty:
            base["estimators"] = [
                ("a", LogisticRegression(max_iter=100)),
                ("b", LogisticRegression(C=0.5, max_iter=100)),
            ]
        for variant in VARIANTS.get(name, [{}]):
            yield name, cls(**base, **variant)


@pytest.mark.slow  # ~30 s: a hundred fits; the list changes only with scikit-learn's version
def test_every_classifier_of_scikit_learn_saves_and_loads_and_its_state_is_the_list() -> None:
    """Fit every classifier scikit-learn has (multiclass and binary data, in the variants above),
    save it with skops and load it: each loads and predicts the same, and the types their
    fitted state holds besides classifiers are exactly :data:`FITTED_STATE`."""
    import warnings

    import skops.io
    from sklearn.base import clone
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4)).astype(np.float32)
    counts = np.abs(np.round(X * 3)).astype(np.int64)  # the naive Bayes families need counts
    labels = {"multiclass": np.arange(60) % 3, "binary": np.arange(60) % 2}
    held: set[str] = set()
    fitted = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence on 60 random rows, deprecated classes
        classifiers = list(_classifiers())
    for name, est in classifiers:
        for kind, y in labels.items():
            if name in MULTI_OUTPUT:  # two binary outputs (a chain predicts no multiclass)
                if kind == "multiclass":
                    continue
                y = np.stack([y, 1 - y], axis=1)
            data = counts if name.endswith("NB") and name != "GaussianNB" else X
            pipe = make_pipeline(StandardScaler(), clone(est)) if data is X else clone(est)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    pipe.fit(data, y)
                except ValueError as exc:  # binary-only classifiers on three classes
                    binary_only = "binary" in str(exc).lower() or "2 classes" in str(exc)
                    assert kind == "multiclass" and binary_only, (name, exc)
                    continue
                blob = skops.io.dumps(pipe)
                names = {n for _, n in schema_types(blob)}
                if name in HOLD_A_FUNCTION:
                    assert untrusted_types(blob), name
                    continue
                assert untrusted_types(blob) == [], (name, kind)
                loaded = load_estimator(blob)
                np.testing.assert_array_equal(loaded.predict(data), pipe.predict(data))
            fitted += 1
            held |= names - classifier_types() - set(FRONT) - set(DATA)
    assert fitted > 80
    # none missing, none that no classifier holds
    assert sorted(held) == sorted(FITTED_STATE), set(held) ^ set(FITTED_STATE)
