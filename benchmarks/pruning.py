"""Which pruner keeps a sweep's winners? Pruners replayed over recorded per-epoch CV curves.

Usage::

    python benchmarks/pruning.py [--trials 24] [--epochs 50] [--data demo,sample]
                                 [--orders 10] [--refresh]
                                 [--cache outputs/benchmarks/pruning_curves.json]

1. **Record.** ``--trials`` MLP configurations drawn at random (seeded) from ``full_tpe``'s
   model and training ranges (hidden layers, dropout, activation, lr, batch size, weight decay)
   are trained to the end, without pruning, with 10-fold CV
   (:func:`urbansound.training.cross_validation. cross_validate`, MFCC-40 mean features), on each
   data set: ``demo`` (the demo corpus at 20 clips per class) and ``sample`` (the real UrbanSound8K
   sample in /work/shared/data, ``data.missing=skip``). Each trial's curve is its mean test accuracy
   after every epoch, the value the sweep reports to the pruner; its final value is the last
   epoch's, the sweep's objective. Curves are cached in ``--cache`` (JSON); a second run only
   replays.
2. **Replay.** Every pruner below gets the trials in their order in an in-memory Optuna study
   (``study.ask``, ``trial.report`` per epoch, ``should_prune``, ``study.tell``), as the sweep
   does. For each it counts:

   - ``pruned``: trials stopped early; ``epochs``: the share of epochs run (the time spent);
   - ``above``: pruned trials whose value *when pruned* was above the best completed value at
     that time (what the report shows for a real study);
   - ``lost``: pruned trials whose final value (run to the end) would have beaten the best
     completed value at the time: a winner the pruner threw away;
   - ``best``: the best completed value at the end (the worst over the orders), against the
     best of all curves (``none`` finds that one by construction).

   Each pruner replays the recorded order and ``--orders - 1`` seeded shuffles of it (a pruner's
   decisions depend on which trials came first); the counts add up over these studies.

Prints one table per data set and a combined one; the shipped sweeps' pruners are chosen from
it (the notes give the table and the choice).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

SAMPLE_ROOT = Path("/work/shared/data/UrbanSound8K")

# (name, factory) for every pruner compared; the factory builds a fresh pruner per replay.
PRUNERS: list[tuple[str, Callable[[], optuna.pruners.BasePruner]]] = [
    ("none", optuna.pruners.NopPruner),
    (
        "median(startup=5,warmup=10)",
        lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=10),
    ),
    (
        "median(startup=5,warmup=30)",
        lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=30),
    ),
    (
        "median(startup=10,warmup=30)",
        lambda: optuna.pruners.MedianPruner(n_startup_trials=10, n_warmup_steps=30),
    ),
    (
        "median(startup=10,warmup=40)",
        lambda: optuna.pruners.MedianPruner(n_startup_trials=10, n_warmup_steps=40),
    ),
    (
        "percentile(25,startup=5,warmup=10)",
        lambda: optuna.pruners.PercentilePruner(25.0, n_startup_trials=5, n_warmup_steps=10),
    ),
    (
        "percentile(10,startup=10,warmup=30)",
        lambda: optuna.pruners.PercentilePruner(10.0, n_startup_trials=10, n_warmup_steps=30),
    ),
    (
        "hyperband(min=10,rf=3)",
        lambda: optuna.pruners.HyperbandPruner(min_resource=10, reduction_factor=3),
    ),
    (
        "hyperband(min=20,rf=2)",
        lambda: optuna.pruners.HyperbandPruner(min_resource=20, reduction_factor=2),
    ),
    (
        "wilcoxon(p=0.1,startup=5)",
        lambda: optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=5),
    ),
    (
        "patient(median(5,10),patience=10)",
        lambda: optuna.pruners.PatientPruner(
            optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=10), patience=10
        ),
    ),
    (
        "patient(median(10,30),patience=5)",
        lambda: optuna.pruners.PatientPruner(
            optuna.pruners.MedianPruner(n_startup_trials=10, n_warmup_steps=30), patience=5
        ),
    ),
    (
        "patient(percentile(10,10,30),patience=10)",
        lambda: optuna.pruners.PatientPruner(
            optuna.pruners.PercentilePruner(10.0, n_startup_trials=10, n_warmup_steps=30),
            patience=10,
        ),
    ),
]


def draw_configs(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` MLP configurations from ``full_tpe``'s model and training ranges (seeded)."""
    rng = np.random.default_rng(seed)
    hidden = [(256, 256), (512, 256), (512, 512), (1024, 512), (256, 256, 128)]
    out = []
    for _ in range(n):
        out.append(
            {
                "hidden": list(hidden[rng.integers(len(hidden))]),
                "dropout": float(rng.uniform(0.1, 0.6)),
                "activation": str(rng.choice(["relu", "gelu", "elu"])),
                "lr": float(10 ** rng.uniform(-4, -2)),
                "batch_size": int(rng.choice([16, 32, 64, 128])),
                "weight_decay": float(10 ** rng.uniform(-7, -3)),
            }
        )
    return out


def load_data(name: str, workdir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MFCC-40 mean features, class ids and folds of the ``demo`` corpus or the ``sample``."""
    from urbansound.config.settings import DataSettings, FeatureSettings
    from urbansound.data.index import load_index
    from urbansound.data.source import resolve_dataset
    from urbansound.features.extraction import extract_features

    if name == "demo":
        data = DataSettings(demo_dir=str(workdir / "demo20"), demo_clips_per_class=20)
        root, dataset = resolve_dataset(data)
        index = load_index(root, missing="skip", name=dataset)
    else:
        index = load_index(SAMPLE_ROOT, missing="skip")
    settings = FeatureSettings(cache_dir=str(workdir / "cache"))
    feats = extract_features(list(index.clips["path"]), settings, progress=False)
    clips = index.clips[feats.ok]
    return feats.X, clips["classID"].to_numpy(), clips["fold"].to_numpy()


def record(name: str, configs: list[dict[str, Any]], epochs: int, workdir: Path) -> list[dict]:
    """Train every configuration to the end; one curve (mean CV accuracy per epoch) each."""
    from urbansound.config.settings import ModelSettings, TrainSettings
    from urbansound.data.cv import fold_splits
    from urbansound.training.cross_validation import cross_validate
    from urbansound.training.problem import CVProblem

    X, y, folds = load_data(name, workdir)
    splits = fold_splits(folds)
    trials = []
    for i, c in enumerate(configs):
        t0 = time.monotonic()
        result = cross_validate(
            CVProblem(
                X,
                y,
                splits,
                n_classes=10,
                model=ModelSettings(
                    hidden=tuple(c["hidden"]), dropout=c["dropout"], activation=c["activation"]
                ),
                train=TrainSettings(
                    epochs=epochs,
                    lr=c["lr"],
                    batch_size=c["batch_size"],
                    weight_decay=c["weight_decay"],
                    threads=1,
                ),
            ),
            progress=False,
        )
        curve = [h.mean_test_accuracy for h in result.history]
        trials.append({"config": c, "curve": curve, "seconds": time.monotonic() - t0})
        print(
            f"{name} trial {i}: final {curve[-1]:.4f}, max {max(curve):.4f} "
            f"({time.monotonic() - t0:.1f} s)",
            file=sys.stderr,
        )
    return trials


def replay(
    curves: list[list[float]], make: Callable[[], optuna.pruners.BasePruner]
) -> dict[str, Any]:
    """Run ``curves`` in order through a fresh in-memory study with ``make()``'s pruner."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study = optuna.create_study(  # a fixed name: Hyperband's brackets hash it
        study_name="replay",
        direction="maximize",
        pruner=make(),
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    best = -math.inf
    pruned = above = lost = 0
    run_epochs = 0
    for curve in curves:
        trial = study.ask()
        stopped = None
        for epoch, value in enumerate(curve, start=1):
            trial.report(value, epoch)
            run_epochs += 1
            if epoch < len(curve) and trial.should_prune():
                stopped = epoch
                break
        if stopped is None:
            study.tell(trial, curve[-1])
            best = max(best, curve[-1])
            continue
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        pruned += 1
        above += curve[stopped - 1] > best
        lost += curve[-1] > best
    total = sum(len(c) for c in curves)
    return {
        "pruned": pruned,
        "above": int(above),
        "lost": int(lost),
        "epochs": run_epochs / total,
        "best": best,
        "oracle": max(c[-1] for c in curves),
    }


def replay_orders(
    curves: list[list[float]], make: Callable[[], optuna.pruners.BasePruner], orders: int
) -> dict[str, Any]:
    """:func:`replay` over the recorded order and ``orders - 1`` seeded shuffles, summed.

    One order is one study; the counts add up over studies, ``epochs`` is their mean share and
    ``best`` the worst study's best completed value (``oracle`` the best of all curves).
    """
    out = {"pruned": 0, "above": 0, "lost": 0, "epochs": 0.0, "best": math.inf}
    for i in range(orders):
        order = np.random.default_rng(i).permutation(len(curves)) if i else range(len(curves))
        r = replay([curves[j] for j in order], make)
        for k in ("pruned", "above", "lost"):
            out[k] += r[k]
        out["epochs"] += r["epochs"] / orders
        out["best"] = min(out["best"], r["best"])
        out["oracle"] = r["oracle"]
    return out


def table(rows: list[tuple[str, dict[str, Any]]], n: int) -> str:
    """A Markdown table of :func:`replay` results, one row per pruner."""
    lines = [
        f"| pruner ({n} trials) | pruned | above best when pruned | lost winners | epochs run "
        "| worst study's best / best of all |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['pruned']} | {r['above']} | {r['lost']} | {r['epochs']:.0%} "
            f"| {r['best']:.4f} / {r['oracle']:.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--data", default="demo,sample", help="comma-separated: demo, sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--orders", type=int, default=10, help="trial orders replayed (the recorded one + shuffles)"
    )
    parser.add_argument("--cache", default="outputs/benchmarks/pruning_curves.json")
    parser.add_argument("--refresh", action="store_true", help="record the curves again")
    args = parser.parse_args(argv)

    cache = Path(args.cache)
    stored: dict[str, Any] = json.loads(cache.read_text()) if cache.exists() else {}
    configs = draw_configs(args.trials, args.seed)
    key = f"trials={args.trials},epochs={args.epochs},seed={args.seed}"
    names = [d for d in args.data.split(",") if d]
    for name in names:
        entry = f"{name}:{key}"
        if args.refresh or entry not in stored:
            stored[entry] = record(name, configs, args.epochs, cache.parent)
            from urbansound.utils.files import write_json

            write_json(cache, stored)
    combined: dict[str, dict[str, Any]] = {}
    for name in names:
        curves = [t["curve"] for t in stored[f"{name}:{key}"]]
        rows = [(p, replay_orders(curves, make, args.orders)) for p, make in PRUNERS]
        print(f"\n{name}: {len(curves)} trials x {args.epochs} epochs, {args.orders} orders\n")
        print(table(rows, len(curves) * args.orders))
        for p, r in rows:
            c = combined.setdefault(p, {"pruned": 0, "above": 0, "lost": 0, "epochs": 0.0})
            c["pruned"] += r["pruned"]
            c["above"] += r["above"]
            c["lost"] += r["lost"]
            c["epochs"] += r["epochs"] / len(names)
    print(f"\nall data sets ({', '.join(names)}):\n")
    print("| pruner | pruned | above best when pruned | lost winners | epochs run |")
    print("|---|---|---|---|---|")
    for p, c in combined.items():
        print(f"| {p} | {c['pruned']} | {c['above']} | {c['lost']} | {c['epochs']:.0%} |")


if __name__ == "__main__":
    main()
