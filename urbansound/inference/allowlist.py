"""What a scikit-learn member of a model file may hold: an explicit allowlist of types.

A scikit-learn member (:mod:`urbansound.inference.modelfile`) is skops data: a zip whose
``schema.json`` is a tree of nodes, each naming the type skops rebuilds (``__module__`` and
``__class__``) and how (``__loader__``: a dict, an array, an object from its attributes, ...).
skops imports that module and takes that attribute, so any name reachable from an importable
module is a type it can rebuild: ``sklearn.externals.array_api_compat.numpy.memmap`` is numpy's
``memmap``, which opens and truncates the file its arguments name. Trusting "anything under
``sklearn.``" therefore trusted numpy's ``memmap``, ``functools.partial``, ``threading.Thread``,
``tempfile.TemporaryDirectory``, ``operator.attrgetter`` and the function, module and method
types, all re-exported by scikit-learn's modules.

So nothing is trusted by where it can be reached from: :func:`untrusted_types` reads every node
of a member's schema (JSON only: nothing is imported or built) and returns each one whose name
is not, exactly, one of :func:`trusted_types`, or whose loader rebuilds a callable. On the list,
each type by the module that defines it (``type.__module__``, never a path that re-exports it):

- scikit-learn's classifier classes (``sklearn.utils.all_estimators(type_filter="classifier")``),
  so that ``model=sklearn`` with any of them is saved and loaded;
- the steps urbansound puts in front of a classifier (:data:`FRONT`: ``Pipeline``,
  ``StandardScaler``);
- the types the classifiers' fitted state holds (:data:`FITTED_STATE`: trees, losses and links,
  calibrators, neighbour trees and distance metrics, label encoders, optimisers, the Gaussian
  process's default kernel); ``tests/inference/test_allowlist.py`` fits every classifier
  scikit-learn has, in the variants urbansound's families and their keys give, and checks that
  this list is exactly what they hold;
- plain data (:data:`DATA`: containers, strings and numbers, numpy arrays, scalars, dtypes and
  random states).

No loader that rebuilds a callable is accepted whatever it names (:data:`LOADERS` lists those
that are): a function (even a numpy ufunc, which skops trusts by default), a
``functools.partial``, a bound method, an ``operator`` function, a ``defaultdict`` (its factory),
or a constructor called with stored arguments. A classifier that keeps a function in its fitted
state (``TunedThresholdClassifierCV`` keeps its scoring function) is therefore refused too.
"""

from __future__ import annotations

import functools
import io
import json
import zipfile
from typing import Any

__all__ = [
    "DATA",
    "FITTED_STATE",
    "FRONT",
    "LOADERS",
    "classifier_types",
    "schema_types",
    "trusted_types",
    "untrusted_types",
]

#: skops loaders that rebuild data (containers, arrays, objects from their attributes, the
#: ``__reduce__`` of scikit-learn's trees and losses, random states, types as values, a reference
#: to an object already built). Any other loader (``FunctionNode``, ``PartialNode``,
#: ``MethodNode``, ``OperatorFuncNode``, ``DefaultDictNode``, ``ConstructorFromReduceNode``,
#: ``SparseMatrixNode``, ...) refuses the member.
LOADERS = frozenset(
    {
        "CachedNode",
        "DictNode",
        "ListNode",
        "TupleNode",
        "SetNode",
        "JsonNode",
        "BytesNode",
        "NdArrayNode",
        "DTypeNode",
        "ObjectNode",
        "TreeNode",
        "LossNode",
        "RandomStateNode",
        "RandomGeneratorNode",
        "TypeNode",
    }
)

#: The steps urbansound puts in front of a classifier (:func:`urbansound.training.families.
#: make_pipeline`).
FRONT = ("sklearn.pipeline.Pipeline", "sklearn.preprocessing._data.StandardScaler")

#: The types a fitted classifier's state holds besides classifiers (each by its own module).
FITTED_STATE = (
    "sklearn._loss._loss.CyExponentialLoss",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn._loss._loss.CyHalfMultinomialLoss",
    "sklearn._loss.link.HalfLogitLink",
    "sklearn._loss.link.Interval",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.loss.ExponentialLoss",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.gaussian_process._gpc._BinaryGaussianProcessClassifierLaplace",
    "sklearn.gaussian_process.kernels.ConstantKernel",
    "sklearn.gaussian_process.kernels.Product",
    "sklearn.gaussian_process.kernels.RBF",
    "sklearn.isotonic.IsotonicRegression",
    "sklearn.linear_model._sgd_fast.Hinge",
    "sklearn.linear_model._sgd_fast.ModifiedHuber",
    "sklearn.linear_model._sgd_fast.SquaredHinge",
    "sklearn.metrics._dist_metrics.ChebyshevDistance64",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.multiclass._ConstantPredictor",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.preprocessing._label.LabelBinarizer",
    "sklearn.preprocessing._label.LabelEncoder",
    "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.tree._tree.Tree",
    "sklearn.utils._bunch.Bunch",
)

#: Plain data: containers, JSON values and types as values, numpy arrays, numeric scalars and
#: dtypes, random states (a ``Generator``'s bit generator is checked by skops itself).
DATA = (
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "builtins.set",
    "builtins.str",
    "builtins.int",
    "builtins.float",
    "builtins.bool",
    "builtins.bytes",
    "numpy.ndarray",
    "numpy.dtype",
    *(
        f"numpy.{name}"
        for name in (
            "bool",
            "int8",
            "int16",
            "int32",
            "int64",
            "uint8",
            "uint16",
            "uint32",
            "uint64",
            "float16",
            "float32",
            "float64",
            "str_",
        )
    ),
    "numpy.random.mtrand.RandomState",
    "numpy.random._generator.Generator",
)


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__name__}"


@functools.cache
def classifier_types() -> frozenset[str]:
    """scikit-learn's classifier classes, each ``<defining module>.<name>``."""
    from sklearn.utils import all_estimators

    return frozenset(
        _type_name(cls)
        for _, cls in all_estimators(type_filter="classifier")
        if cls.__module__.startswith("sklearn.")
    )


def trusted_types() -> frozenset[str]:
    """Every type name a scikit-learn member may hold (the module docstring's four groups)."""
    return classifier_types() | frozenset((*FRONT, *FITTED_STATE, *DATA))


def schema_types(blob: bytes) -> list[tuple[str, str]]:
    """``(loader, "module.class")`` of every node of skops bytes' ``schema.json``, in order.

    Reads JSON only: no module is imported and nothing is built. Raises ``ValueError`` for
    bytes that are no skops zip with a JSON schema (``zipfile.BadZipFile`` is one).
    """
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as z:
            schema = json.loads(z.read("schema.json"))
    except KeyError:
        raise ValueError("no schema.json in the skops data") from None
    found: list[tuple[str, str]] = []
    stack: list[Any] = [schema]
    while stack:  # iterative: a deep crafted schema must not exhaust the recursion limit
        node = stack.pop()
        if isinstance(node, dict):
            if "__loader__" in node:
                name = f"{node.get('__module__')}.{node.get('__class__')}"
                found.append((str(node["__loader__"]), name))
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
    return found


def untrusted_types(blob: bytes) -> list[str]:
    """What in skops bytes is not trusted, sorted and without repeats: ``"module.class"`` for an
    object of a type off :func:`trusted_types`, ``"module.class (<loader>)"`` for another node
    naming such a type (``builtins.eval (TypeNode)``: skops stores a builtin function as a type)
    or whose loader rebuilds a callable (not in :data:`LOADERS`); empty when the member may be
    loaded.

    Raises ``ValueError`` for bytes that are no skops data (:func:`schema_types`).
    """
    trusted = trusted_types()
    refused = set()
    for loader, name in schema_types(blob):
        if loader not in LOADERS:
            refused.add(f"{name} ({loader})")
        elif name not in trusted:
            refused.add(name if loader == "ObjectNode" else f"{name} ({loader})")
    return sorted(refused)
