"""A scikit-learn family's trial against the same estimator fitted fold by fold by hand.

Usage::

    python benchmarks/families.py [--data demo|ROOT] [--families random_forest,hist_gb,...]
                                  [--threads N] [--repeats 2] [--min-time 2]

Features: MFCC-40 mean+std (``features.pooling=mean_std``) of the demo corpus (generated under
``outputs/demo`` when absent) or of an UrbanSound8K folder, extracted through the feature cache;
splits: the dataset's folds (leave one fold out).

For each family (its shipped defaults from ``conf/model/``), in the same process:

- ours: :func:`urbansound.training.cross_validation.cross_validate` with ``train.threads=N`` (all
  cores by default): the splits in parallel, staged families evaluated after each stage, every
  metric of the ``CVResult``;
- by hand: the usual loop, ``for split: make_pipeline(StandardScaler(), estimator).fit(X[train],
  y[train]).predict_proba(X[test])`` one split after another, the estimator built from the same
  settings and given every core itself (forests ``n_jobs=N``, OpenMP/BLAS unlimited);

and prints both times (best of ``--repeats``, taken alternately, more of them for a family whose
runs take under ``--min-time`` seconds together), their ratio (the issue's
target: <= 1.5) and both mean accuracies (equal: same models). Timings on a shared machine are
noisy: compare the ratios taken in one run and read the load average printed with them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import numpy as np

from urbansound.config.settings import FAMILY_SETTINGS, TrainSettings
from urbansound.data.cv import fold_splits
from urbansound.training.cross_validation import cross_validate
from urbansound.training.families import make_estimator, make_pipeline
from urbansound.training.problem import CVProblem

DEFAULT_FAMILIES = "random_forest,extra_trees,hist_gb,svm,logreg,knn"


def features(data: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from urbansound.config.settings import DataSettings, FeatureSettings
    from urbansound.data.index import load_index
    from urbansound.data.source import resolve_dataset
    from urbansound.features.extraction import extract_features

    if data == "demo":
        root, name = resolve_dataset(DataSettings())
    else:
        root, name = Path(data), "urbansound8k"
    index = load_index(root, missing="skip", name=name)
    feats = extract_features(
        list(index.clips["path"]), FeatureSettings(pooling="mean_std"), progress=True
    )
    clips = index.clips[feats.ok]
    return feats.X, clips["classID"].to_numpy(), clips["fold"].to_numpy()


def by_hand(X, y, splits, model, *, threads: int, seed: int) -> float:
    """The usual per-fold loop; returns the mean accuracy of predict_proba's argmax."""
    accs = []
    for s in splits:
        pipe = make_pipeline(make_estimator(model, seed=seed, n_jobs=threads))
        pipe.fit(X[s.train], y[s.train])
        proba = pipe.predict_proba(X[s.test])
        classes = pipe[-1].classes_
        accs.append(np.mean(classes[proba.argmax(axis=1)] == y[s.test]))
    return float(np.mean(accs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="demo", help="demo | an UrbanSound8K root")
    parser.add_argument("--families", default=DEFAULT_FAMILIES)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--min-time",
        type=float,
        default=2.0,
        help="repeat past --repeats until both sides took this many seconds together (the "
        "quick families' sub-second timings are too noisy once)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    X, y, fold = features(args.data)
    splits = fold_splits(fold)
    n_classes = int(y.max()) + 1
    train = TrainSettings(threads=args.threads, seed=args.seed)
    print(
        f"{args.data}: {X.shape[0]} clips x {X.shape[1]} features, {len(splits)} splits, "
        f"{args.threads} thread(s), load average {os.getloadavg()[0]:.2f}"
    )
    header = ("family", "ours s", "by hand s", "ratio", "acc ours", "by hand", "runs")
    print("{:<14} {:>8} {:>10} {:>6} {:>9} {:>8} {:>5}".format(*header))
    for family in args.families.split(","):
        model = dataclasses.replace(FAMILY_SETTINGS[family](), family=family)
        ours_s, hand_s = [], []
        while len(ours_s) < args.repeats or sum(ours_s) + sum(hand_s) < args.min_time:
            t = time.perf_counter()
            result = cross_validate(
                CVProblem(X, y, splits, n_classes=n_classes, model=model, train=train),
                progress=False,
            )
            ours_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            hand_acc = by_hand(X, y, splits, model, threads=args.threads, seed=args.seed)
            hand_s.append(time.perf_counter() - t)
        ours, hand = min(ours_s), min(hand_s)
        print(
            f"{family:<14} {ours:8.2f} {hand:10.2f} {ours / hand:6.2f} "
            f"{result.mean_accuracy:9.4f} {hand_acc:8.4f} {len(ours_s):5d}"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
