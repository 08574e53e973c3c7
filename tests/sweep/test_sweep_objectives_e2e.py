"""End to end on the demo corpus: accuracy against inference milliseconds per clip, a Pareto
front in the summary, the study (reopened with ``optuna.load_study``), the report and ``fit``'s
rule."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.helpers import DEMO_CLIPS_PER_CLASS, cli_env

pytestmark = pytest.mark.slow

COSTS = {
    "model_bytes",
    "model_ms_per_clip",
    "feature_ms_per_clip",
    "inference_ms_per_clip",
    "train_seconds",
}


def test_two_objective_families_sweep_ends_with_a_pareto_front(run_cli, tmp_path, demo_dir):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(
        "-m",
        "model=logreg,knn",
        "hydra.sweeper.objectives=[mean_cv_accuracy,inference_ms_per_clip]",
        "hydra.sweeper.direction=[maximize,minimize]",
        "hydra.sweeper.constraints=['model_bytes<=100000000']",
        "tracking.mode=disabled",
        "features.n_jobs=1",
        f"features.cache_dir={tmp_path / 'cache'}",
        f"data.demo_dir={demo_dir}",
        f"data.demo_clips_per_class={DEMO_CLIPS_PER_CLASS}",
        f"hydra.sweep.dir={sweep_dir}",
    )
    storage = f"sqlite:///{tmp_path / 'outputs' / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["mean_cv_accuracy", "inference_ms_per_clip"]
    assert len(study.trials) == 2
    for t in study.trials:
        assert t.state == TrialState.COMPLETE
        results = json.loads((sweep_dir / str(t.number) / "results.json").read_text())
        assert set(results["costs"]) == COSTS
        costs = results["costs"]
        assert costs["inference_ms_per_clip"] == pytest.approx(
            costs["feature_ms_per_clip"] + costs["model_ms_per_clip"]
        )
        assert costs["model_bytes"] > 0 and costs["train_seconds"] > 0
        assert t.values == pytest.approx([results["mean_accuracy"], costs["inference_ms_per_clip"]])
        assert t.user_attrs["costs"] == pytest.approx(costs)
        assert t.constraints == pytest.approx({"model_bytes<=1e+08": costs["model_bytes"] - 1e8})
    front = sorted(t.number for t in study.best_trials)
    best = yaml.safe_load((sweep_dir / "best_params.yaml").read_text())
    assert sorted(p["trial"] for p in best["pareto"]) == front
    assert "Pareto front (mean_cv_accuracy, inference_ms_per_clip)" in proc.stdout

    # the report shows the front (table and Optuna's plot) under the metrics' names
    out = tmp_path / "report"
    subprocess.run(
        [sys.executable, "-m", "urbansound.report", str(sweep_dir), "--out", str(out)],
        cwd=tmp_path,
        env=cli_env(),
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    md = (out / "report.md").read_text()
    assert "## Pareto front (mean_cv_accuracy, inference_ms_per_clip)" in md
    section = md.split("## Pareto front", 1)[1].split("\n## ", 1)[0]
    table = section.strip().split("\n\n")[1]  # the front's own table (paired tests follow)
    assert sorted(int(n) for n in re.findall(r"^\| #(\d+)\s", table, re.M)) == front
    if len(front) > 1:  # the most accurate of the front paired with each other trial of it
        assert "| most accurate" in section
    assert (out / "pareto_front.png").is_file()

    # fit without a rule on a multi-objective study: exit 2 naming the Pareto trials
    fit = subprocess.run(
        [sys.executable, "-m", "urbansound.fit", f"fit.from={sweep_dir}"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert fit.returncode == 2, fit.stderr[-2000:]
    (line,) = [x for x in fit.stderr.splitlines() if x.startswith("error:")]
    assert "choose a trial with fit.trial=<n> or a rule with fit.objective=<name>" in line
    for n in front:
        assert f"trial {n} (mean_cv_accuracy " in line
