"""Checks of a loaded scikit-learn member's fitted structure, which scikit-learn leaves unchecked.

skops rebuilds a fitted classifier from the attributes stored in the file, and scikit-learn's
compiled prediction code then follows the indices those attributes hold without bounds checks:
a decision tree whose child index points past its node array reads memory it does not own (the
process crashes), one whose child is the node itself never ends (skops says the same of the
histogram boosting's ``TreePredictor``). The allowlist
(:mod:`urbansound.inference.allowlist`) decides which types may be rebuilt; :func:`check_fitted`
then checks the index structures of the ones urbansound's families hold, wherever they sit in
the estimator (a pipeline, a forest, a calibrator, a meta-estimator):

- ``sklearn.tree._tree.Tree`` (forests, extra trees, gradient boosting, bagging, AdaBoost): every
  split node's two children lie after it and inside the node array, so every descent ends at a
  leaf; leaves have no children; split features lie in ``[0, n_features)``;
- ``TreePredictor`` (``hist_gb``): the same for its ``nodes``; a categorical split's bitset index
  lies inside the bitsets;
- ``KDTree`` and ``BallTree`` (``knn``): the index array holds sample indices, every node's
  range lies inside it, and a node that is not a leaf has its two children in the node array;
- the support vectors of ``SVC`` and ``NuSVC`` (``svm``): as many as the dual coefficients and
  the per-class counts say, of ``n_features`` each.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_fitted"]


def check_fitted(estimator: Any, *, n_features: int) -> None:
    """Check the index structures of every tree, neighbour index and SVM reachable from
    ``estimator`` (its attributes, recursively; lists, tuples, dicts and object arrays too).

    ``n_features`` is the width of the member's input. Raises ``ValueError`` naming the first
    structure that is not well formed.
    """
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
    from sklearn.neighbors import BallTree, KDTree
    from sklearn.svm import SVC, NuSVC
    from sklearn.tree._tree import Tree

    seen: set[int] = set()
    stack = [estimator]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or obj is None or isinstance(obj, str | bytes | int | float):
            continue
        seen.add(id(obj))
        if isinstance(obj, Tree):
            _check_tree(obj, n_features)
        elif isinstance(obj, TreePredictor):
            _check_predictor(obj, n_features)
        elif isinstance(obj, KDTree | BallTree):
            _check_binary_tree(obj, n_features)
        elif isinstance(obj, SVC | NuSVC):
            _check_svm(obj, n_features)
        if isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        elif isinstance(obj, np.ndarray):
            if obj.dtype == object:
                stack.extend(obj.ravel().tolist())
        elif type(obj).__module__.startswith("sklearn.") and hasattr(obj, "__dict__"):
            stack.extend(vars(obj).values())


def _children_ok(left: np.ndarray, right: np.ndarray, leaf: np.ndarray) -> bool:
    """Split nodes' children lie after the node and inside the array; leaves have none
    (scikit-learn marks them -1: ``TREE_LEAF``), or are not looked at (``is_leaf`` given)."""
    n = len(left)
    index = np.arange(n)
    split = ~leaf
    inside = (left > index) & (left < n) & (right > index) & (right < n)
    return bool(inside[split].all())


def _check_tree(tree: Any, n_features: int) -> None:
    left = np.asarray(tree.children_left, dtype=np.int64)
    right = np.asarray(tree.children_right, dtype=np.int64)
    feature = np.asarray(tree.feature, dtype=np.int64)
    n = int(tree.node_count)
    leaf = (left == -1) & (right == -1)
    width = int(tree.n_features)
    if not (len(left) == len(right) == len(feature) == n >= 1 and 1 <= width <= n_features):
        raise ValueError(f"a decision tree of {n} nodes and {width} features is not well formed")
    if not _children_ok(left, right, leaf):
        raise ValueError("a decision tree's child index points outside or back up its nodes")
    split = feature[~leaf]
    if len(split) and not (split.min() >= 0 and split.max() < width):
        raise ValueError(f"a decision tree splits on a feature outside 0..{width - 1}")


def _check_predictor(predictor: Any, n_features: int) -> None:
    nodes = predictor.nodes
    needed = {"left", "right", "is_leaf", "feature_idx", "is_categorical", "bitset_idx"}
    if not isinstance(nodes, np.ndarray) or not needed <= set(nodes.dtype.names or ()):
        raise ValueError("a boosting tree's nodes are not a node array")
    if len(nodes) < 1:
        raise ValueError("a boosting tree has no nodes")
    leaf = nodes["is_leaf"].astype(bool)
    left = nodes["left"].astype(np.int64)
    right = nodes["right"].astype(np.int64)
    if not _children_ok(left, right, leaf):
        raise ValueError("a boosting tree's child index points outside or back up its nodes")
    split = nodes[~leaf]
    features = split["feature_idx"].astype(np.int64)
    if len(split) and not (features.min() >= 0 and features.max() < n_features):
        raise ValueError(f"a boosting tree splits on a feature outside 0..{n_features - 1}")
    categorical = split[split["is_categorical"].astype(bool)]
    if len(categorical):
        bitsets = min(len(predictor.binned_left_cat_bitsets), len(predictor.raw_left_cat_bitsets))
        idx = categorical["bitset_idx"].astype(np.int64)
        if not (idx.min() >= 0 and idx.max() < bitsets):
            raise ValueError("a boosting tree's categorical split points outside its bitsets")


def _check_binary_tree(tree: Any, n_features: int) -> None:
    data, idx, node_data, _ = tree.get_arrays()
    data, idx = np.asarray(data), np.asarray(idx)
    n_samples, n_nodes = len(data), len(node_data)
    if data.ndim != 2 or data.shape[1] != n_features or n_nodes < 1:
        raise ValueError(f"a neighbour index of data {data.shape} is not well formed")
    if len(idx) != n_samples or (n_samples and not (idx.min() >= 0 and idx.max() < n_samples)):
        raise ValueError("a neighbour index points outside its samples")
    start = node_data["idx_start"].astype(np.int64)
    end = node_data["idx_end"].astype(np.int64)
    if not ((start >= 0).all() and (start <= end).all() and (end <= n_samples).all()):
        raise ValueError("a neighbour index's node covers samples it does not have")
    inner = np.flatnonzero(~node_data["is_leaf"].astype(bool))
    if len(inner) and 2 * inner.max() + 2 >= n_nodes:
        raise ValueError("a neighbour index's node has children outside its nodes")


def _check_svm(svm: Any, n_features: int) -> None:
    if not hasattr(svm, "support_vectors_"):
        return  # not fitted: prediction refuses it itself
    vectors = np.asarray(svm.support_vectors_)
    counts = np.asarray(svm.n_support_, dtype=np.int64)
    dual = np.asarray(svm.dual_coef_)
    classes = len(getattr(svm, "classes_", counts))
    if not (
        vectors.ndim == 2
        and (vectors.shape[1] == n_features or svm.kernel == "precomputed")
        and len(counts) == classes
        and (counts >= 0).all()
        and counts.sum() == len(vectors)
        and dual.ndim == 2
        and dual.shape == (max(classes - 1, 1), len(vectors))
    ):
        raise ValueError(
            f"an SVM's {len(vectors)} support vectors disagree with its per-class counts "
            f"{counts.tolist()} or dual coefficients {dual.shape}"
        )
