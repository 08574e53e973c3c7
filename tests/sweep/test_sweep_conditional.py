"""Conditional search spaces on the quadratic app: keys asked only where the chosen group has them.

The app's ``branch`` group has options with different keys (``lin``: ``a``; ``sq``: ``b``,
``c``; ``const``: none), like the model families (``model.dropout`` only for the MLP). Every
assertion reopens the study with ``optuna.load_study``.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from urbansound.errors import ConfigError
from urbansound.sweep.conditional import resolve_branches
from urbansound.sweep.settings import GRID_SAMPLER, build_sampler
from urbansound.sweep.space import Branch, build_search_space

from . import test_sweep as _base
from .apps.quadratic import app
from .test_sweep import load

run_sweep = _base.run_sweep  # the sweep tests' fixture (logging: tests/sweep/conftest.py)

KEYS = {"lin": {"branch.a"}, "sq": {"branch.b", "branch.c"}, "const": set()}
SPACE = [
    "branch=choice(lin,sq,const)",
    "branch.a=interval(-1.0,1.0)",
    "branch.b=int(interval(0,3))",
    "branch.c=interval(-1.0,1.0)",
    "x=interval(0.0,3.0)",
]
TPE = ["hydra/sweeper/sampler=tpe", "hydra.sweeper.sampler.n_startup_trials=4"]


def _check_trials(study: optuna.Study, jobs: Path | None = None) -> list[str]:
    """Every trial's params are exactly its branch's keys (plus x); returns the branches seen."""
    seen = []
    for t in study.trials:
        assert t.state == TrialState.COMPLETE, t.user_attrs.get("error")
        kind = t.params["branch"]
        assert set(t.params) == {"branch", "x"} | KEYS[kind], (t.number, t.params)
        assert set(t.distributions) == set(t.params)
        keys = {o.split("=")[0] for o in t.user_attrs["overrides"]}
        assert keys == set(t.params)
        job_cfg = {"kind": kind, **{k.split(".")[1]: v for k, v in t.params.items() if "." in k}}
        assert t.value == pytest.approx(app.score(t.params["x"], 0.0, job_cfg))
        if jobs is not None:
            results = json.loads((jobs / str(t.number) / "results.json").read_text())
            assert results["score"] == pytest.approx(t.value)
        seen.append(kind)
    return seen


@pytest.mark.slow
def test_tpe_asks_each_trial_for_its_branchs_keys_only_and_resumes(run_sweep, tmp_path):
    jobs = run_sweep(
        *SPACE,
        *TPE,
        "hydra.sweeper.sampler.group=true",
        "hydra.sweeper.sampler.multivariate=true",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.study_name=cond",
    )
    study = load(tmp_path, "cond")
    assert len(study.trials) == 8
    assert set(_check_trials(study, jobs)) == {"lin", "sq", "const"}
    assert study.user_attrs["branches"] == [
        {"choices": {"branch": "lin"}, "keys": ["branch.a", "x"]},
        {"choices": {"branch": "sq"}, "keys": ["branch.b", "branch.c", "x"]},
        {"choices": {"branch": "const"}, "keys": ["x"]},
    ]
    best = yaml.safe_load((jobs / "best_params.yaml").read_text())
    assert set(best["params"]) == {"branch", "x"} | KEYS[best["params"]["branch"]]
    # the same command with a larger budget continues the study, branches and all
    run_sweep(
        *SPACE,
        *TPE,
        "hydra.sweeper.sampler.group=true",
        "hydra.sweeper.sampler.multivariate=true",
        "hydra.sweeper.n_trials=12",
        "hydra.sweeper.study_name=cond",
    )
    study = load(tmp_path, "cond")
    assert len(study.trials) == 12
    _check_trials(study)


def test_grid_over_branches_is_the_union_of_their_grids_and_resumes(run_sweep, tmp_path):
    grid = ["branch=lin,sq,const", "branch.a=0.0,0.5", "branch.b=0,1,2", "x=2.0"]
    run_sweep(*grid, "hydra.sweeper.n_trials=3", "hydra.sweeper.study_name=g")
    assert len(load(tmp_path, "g").trials) == 3
    jobs = run_sweep(*grid, "hydra.sweeper.study_name=g")  # n_trials: the union's 6 points
    study = load(tmp_path, "g")
    points = sorted(json.dumps(t.params, sort_keys=True) for t in study.trials)
    expected = [{"branch": "lin", "branch.a": a} for a in (0.0, 0.5)]
    expected += [{"branch": "sq", "branch.b": b} for b in (0, 1, 2)]
    expected += [{"branch": "const"}]
    assert points == sorted(json.dumps(p, sort_keys=True) for p in expected)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    for t in study.trials:  # the fixed x=2.0 reached every job, the unswept c stayed 0
        cfg = {"kind": t.params["branch"], "c": 0.0}
        cfg.update({k.split(".")[1]: v for k, v in t.params.items() if "." in k})
        assert t.value == pytest.approx(app.score(2.0, 0.0, cfg))
        assert (jobs / str(t.number) / "results.json").exists() or t.number < 3
    run_sweep(*grid, "hydra.sweeper.study_name=g")  # nothing left: no new trial
    assert len(load(tmp_path, "g").trials) == 6


def test_a_key_in_no_branch_is_a_one_line_error(run_sweep, tmp_path):
    with pytest.raises(ConfigError, match=r"key branch\.nope exists in no configuration the sweep"):
        run_sweep("branch=lin,sq", "branch.nope=1,2")
    assert optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'optuna.db'}") == []


def test_a_group_typo_fails_its_trials_only_and_other_branches_run(run_sweep, tmp_path):
    run_sweep("branch=lin,typo", "branch.a=0.0,1.0", "hydra.sweeper.study_name=t")
    study = load(tmp_path, "t")
    by_state = {}
    for t in study.trials:
        by_state.setdefault(t.state, []).append(t.params)
    assert sorted(p["branch.a"] for p in by_state[TrialState.COMPLETE]) == [0.0, 1.0]
    # the typo's branch does not compose, so its keys are unknown: every key is asked and
    # each of its trials fails with Hydra's message
    bad = [t for t in study.trials if t.state == TrialState.FAIL]
    assert sorted(t.params["branch.a"] for t in bad) == [0.0, 1.0]
    assert all(t.params["branch"] == "typo" for t in bad)
    assert all("Could not find 'branch/typo'" in t.user_attrs["error"] for t in bad)


def _fake_compose(options: dict[str, dict]):
    """compose() over a made-up group tree: ``model`` options with their keys."""

    def compose(overrides: list[str]) -> dict:
        choice = "mlp"
        for o in overrides:
            if o.startswith("model="):
                choice = o.split("=", 1)[1]
        if choice not in options:
            raise ValueError(f"Could not find 'model/{choice}'")
        choices = {"model": choice, **options[choice].get("groups", {})}
        return {"hydra": {"runtime": {"choices": choices}}, "model": options[choice]["keys"]}

    return compose


def test_branches_found_by_composing_each_group_choice() -> None:
    options = {
        "mlp": {"keys": {"dropout": 0.5, "hidden": "???"}},
        "svm": {"keys": {"C": 1.0}},
        "random_forest": {"keys": {"n_estimators": 500}},
    }
    space = build_search_space(
        {
            "model": "choice(mlp,svm,random_forest)",
            "model.dropout": "0.1,0.5",
            "model.hidden": "choice([256],[512,256])",
            "model.C": "tag(log,interval(0.1,100.0))",
            "model.n_estimators": "100,300",
        }
    )
    resolved = resolve_branches(space, _fake_compose(options))
    assert resolved.branches == (
        Branch((("model", "mlp"),), ("model.dropout", "model.hidden")),
        Branch((("model", "svm"),), ("model.C",)),
        Branch((("model", "random_forest"),), ("model.n_estimators",)),
    )
    assert resolved.overrides({"model": "svm", "model.C": 2.0}) == ["model=svm", "model.C=2.0"]


def test_a_plain_space_stays_a_product_space() -> None:
    options = {"mlp": {"keys": {"dropout": 0.5}}, "svm": {"keys": {"dropout": 0.1}}}
    space = build_search_space({"model": "mlp,svm", "model.dropout": "0.1,0.5"})
    assert resolve_branches(space, _fake_compose(options)) is space


def test_branch_grid_and_its_sampler_give_each_point_once(tmp_path) -> None:
    options = {"mlp": {"keys": {"dropout": 0.5}}, "svm": {"keys": {"C": 1.0}}}
    space = resolve_branches(
        build_search_space(
            {"model": "mlp,svm", "model.dropout": "0.1,0.5", "model.C": "1.0,10.0,100.0"}
        ),
        _fake_compose(options),
    )
    grid = space.branch_grid()
    assert len(grid) == space.grid_size() == 5
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'o.db'}",
        sampler=build_sampler({"_target_": GRID_SAMPLER, "seed": 0}, space),
        direction="maximize",
    )
    seen = []
    for _ in range(5):
        trial = study.ask()
        seen.append(space.suggest(trial))
        study.tell(trial, 0.0)
    assert sorted(map(json.dumps, seen)) == sorted(map(json.dumps, grid))
    # (workers asking at once: tests/sweep/test_sweep_grid.py)


@pytest.mark.slow
def test_grid_over_branches_through_a_launcher_batch_runs_each_point_once(tmp_path):
    """hydra/launcher=joblib asks a batch of trials before telling any (lifecycle.run_trials)."""
    import subprocess
    import sys

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    cmd = [
        sys.executable,
        str(Path(app.__file__)),
        "-m",
        f"hydra.sweep.dir={tmp_path / 'jobs'}",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=b",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "branch=lin,sq,const",
        "branch.a=0.0,0.5",
        "branch.b=0,1,2",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="b", storage=storage)
    assert sorted(json.dumps(t.params, sort_keys=True) for t in study.trials) == sorted(
        json.dumps(p, sort_keys=True)
        for p in [
            {"branch": "lin", "branch.a": 0.0},
            {"branch": "lin", "branch.a": 0.5},
            {"branch": "sq", "branch.b": 0},
            {"branch": "sq", "branch.b": 1},
            {"branch": "sq", "branch.b": 2},
            {"branch": "const"},
        ]
    )
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_values_valid_only_together_do_not_stop_the_sweep() -> None:
    """The up-front check tries each value with the other keys' values too: n_mfcc=60,70 with
    features.n_mels=40,128 is a sweep with valid trials (n_mels=128), not an invalid key."""
    from urbansound.sweep.conditional import validate_space
    from urbansound.sweep.space import build_search_space

    def compose(overrides: list[str]) -> dict:
        return {o.split("=")[0]: int(o.split("=")[1]) for o in overrides}

    def check(cfg: dict) -> None:
        if cfg["n_mfcc"] > cfg["features.n_mels"]:
            raise ConfigError(f"n_mfcc ({cfg['n_mfcc']}) must be <= features.n_mels")

    validate_space(
        build_search_space({}, ["n_mfcc=60,70", "features.n_mels=40,128"]), compose, check
    )
    with pytest.raises(ConfigError, match=r"every value of sweep key n_mfcc is invalid, e\.g\. "):
        validate_space(
            build_search_space({}, ["n_mfcc=60,70", "features.n_mels=40,50"]), compose, check
        )
    with pytest.raises(ConfigError, match=r"^n_mfcc \(60\) must be <= features.n_mels$"):
        validate_space(
            build_search_space({}, ["n_mfcc=60", "features.n_mels=40,50"]), compose, check
        )
