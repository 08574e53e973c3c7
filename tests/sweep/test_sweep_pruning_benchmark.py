"""benchmarks/pruning.py's replay: its counts on curves whose outcome is known by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import optuna
import pytest

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "pruning.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("pruning_benchmark", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_replay_counts_pruned_winners_and_trials_above_the_best(bench):
    curves = [
        [0.5, 0.5, 0.5],  # complete: best 0.5
        [0.6, 0.6, 0.6],  # complete: best 0.6
        [0.1, 0.2, 0.9],  # pruned at epoch 1 (below the median 0.55): its 0.9 is a lost winner
        [0.3, 0.7, 0.2],  # pruned at epoch 1 too; it would have ended below 0.6: no loss
    ]

    def make():
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)

    r = bench.replay(curves, make)
    assert (r["pruned"], r["above"], r["lost"]) == (2, 0, 1)
    assert r["epochs"] == pytest.approx((3 + 3 + 1 + 1) / 12)
    assert (r["best"], r["oracle"]) == (0.6, 0.9)
    # the last epoch is never pruned (the trial has finished), and no pruner prunes nothing
    assert bench.replay(curves, optuna.pruners.NopPruner)["pruned"] == 0


def test_a_trial_pruned_above_the_best_is_counted(bench):
    def make():  # prunes any value below 0.55 before the last epoch
        return optuna.pruners.ThresholdPruner(lower=0.55)

    # trial 0 ends at 0.5; trial 1 is pruned at 0.53 (above 0.5) and would have ended at 0.1;
    # trial 2 is pruned at 0.52 and would have ended at 0.8 (a lost winner, above too)
    r = bench.replay([[0.6, 0.5], [0.53, 0.1], [0.52, 0.8]], make)
    assert (r["pruned"], r["above"], r["lost"]) == (2, 2, 1)
    assert r["best"] == 0.5
