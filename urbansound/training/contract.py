"""What a scikit-learn family's classifier must be before it is made, and give once it is fitted.

- :func:`check_estimator_class`: ``model._target_`` (and every nested ``_target_`` of the model's
  keys, :func:`nested_targets`) names a scikit-learn estimator class, checked before anything is
  instantiated: a configuration read from a foreign run directory naming ``numpy.memmap`` (which
  opens the file its arguments name) is refused without a call.
- :func:`output_breach`: the output contract every family's classifier keeps on every split:
  integer ``classes_`` among the dataset's class ids, one ``predict_proba`` column per entry of
  ``classes_``, finite probabilities in [0, 1] whose rows sum to 1 within
  :data:`PROBABILITY_TOLERANCE`. :mod:`urbansound.training.families` stops a run that breaks it
  with one line; :mod:`urbansound.inference.modelfile` checks a model file's members the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from urbansound.errors import ConfigError

__all__ = ["PROBABILITY_TOLERANCE", "check_estimator_class", "nested_targets", "output_breach"]

#: How far a row of class probabilities may sum from 1, and a probability lie outside [0, 1]
#: (float32 classifiers round by ~1e-7; a broken one is off by far more).
PROBABILITY_TOLERANCE = 1e-4


def check_estimator_class(target: Any, key: str, *, classifier: bool) -> None:
    """Check, calling nothing, that ``target`` (the ``_target_`` at ``key``) names a class with
    ``fit``, ``get_params`` and ``predict_proba`` (the classifier itself) or with ``get_params``
    (a nested estimator or parameter object: a meta-estimator's ``estimator``, a Gaussian
    process's ``kernel``); raise :class:`ConfigError` naming the key otherwise. Its module is
    imported to look the name up (a name that cannot be found is left to the instantiation's
    own message)."""
    import importlib

    module, _, name = str(target).rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError, ValueError):
        return  # instantiate says it cannot be found, with its own reason
    needed = ("fit", "get_params", "predict_proba") if classifier else ("get_params",)
    missing = [m for m in needed if not hasattr(found, m)]
    if not isinstance(found, type) or missing:
        what = "not a class" if not isinstance(found, type) else f"no {', '.join(missing)}"
        kind = "classifier" if classifier else "estimator or parameter object"
        raise ConfigError(
            f"{key}={target} is no scikit-learn {kind} ({what}); nothing was instantiated: give "
            f"the dotted path of a class with {', '.join(needed)}"
        )


def nested_targets(params: Any, key: str) -> list[tuple[str, Any]]:
    """``(key, _target_)`` of every nested config with a ``_target_`` in ``params``."""
    found = []
    if isinstance(params, dict):
        if "_target_" in params:
            found.append((f"{key}._target_", params["_target_"]))
        for k, v in params.items():
            found += nested_targets(v, f"{key}.{k}")
    elif isinstance(params, list | tuple):
        for i, v in enumerate(params):
            found += nested_targets(v, f"{key}[{i}]")
    return found


def output_breach(proba: Any, classes: Any, *, n_rows: int, n_classes: int) -> str | None:
    """What a classifier's output breaks of the contract (the module docstring), in words, or
    ``None`` when it keeps it.

    ``proba`` is what ``predict_proba`` gave for ``n_rows`` rows, ``classes`` its ``classes_``;
    ``n_classes`` the dataset's number of classes.
    """
    cls = np.asarray(classes) if classes is not None else np.asarray([])
    shown = " ".join(repr(cls.tolist()).split())[:60]
    if cls.ndim != 1 or len(cls) == 0:
        return f"its classes_ {shown} are not a list of class ids"
    if not np.issubdtype(cls.dtype, np.integer) or cls.dtype == np.bool_:
        return f"its classes_ {shown} are {cls.dtype} values, not integer class ids"
    if cls.min() < 0 or cls.max() >= n_classes or len(np.unique(cls)) != len(cls):
        return f"its classes_ {shown} are not distinct class ids 0..{n_classes - 1}"
    try:
        p = np.asarray(proba, dtype=np.float64)
    except (TypeError, ValueError):
        return "predict_proba gave values that are not numbers"
    if p.shape != (n_rows, len(cls)):
        return (
            f"predict_proba gave shape {p.shape} for {n_rows} rows and {len(cls)} classes_ "
            "(one column per class)"
        )
    bad = ~np.isfinite(p)
    if bad.any():
        return f"predict_proba gave {int(bad.sum())} values that are NaN or infinite"
    tol = PROBABILITY_TOLERANCE
    if p.size and (p.min() < -tol or p.max() > 1 + tol):
        return f"predict_proba gave values outside [0, 1] ({p.min():.6g} to {p.max():.6g})"
    sums = p.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > tol)
    if len(off):
        return f"predict_proba gave {len(off)} rows that sum to {sums[off[0]]:.6g}, not 1"
    return None
