"""Several objectives and constraints: the study Optuna stores, the summary, fit's rule.

The quadratic app records ``score`` and ``costs.cost = |x| + |y|`` in its results.json; a study
maximizes the first and minimizes the second, bounded by a constraint.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.helpers import process_alive
from urbansound.errors import ConfigError
from urbansound.sweep import records, rules, runner
from urbansound.sweep.objectives import (
    constraint_values,
    parse_constraint,
    parse_constraints,
    parse_objectives,
)
from urbansound.sweep.study import study_sweep_dirs

from .apps.quadratic import app
from .test_sweep import load, run_sweep  # noqa: F401 (the fixture)

GRID = [(x, y) for x in (0, 1, 2, 3) for y in (0, 1)]
TWO = [
    "hydra.sweeper.objectives=[score,costs.cost]",
    "hydra.sweeper.direction=[maximize,minimize]",
    "epochs=1",
]


def front(points: list[tuple[int, int]], bound: float | None) -> set[tuple[int, int]]:
    """The Pareto front of (score up, cost down) among the points whose cost meets ``bound``."""
    ok = [p for p in points if bound is None or app.cost(*p) <= bound]

    def dominated(p: tuple[int, int]) -> bool:
        sp, cp = app.score(*p), app.cost(*p)
        return any(
            app.score(*q) >= sp and app.cost(*q) <= cp and (app.score(*q), app.cost(*q)) != (sp, cp)
            for q in ok
        )

    return {p for p in ok if not dominated(p)}


def point(t: optuna.trial.FrozenTrial) -> tuple[int, int]:
    return int(t.params["x"]), int(t.params["y"])


def test_two_objectives_with_a_constraint_store_directions_front_and_feasibility(
    run_sweep,  # noqa: F811
    tmp_path: Path,
    capsys,
) -> None:
    jobs = run_sweep("x=0,1,2,3", "y=0,1", *TWO, "hydra.sweeper.constraints=['costs.cost<=3']")
    study = load(tmp_path)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["score", "costs.cost"]
    assert sorted(point(t) for t in study.trials) == GRID
    for t in study.trials:
        assert t.state == TrialState.COMPLETE
        x, y = point(t)
        assert t.values == pytest.approx([app.score(x, y), app.cost(x, y)])
        assert t.user_attrs["recorded"] == pytest.approx(
            {"score": t.values[0], "costs.cost": t.values[1]}
        )
        assert t.constraints == pytest.approx(
            {"costs.cost<=3": app.cost(x, y) - 3.0}
        )  # Optuna's own record
    expected = front(GRID, 3.0)
    assert {point(t) for t in study.best_trials} == expected  # Optuna leaves (3, 1) out
    assert (3, 1) not in expected and app.score(3, 1) > min(app.score(*p) for p in expected)

    best = yaml.safe_load((jobs / "best_params.yaml").read_text())
    assert best["metrics"] == ["score", "costs.cost"]
    assert best["constraints"] == ["costs.cost<=3"]
    assert {(p["params"]["x"], p["params"]["y"]) for p in best["pareto"]} == expected
    with (jobs / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {(int(r["params.x"]), int(r["params.y"])) for r in rows if r["pareto"] == "True"} == (
        expected
    )
    assert [r["feasible"] for r in rows if (r["params.x"], r["params.y"]) == ("3", "1")] == [
        "False"
    ]
    out = capsys.readouterr().out
    assert f"Pareto front (score, costs.cost): {len(expected)} trials" in out

    # fit's rule: a study with several objectives needs one; it lists the Pareto trials
    plain = records.load_study(f"sqlite:///{tmp_path / 'optuna.db'}", study.study_name)
    assert sorted(plain.pareto) == sorted(t.number for t in study.best_trials)
    with pytest.raises(
        ConfigError, match=r"2 objectives \(score, costs.cost\).*Pareto trials: trial"
    ):
        rules.chosen_by_rule(plain, objective=None, constraints=(), where="study")
    bound = parse_constraints(["costs.cost<=1"], key="fit.constraints")
    (first, *_) = rules.chosen_by_rule(plain, objective="score", constraints=bound, where="s")
    cheap = [p for p in GRID if app.cost(*p) <= 1]
    assert point_of(first) == max(cheap, key=lambda p: app.score(*p))
    chosen = rules.chosen_by_rule(plain, objective="score", constraints=(), where="s")
    assert all(t.feasible for t in chosen) and (3, 1) not in {point_of(t) for t in chosen}


def point_of(t: records.StudyTrial) -> tuple[int, int]:
    return int(t.params["x"]), int(t.params["y"])


def test_a_single_objective_with_a_constraint_never_reports_an_infeasible_best(
    run_sweep,  # noqa: F811
    tmp_path: Path,
) -> None:
    jobs = run_sweep("x=1,2,3", "y=1", "epochs=1", "hydra.sweeper.constraints=['costs.cost<=2.5']")
    study = load(tmp_path)
    # x=2 is the quadratic's best but |2| + |1| = 3 breaks the bound: x=1 is the best
    assert study.best_trial.params["x"] == 1
    best = yaml.safe_load((jobs / "best_params.yaml").read_text())
    assert best["best_trial"] == study.best_trial.number
    assert best["params"] == {"x": 1}  # y=1 is fixed, not swept


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("inference_ms_per_clip < 5", "uses <"),
        ("inference_ms_per_clip<=fast", "no finite number"),
        ("<=5", "is no constraint"),
        ("9lives<=5", "is no value name"),
        ("model_bytes<=inf", "no finite number"),
    ],
)
def test_a_bad_constraint_is_one_line_naming_it(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        parse_constraint(text, key="hydra.sweeper.constraints")
    assert "\n" not in str(err.value) and "hydra.sweeper.constraints" in str(err.value)


def test_constraints_parse_and_give_optunas_violations() -> None:
    (le, ge) = parse_constraints(["inference_ms_per_clip <= 5", "mean_cv_accuracy>=0.5"], key="k")
    assert (le.text, ge.text) == ("inference_ms_per_clip<=5", "mean_cv_accuracy>=0.5")
    names = ["mean_cv_accuracy"]
    recorded = {"recorded": {"inference_ms_per_clip": 7.0}}
    found = constraint_values((le, ge), metric_names=names, values=[0.6], user_attrs=recorded)
    assert found == pytest.approx({"inference_ms_per_clip<=5": 2.0, "mean_cv_accuracy>=0.5": -0.1})
    missing = constraint_values((le,), metric_names=names, values=[0.6], user_attrs={})
    assert missing == {"inference_ms_per_clip<=5": float("inf")}  # no value: cannot hold
    with pytest.raises(ConfigError, match="bounds a value twice"):
        parse_constraints(["a<=1", "a<=2"], key="k")


def test_objectives_and_directions_are_checked() -> None:
    two = parse_objectives(["mean_cv_accuracy", "model_bytes"], ["maximize", "minimize"], "x")
    assert [(o.name, o.direction, o.path) for o in two] == [
        ("mean_cv_accuracy", "maximize", "mean_accuracy"),
        ("model_bytes", "minimize", "costs.model_bytes"),
    ]
    with pytest.raises(ConfigError, match="a list of 2"):
        parse_objectives(["mean_cv_accuracy", "model_bytes"], "maximize", "x")
    with pytest.raises(ConfigError, match="twice"):
        parse_objectives(["a", "a"], ["maximize", "minimize"], "x")


def test_plots_keep_optunas_trial_numbers_and_the_metrics_name() -> None:
    """A FAIL trial before the best one does not renumber it (the dashboard draws trial 2 at
    x=2), and the axis says the metric's name, not "Objective Value"."""
    trials = [
        records.StudyTrial(number=0, state="COMPLETE", value=0.5, params={"x": 1}),
        records.StudyTrial(number=1, state="FAIL", value=None, params={}),
        records.StudyTrial(number=2, state="COMPLETE", value=0.9, params={"x": 2}),
    ]
    study = records.StudyRecords(
        name="s", direction="maximize", trials=trials, metric_names=["mean_cv_accuracy"]
    )
    fig = records.optimization_history_figure(study)
    markers = [trace for trace in fig.data if trace.mode == "markers"]
    points = {int(x): y for trace in markers for x, y in zip(trace.x, trace.y, strict=True)}
    assert points == {0: 0.5, 2: 0.9}
    assert fig.layout.yaxis.title.text == "mean_cv_accuracy"
    parallel = records.parallel_coordinate_figure(study)
    assert parallel.layout.xaxis.ticktext[0] == "mean_cv_accuracy"


def test_a_resumed_sweep_writes_into_the_directory_its_study_started_in(tmp_path: Path) -> None:
    """Hydra's dated sweep directory would be a new one per run: the resumed study keeps its
    first, where trials.csv (from storage) lists every trial."""
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    dated = str(tmp_path / "sweeps" / "${now:%H-%M-%S-%f}")

    def sweep(n: int) -> None:
        cmd = [
            sys.executable,
            str(Path(app.__file__)),
            "-m",
            f"hydra.sweep.dir={dated}",
            f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.study_name=resumed",
            "hydra/sweeper/sampler=random",
            f"hydra.sweeper.n_trials={n}",
            "x=interval(0,4)",
            "epochs=1",
        ]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]

    sweep(2)
    (first,) = (tmp_path / "sweeps").iterdir()
    sweep(4)
    assert list((tmp_path / "sweeps").iterdir()) == [first]
    assert sorted(p.name for p in first.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    with (first / "trials.csv").open() as f:
        assert [int(r["trial"]) for r in csv.DictReader(f)] == [0, 1, 2, 3]
    assert study_sweep_dirs(storage, "resumed") == [first.resolve()]
    for t in optuna.load_study(study_name="resumed", storage=storage).trials:
        assert Path(t.user_attrs["run_dir"]).parent == first


def test_extending_a_categorical_grid_is_refused_before_any_trial(
    run_sweep,  # noqa: F811
    tmp_path: Path,
) -> None:
    run_sweep("x=0,1", "epochs=1", "hydra.sweeper.study_name=ext")
    with pytest.raises(ConfigError) as err:
        run_sweep("x=0,1,2", "epochs=1", "hydra.sweeper.study_name=ext")
    message = str(err.value)
    assert "\n" not in message
    assert "x is choice(0, 1, 2) but study 'ext' drew it from choice(0, 1)" in message
    study = load(tmp_path, "ext")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2  # nothing left RUNNING


def test_a_sweep_past_its_timeout_starts_no_new_trial_and_writes_its_summary(
    run_sweep,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sweep's clock advances 10 s per reading: started at 0, it starts trials at 10 and 20
    and stops at 30 (> timeout 25), with 2 of its 10 trials done."""
    ticks = iter(range(0, 10_000, 10))
    monkeypatch.setattr(runner, "clock", lambda: float(next(ticks)))
    jobs = run_sweep(
        "hydra/sweeper/sampler=random",
        "x=interval(0,4)",
        "hydra.sweeper.n_trials=10",
        "hydra.sweeper.timeout=25",
        "epochs=1",
    )
    study = load(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    with (jobs / "trials.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 2
    assert (jobs / "best_params.yaml").is_file()


def test_a_warm_start_reproduces_the_earlier_best_and_known_points_run_first_once(
    run_sweep,  # noqa: F811
    tmp_path: Path,
) -> None:
    space = ["hydra/sweeper/sampler=random", "x=interval(0,4)", "epochs=1"]
    run_sweep(*space, "hydra.sweeper.study_name=last_week", "hydra.sweeper.n_trials=4")
    earlier = load(tmp_path, "last_week")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    run_sweep(
        *space,
        "hydra.sweeper.study_name=this_week",
        "hydra.sweeper.n_trials=1",
        f"hydra.sweeper.warm_start={url}",
        "hydra.sweeper.warm_start_study=last_week",
        "hydra.sweeper.enqueue=[{x:2.5}]",
    )
    study = load(tmp_path, "this_week")
    seeded = [t for t in study.trials if "urbansound:warm_start" in t.system_attrs]
    assert len(seeded) == 4
    assert sorted(t.params["x"] for t in seeded) == sorted(t.params["x"] for t in earlier.trials)
    # the seeded trials alone: the earlier study's best is the new study's first best
    assert max(t.value for t in seeded) == pytest.approx(earlier.best_value)
    (own,) = [t for t in study.trials if t not in seeded]
    assert own.params == {"x": 2.5}  # the known configuration ran first (n_trials counts own)
    assert study.user_attrs["warm_start"]["taken"] == 4
    # a resume neither seeds nor enqueues again
    run_sweep(
        *space,
        "hydra.sweeper.study_name=this_week",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweeper.warm_start={url}",
        "hydra.sweeper.warm_start_study=last_week",
        "hydra.sweeper.enqueue=[{x:2.5}]",
    )
    again = load(tmp_path, "this_week")
    assert len(again.trials) == 6
    assert [t.params["x"] for t in again.trials].count(2.5) == 1


def test_a_trial_past_its_time_limit_fails_with_the_reason_and_its_processes_end(
    run_sweep,  # noqa: F811
    tmp_path: Path,
) -> None:
    """x=3 sleeps 120 s and starts a child process: stopped after 2 s, FAIL (not queued
    again), its child ended; the sweep goes on with the other trials."""
    markers = tmp_path / "markers"
    run_sweep(
        "x=0,3,1",
        "epochs=1",
        "slow_x=[3]",
        "slow_sleep=120",
        "child_sleep=600",
        f"marker_dir={markers}",
        "hydra.sweeper.trial_timeout=2",
    )
    study = load(tmp_path)
    states = {t.params["x"]: t for t in study.trials}
    assert sorted(states) == [0, 1, 3] and len(study.trials) == 3
    assert states[0].state == states[1].state == TrialState.COMPLETE
    stopped = states[3]
    assert stopped.state == TrialState.FAIL
    assert stopped.user_attrs["error"].startswith(
        "TrialTimeout: the trial ran past hydra.sweeper.trial_timeout=2 s"
    )
    assert stopped.system_attrs["urbansound:timed_out"] == 2
    child = int((markers / f"{stopped.number}.child").read_text())
    assert not process_alive(child)
