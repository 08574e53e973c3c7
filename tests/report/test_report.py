"""Sweep reports from a real SQLite Optuna study and run directories written to the results schema.

The fixture writes what a three-trial grid sweep (`-m n_mfcc=20,40,60`) leaves behind: one job
directory per trial with `results.json` and the resolved `config.yaml`, an Optuna study in a
SQLite file whose trials carry their run directory as a user attribute, a failed trial, and a
separate run of the best configuration on the LEAKY random split.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution

from tests.helpers import CONF_DIR, REPO
from urbansound.config.overrides import parse_override
from urbansound.data import layout
from urbansound.errors import ConfigError
from urbansound.report import analysis, cli, evaluations, figures, render, stats
from urbansound.report.build import build_report
from urbansound.report.load import find_run_dirs, load_evaluations, load_sweep
from urbansound.sweep import records
from urbansound.training.results import CVResult, EpochMetrics, FoldResult, RunResult

CLASS_NAMES = list(layout.CLASS_NAMES)
N_TEST, N_TRAIN = 50, 450
FOLD_ACC = {  # per-fold accuracies (multiples of 1/50) of each n_mfcc
    20: [0.60, 0.62, 0.58, 0.64, 0.56],
    40: [0.70, 0.66, 0.72, 0.68, 0.64],
    60: [0.66, 0.64, 0.70, 0.62, 0.64],
}
RANDOM_SPLIT_ACC = 0.92
STUDY = "mfcc_grid"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _squash(text: str) -> str:
    """Markdown tables with their cell padding collapsed (``|   3 |`` -> ``| 3 |``)."""
    return re.sub(r" {2,}", " ", text)


def _confusion(acc: float, n_test: int = N_TEST) -> list[list[int]]:
    """A 10x10 confusion matrix with n_test clips (n_test/10 per class) and accuracy acc."""
    per = n_test // 10
    correct = round(acc * n_test)
    cm = np.zeros((10, 10), int)
    for i in range(10):
        c = min(per, correct // 10 + (1 if i < correct % 10 else 0))
        cm[i, i] = c
        cm[i, (i + 1) % 10] = per - c
    assert np.trace(cm) == correct
    return cm.tolist()


def _history(final: float, folds: list[int | str], epochs: int = 3) -> list[EpochMetrics]:
    """Per-epoch metrics rising linearly to ``final`` mean test accuracy."""
    n = len(folds)
    return [
        EpochMetrics(
            epoch=e,
            folds=list(folds),
            train_loss=np.full(n, 2.0 / e),
            test_loss=np.full(n, 2.2 / e),
            test_accuracy=np.full(n, final * e / epochs),
        )
        for e in range(1, epochs + 1)
    ]


def _compose(overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def results_json(
    cv: CVResult,
    *,
    class_names: list[str],
    overrides: list[str],
    trial: dict | None = None,
    protocol: str = "folds",
    leaky: bool = False,
) -> dict:
    """A complete run's results.json as `urbansound.run` writes it (``RunResult.to_dict()``)."""
    n_clips = sum(f.n_test for f in cv.folds)
    return RunResult(
        status="complete",
        dataset="demo",
        data_root="/demo",
        protocol=protocol,
        leaky=leaky,
        n_listed=n_clips,
        n_clips=n_clips,
        n_missing=0,
        empty_folds=[],
        skipped=[],
        class_names=class_names,
        n_features=40,
        overrides=overrides,
        trial=trial or {"study_name": None, "number": None},
        cv=cv,
        mean_accuracy=cv.mean_accuracy,
        std_accuracy=cv.std_accuracy,
        durations={"index": 0.1, "features": 1.0, "train": 5.0, "total": 6.1},
    ).to_dict()


def write_run(
    run_dir: Path,
    accs: list[float],
    *,
    overrides: list[str],
    folds: list[int | str] | None = None,
    leaky: bool = False,
    protocol: str = "folds",
    trial: dict | None = None,
) -> dict:
    """A run directory as `urbansound.run` writes it: ``RunResult.to_dict()`` as results.json,
    the resolved config.yaml. Returns the results.json payload."""
    run_dir.mkdir(parents=True, exist_ok=True)
    folds = folds or list(range(1, len(accs) + 1))
    cv = CVResult(
        folds=[
            FoldResult(
                fold=k,
                accuracy=a,
                loss=1.0 - a,
                n_train=N_TRAIN,
                n_test=N_TEST,
                per_class_accuracy=[None] * 10,
                confusion=_confusion(a),
            )
            for k, a in zip(folds, accs, strict=True)
        ],
        history=_history(float(np.mean(accs)), folds),
        mean_accuracy=float(np.mean(accs)),
        std_accuracy=float(np.std(accs)),
    )
    results = results_json(
        cv,
        class_names=CLASS_NAMES,
        overrides=overrides,
        trial=trial,
        protocol=protocol,
        leaky=leaky,
    )
    (run_dir / "results.json").write_text(json.dumps(results))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(_compose(overrides)))
    return results


def link(study, run_dir: Path) -> dict:
    """The job's side of the trial ``study`` adds next: its ``results.json`` records that trial
    (the study's name, the next number), as ``urbansound.run`` does in a sweep; returns the
    trial's ``run_dir`` attribute."""
    path = run_dir / "results.json"
    results = json.loads(path.read_text())
    results["trial"] = {
        "study_name": study.study_name,
        "number": len(study.get_trials(deepcopy=False)),
    }
    path.write_text(json.dumps(results))
    return {"run_dir": str(run_dir)}


def add_trial(study, run_dir: Path | None, value: float | None, params: dict, *, state="COMPLETE"):
    dists = {
        k: CategoricalDistribution(sorted({20, 40, 60, v}, key=str)) for k, v in params.items()
    }
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState[state],
            value=value,
            params=params,
            distributions=dists,
            user_attrs=link(study, run_dir) if run_dir else {"error": "CUDA out of memory"},
        )
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> dict:
    """A finished grid sweep: storage, study, sweep dir and a separate random-split run."""
    root = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{root / 'optuna.db'}"
    study = optuna.create_study(study_name=STUDY, storage=url, direction="maximize")
    sweep_dir = root / "multirun" / "2026-01-01" / "12-00-00"
    for number, n in enumerate((20, 40, 60)):
        trial_ov = [f"trial.study_name={STUDY}", f"trial.storage={url}", f"trial.number={number}"]
        run_dir = sweep_dir / str(number)
        res = write_run(
            run_dir,
            FOLD_ACC[n],
            overrides=[f"n_mfcc={n}", *trial_ov],
            trial={"study_name": STUDY, "number": number},
        )
        add_trial(study, run_dir, res["mean_accuracy"], {"n_mfcc": n})
    add_trial(study, None, None, {"n_mfcc": 20}, state="FAIL")
    random_dir = root / "runs" / "random_split"
    write_run(
        random_dir,
        [RANDOM_SPLIT_ACC],
        overrides=["n_mfcc=40", "cv=random_split"],
        folds=["random"],
        leaky=True,
        protocol="random_split (LEAKY: slices of one recording in train and test)",
    )
    return {"root": root, "url": url, "study": study, "sweep_dir": sweep_dir, "random": random_dir}


@pytest.fixture(scope="module")
def storage_report(sweep, tmp_path_factory) -> tuple[Path, str]:
    """`python -m urbansound.report --storage URL --study NAME --out DIR`: (DIR, its stdout)."""
    out = tmp_path_factory.mktemp("storage_report")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "urbansound.report",
            "--storage",
            sweep["url"],
            "--study",
            STUDY,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=sweep["root"],
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


def test_report_from_storage(sweep, storage_report):
    out, printed = storage_report
    best_value = sweep["study"].best_value
    assert best_value == pytest.approx(np.mean(FOLD_ACC[40]))
    summary = json.loads((out / "summary.json").read_text())
    # summary.json's fields are a contract (benchmarks/readme_results.py and users read them)
    assert list(summary) == [
        "study",
        "source",
        "direction",
        "generated",
        "datasets",
        "fixed_overrides",
        "n_trials",
        "states",
        "best",
        "trials",
        "importances",
        "paired_comparisons",
        "protocol_comparison",
        "outer_estimate",
        "pruned_above_best",
        "families",
        "family_comparisons",
        "ensemble",
    ]
    assert list(summary) == list(analysis.SUMMARY_KEYS)
    # one family (the MLP), no pruning, no ensemble asked for
    assert summary["pruned_above_best"] == {"pruned": 0, "above_best": 0, "trials": []}
    assert [f["family"] for f in summary["families"]] == ["mlp"]
    assert summary["families"][0]["value"] == pytest.approx(np.mean(FOLD_ACC[40]))
    assert summary["family_comparisons"] == [] and summary["ensemble"] is None
    assert list(summary["best"]) == [
        "number",
        "value",
        "std",
        "pooled_accuracy",
        "params",
        "label",
        "protocol",
        "run_dir",
        "folds",
    ]
    assert list(summary["trials"][0]) == [
        "number",
        "state",
        "value",
        "std",
        "params",
        "leaky",
        "duration_s",
        "run_dir",
    ]
    assert summary["best"]["number"] == 1
    assert summary["best"]["value"] == pytest.approx(best_value)
    assert summary["best"]["params"] == {"n_mfcc": 40}
    assert [f["accuracy"] for f in summary["best"]["folds"]] == FOLD_ACC[40]
    assert summary["best"]["pooled_accuracy"] == pytest.approx(0.68)  # equal folds: the mean
    # trials sorted by value, the failed one last
    assert [t["number"] for t in summary["trials"]] == [1, 2, 0, 3]
    assert summary["trials"][-1]["state"] == "FAIL"
    assert summary["states"] == {"COMPLETE": 3, "FAIL": 1}
    assert summary["importances"] == {"n_mfcc": pytest.approx(1.0)}

    md = (out / "report.md").read_text()
    assert f"mean CV accuracy {best_value:.4f}" in md
    assert "| 3 | 0.7200 | 0.2800 | 450 | 50 |" in _squash(md)  # best trial's fold 3
    for png in (
        "optimization_history",
        "param_importances",
        "confusion_matrix",
        "per_class_accuracy",
        "best_epoch_curves",
        "fold_comparison",
    ):
        assert (out / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"]({png}.png)" in md
    assert not (out / "protocol_comparison.png").exists()  # no random-split run in the study
    assert "--random-split" in md

    page = (out / "report.html").read_text()
    assert f'id="best-value">{best_value:.4f}<' in page
    # self-contained: plotly.js inlined, nothing fetched from the network
    assert not re.search(r"<script[^>]+src=", page)
    assert "<link" not in page
    assert "Plotly.newPlot" in page and len(page) > 3_000_000
    for div in (
        "plot-history",
        "plot-importances",
        "plot-parallel",
        "plot-epochs",
        "plot-confusion",
    ):
        assert f'id="{div}"' in page

    assert "best (predefined folds): trial #1 = 0.6800" in printed
    assert re.search(r"^ *3 +FAIL +– +– +– +n_mfcc=20$", printed, re.M), printed


def test_report_from_sweep_dirs_with_a_random_split_run(sweep, tmp_path, capsys):
    out = tmp_path / "rep"
    rc = cli.main([str(sweep["sweep_dir"]), str(sweep["random"]), "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    # the storage named in the jobs' config.yaml was opened: the failed trial (no run dir) is there
    assert summary["study"] == STUDY
    assert summary["states"] == {"COMPLETE": 3, "FAIL": 1}
    assert summary["best"]["run_dir"] == str(sweep["sweep_dir"] / "1")
    # the separate random-split run is not a trial of the study, and never the best ...
    assert summary["best"]["number"] == 1 and summary["n_trials"] == 4
    # ... but it is compared with the same configuration on the predefined folds
    (row,) = summary["protocol_comparison"]
    assert row["label"] == "n_mfcc=40"
    assert row["folds"]["trial"] == 1
    assert row["folds"]["accuracy"] == pytest.approx(0.68)
    assert row["random_split"]["accuracy"] == pytest.approx(RANDOM_SPLIT_ACC)
    assert row["ratio"] == pytest.approx(RANDOM_SPLIT_ACC / 0.68)
    assert "LEAKY" in row["random_split"]["protocol"]
    md = (out / "report.md").read_text()
    assert "| n_mfcc=40 | demo | 0.6800 ± 0.0283 (5 folds) | 0.9200 (LEAKY) | 1.35× |" in _squash(
        md
    )
    page = (out / "report.html").read_text()
    assert '<td class="leaky">0.9200 (LEAKY)</td>' in page
    assert (out / "protocol_comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_run_dirs_and_default_report_folder(tmp_path):
    for d in ("0", "1", "report/evaluations/outer_fold3_trial1"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "results.json").write_text("{}")
    assert find_run_dirs(tmp_path) == [tmp_path / "0", tmp_path / "1"]
    assert find_run_dirs(tmp_path / "1") == [tmp_path / "1"]
    args = cli.parse_args([str(tmp_path)])
    assert cli.default_out(args, None) == tmp_path / "report"


def test_report_without_storage(sweep, tmp_path):
    """A plain multirun (Hydra's basic sweeper): no study; trials rebuilt from the job dirs."""
    for number, n in enumerate((60, 20, 40)):
        write_run(tmp_path / "mr" / str(number), FOLD_ACC[n], overrides=[f"n_mfcc={n}"])
    sw = load_sweep([tmp_path / "mr"])
    assert sw.storage is None
    assert sorted((r.number, r.params["n_mfcc"]) for r in sw.records) == [(0, 60), (1, 20), (2, 40)]
    assert len(sw.study.trials) == 3
    files = build_report(sw, out_dir=tmp_path / "out")
    assert files.best is not None and files.best.number == 2
    summary = json.loads(files.summary.read_text())
    assert summary["best"]["value"] == pytest.approx(np.mean(FOLD_ACC[40]))
    assert "n_mfcc" in summary["importances"]
    # Optuna's intermediate values come from results.json's per-epoch history
    assert sw.study.trials[2].intermediate_values == {
        1: pytest.approx(0.68 / 3),
        2: pytest.approx(0.68 * 2 / 3),
        3: pytest.approx(0.68),
    }


def test_paired_comparison_of_the_top_configurations(sweep):
    sw = load_sweep(storage=sweep["url"], study_name=STUDY)
    comps = analysis.paired_comparisons(sw, top=3)
    assert [(c["best"]["number"], c["other"]["number"]) for c in comps] == [(1, 2), (1, 0)]
    cmp = comps[0]["comparison"]
    d = np.subtract(FOLD_ACC[40], FOLD_ACC[60])
    assert cmp["differences"] == pytest.approx(d.tolist())
    assert cmp["test_train_ratio"] == pytest.approx(N_TEST / N_TRAIN)
    # t = mean(d) / sqrt((1/J + n_test/n_train) * var(d)): d = [.04 .02 .02 .06 0]
    t = 0.028 / math.sqrt((1 / 5 + 1 / 9) * 5.2e-4)
    assert cmp["ttest"]["statistic"] == pytest.approx(t, rel=1e-9)
    assert cmp["ttest"]["pvalue"] == pytest.approx(
        stats.corrected_resampled_ttest(d, n_train=N_TRAIN, n_test=N_TEST).pvalue
    )
    # four positive differences and one zero: W = 0, exact p = 2/16
    assert cmp["wilcoxon"]["pvalue"] == pytest.approx(0.125)
    assert analysis.paired_comparisons(sw, top=1) == []


def test_leaky_trial_is_never_the_best(sweep, tmp_path):
    url = f"sqlite:///{tmp_path / 'leaky.db'}"
    study = optuna.create_study(study_name="with_leak", storage=url, direction="maximize")
    cv_dist = {"cv": CategoricalDistribution(["folds", "random_split"])}
    fold_dir, rand_dir = tmp_path / "0", tmp_path / "1"
    write_run(fold_dir, FOLD_ACC[40], overrides=["cv=folds"])
    write_run(
        rand_dir,
        [0.9],
        overrides=["cv=random_split"],
        folds=["random"],
        leaky=True,
        protocol="random_split (LEAKY: slices of one recording in train and test)",
    )
    for d, value, cv in ((fold_dir, 0.68, "folds"), (rand_dir, 0.9, "random_split")):
        study.add_trial(
            optuna.trial.create_trial(
                value=value,
                params={"cv": cv},
                distributions=cv_dist,
                user_attrs=link(study, d),
            )
        )
    assert study.best_trial.number == 1
    sw = load_sweep(storage=url, study_name="with_leak")
    assert analysis.best_record(sw).number == 0
    files = build_report(sw, out_dir=tmp_path / "out")
    md = files.markdown.read_text()
    assert "Optuna's best trial #1 (0.9000) used the LEAKY random split" in md
    assert "**Trial #0: mean CV accuracy 0.6800**" in md
    # same configuration with both protocols: compared side by side
    (row,) = json.loads(files.summary.read_text())["protocol_comparison"]
    assert (row["folds"]["trial"], row["random_split"]["trial"]) == (0, 1)
    # Optuna's optimisation history (matplotlib): the LEAKY trial is a red cross, left out of
    # the best-so-far line
    ax = figures.history_png_figure(sw).axes[0]
    best_line = next(ln for ln in ax.lines if ln.get_label() == "Best Value")
    assert best_line.get_ydata().tolist() == [0.68]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "trial (random split, LEAKY)" in labels


def test_outer_fold_estimate(tmp_path):
    url = f"sqlite:///{tmp_path / 'outer.db'}"
    study = optuna.create_study(study_name="outer", storage=url, direction="maximize")
    dist = {"n_mfcc": CategoricalDistribution([20, 40])}
    for number, n in enumerate((20, 40)):
        d = tmp_path / "sweep" / str(number)
        res = write_run(
            d,
            FOLD_ACC[n][:4],
            overrides=[f"n_mfcc={n}", "cv.outer_fold=5"],
            protocol="folds (outer fold 5 held out)",
        )
        study.add_trial(
            optuna.trial.create_trial(
                value=res["mean_accuracy"],
                params={"n_mfcc": n},
                distributions=dist,
                user_attrs=link(study, d),
            )
        )
    sw = load_sweep(storage=url, study_name="outer")
    out = tmp_path / "rep"
    (est,) = analysis.outer_estimates(sw, load_evaluations(out))
    assert est["outer_fold"] == 5 and est["outer_accuracy"] is None
    assert est["inner_folds"] == [1, 2, 3, 4]
    summary = {"outer_estimate": [est]}
    text = str(render.outer_paragraphs(summary, sw, out_dir=out))
    assert "--evaluate-outer" in text
    # ... and the documented command it runs: the winner's overrides, the outer fold evaluated
    dest = out / "evaluations" / "outer_fold5_trial1"
    command = "python -m urbansound.run n_mfcc=40 cv.outer_fold=5 cv.evaluate_outer=true"
    assert f"{command} hydra.run.dir={dest}" in text

    # what `--evaluate-outer` writes: the winner trained on folds 1-4, tested once on fold 5
    write_run(
        out / "evaluations" / "outer_fold5_trial1",
        [0.61],
        folds=[5],
        overrides=["n_mfcc=40", "cv.outer_fold=5", "cv.evaluate_outer=true"],
        protocol="folds (outer fold 5 evaluation)",
    )
    files = build_report(sw, out_dir=out)
    (est,) = json.loads(files.summary.read_text())["outer_estimate"]
    assert est["outer_accuracy"] == pytest.approx(0.61)
    assert est["search_objective"] == pytest.approx(np.mean(FOLD_ACC[40][:4]))
    assert est["n_test"] == N_TEST
    md = files.markdown.read_text()
    assert "**Held-out fold 5: accuracy 0.6100**" in md
    # the evaluation is reported apart: it is not a trial and never the best
    summary = json.loads(files.summary.read_text())
    assert summary["n_trials"] == 2 and summary["best"]["number"] == 1


def test_user_errors(sweep, tmp_path, capsys):
    assert cli.main([str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such sweep or run directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main([str(tmp_path / "empty")]) == 2
    assert "no results.json found" in capsys.readouterr().err
    assert cli.main(["--storage", sweep["url"], "--study", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--study nope: no such study" in err and STUDY in err
    missing = tmp_path / "missing.db"
    assert cli.main(["--storage", f"sqlite:///{missing}"]) == 2
    assert f"no such SQLite file {missing}" in capsys.readouterr().err
    assert not missing.exists()  # not created by looking
    with pytest.raises(ConfigError, match="did not hold a fold out"):
        evaluations.evaluate_outer(
            load_sweep([sweep["sweep_dir"] / "1"]).records[0], out_dir=tmp_path / "x"
        )


def test_random_split_and_outer_config(compose_cfg):
    from urbansound.config.checks import settings_from_config

    s = settings_from_config(compose_cfg(["cv=random_split"]))
    assert (s.cv.name, s.cv.test_size, s.cv.seed) == ("random_split", 0.2, 42)
    s = settings_from_config(compose_cfg(["cv.outer_fold=3", "cv.evaluate_outer=true"]))
    assert (s.cv.outer_fold, s.cv.evaluate_outer) == (3, True)
    with pytest.raises(ConfigError, match=r"cv.evaluate_outer=true needs cv=folds and cv.outer"):
        settings_from_config(compose_cfg(["cv.evaluate_outer=true"]))


# ---------------------------------------------------------------------------------------------
# The page in a real browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def _render(page: Path, profile: Path) -> str:
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium not installed (apt-get install chromium; .ci/services.sh does it)")
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
def test_page_renders_in_headless_chromium(sweep, storage_report, tmp_path):
    out, _ = storage_report
    dom = _render(out / "report.html", tmp_path / "profile")
    errors = re.search(r'<pre id="script-errors">(.*?)</pre>', dom, re.S)
    assert errors is not None and errors.group(1) == "", errors.group(1) if errors else dom[:500]
    n_plots = int(re.search(r'data-plots="(\d+)"', dom).group(1))
    drawn = int(re.search(r'data-plots-drawn="(\d+)"', dom).group(1))
    assert n_plots == 5 and drawn == n_plots
    best = re.search(r'id="best-value">([^<]*)<', dom).group(1)
    assert best == f"{sweep['study'].best_value:.4f}"

    # the check can fail: a script error on the page shows up in the rendered DOM
    broken = tmp_path / "broken.html"
    broken.write_text(
        (out / "report.html")
        .read_text()
        .replace("</body>", "<script>noSuchFunction();</script></body>")
    )
    dom = _render(broken, tmp_path / "profile2")
    assert "noSuchFunction is not defined" in re.search(
        r'<pre id="script-errors">(.*?)</pre>', dom, re.S
    ).group(1)


# ---------------------------------------------------------------------------------------------
# The evaluations train for real (demo corpus, a few epochs)


@pytest.mark.slow
def test_evaluate_outer_and_random_split_end_to_end(demo_dir, tmp_path, capsys):
    """A search with fold 10 held out, then `report --evaluate-outer --random-split`."""
    from tests.helpers import DEMO_CLIPS_PER_CLASS
    from urbansound.config.checks import settings_from_config
    from urbansound.experiment.run import run_experiment

    base = [
        f"data.demo_dir={demo_dir}",
        f"data.demo_clips_per_class={DEMO_CLIPS_PER_CLASS}",
        f"features.cache_dir={tmp_path / 'cache' / 'features'}",
        "features.n_jobs=1",
        "train.epochs=3",
        "tracking.mode=disabled",
        "cv.outer_fold=10",
        "n_mfcc=13",
    ]
    sweep_dir = tmp_path / "sweep"
    for number, lr in enumerate(("1e-3", "3e-3")):
        overrides = [*base, f"train.lr={lr}"]
        cfg = _compose(overrides)
        res = run_experiment(
            settings_from_config(cfg),
            run_dir=sweep_dir / str(number),
            resolved_config=cfg,
            overrides=overrides,
            progress=False,
        )
        # the search never sees fold 10
        assert 10 not in [f.fold for f in res.result.cv.folds]
    # each run has its own figures (the dataset's class figures are drawn after a sweep)
    assert (sweep_dir / "0" / "figures" / "confusion_matrix.png").is_file()

    rc = cli.main([str(sweep_dir), "--evaluate-outer", "--random-split", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    out = sweep_dir / "report"
    summary = json.loads((out / "summary.json").read_text())
    best = summary["best"]
    (est,) = summary["outer_estimate"]
    ev = json.loads(next((out / "evaluations").glob("outer_fold10_*/results.json")).read_text())
    assert [f["fold"] for f in ev["folds"]] == [10]
    assert ev["folds"][0]["n_test"] == 7  # fold 10 of the demo corpus
    assert ev["folds"][0]["n_train"] == 53  # every other fold
    # unequal folds: pooled accuracy weighs each of the 53 inner test clips once
    run = json.loads((sweep_dir / str(best["number"]) / "results.json").read_text())
    pooled = sum(f["accuracy"] * f["n_test"] for f in run["folds"]) / 53
    assert best["pooled_accuracy"] == pytest.approx(pooled)
    assert "outer fold 10 evaluation" in ev["protocol"]
    assert est["outer_accuracy"] == pytest.approx(ev["mean_accuracy"])
    assert est["search_objective"] == pytest.approx(best["value"])
    assert summary["fixed_overrides"]["n_mfcc"] == 13  # shared by both jobs: not a label
    assert best["params"] == {"train.lr": 0.001 if best["number"] == 0 else 0.003}
    assert (out / "protocol_comparison.png").is_file()
    (row,) = summary["protocol_comparison"]
    rs = json.loads(next((out / "evaluations").glob("random_split_*/results.json")).read_text())
    assert rs["leaky"] is True and "LEAKY" in rs["protocol"]
    assert rs["n_clips"] == 53  # the same clips as the search: fold 10 still left out
    assert row["random_split"]["accuracy"] == pytest.approx(rs["mean_accuracy"])
    assert row["folds"]["trial"] == best["number"]
    printed = capsys.readouterr().out
    assert "held-out fold 10: accuracy" in printed and "random split (LEAKY)" in printed


def _study_json(sweep_dir: Path, study_name: str, url: str) -> None:
    """What the sweeper writes into every sweep directory at its start."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    info = {"study_name": study_name, "storage": url, "direction": "maximize"}
    (sweep_dir / "study.json").write_text(json.dumps({**info, "metric": "mean_cv_accuracy"}))


def test_report_of_a_rerun_sweep_dir_reads_its_study(sweep, tmp_path, capsys):
    """Re-running a finished sweep leaves a directory with trials.csv and best_params.yaml only."""
    rerun = tmp_path / "rerun"
    _study_json(rerun, STUDY, sweep["url"])
    (rerun / "trials.csv").write_text("trial,state,value\n0,COMPLETE,0.6\n")
    (rerun / "best_params.yaml").write_text("best_trial: 1\n")
    assert cli.main([str(rerun)]) == 0, capsys.readouterr().err
    summary = json.loads((rerun / "report" / "summary.json").read_text())
    assert summary["study"] == STUDY and summary["states"] == {"COMPLETE": 3, "FAIL": 1}
    assert summary["best"]["number"] == 1
    assert summary["best"]["run_dir"] == str(sweep["sweep_dir"] / "1")  # the first sweep's job
    assert [f["accuracy"] for f in summary["best"]["folds"]] == FOLD_ACC[40]
    assert "best (predefined folds): trial #1 = 0.6800" in capsys.readouterr().out

    # without study.json: one error line that says where it looked
    (rerun / "study.json").unlink()
    assert cli.main([str(rerun)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "no results.json found and no readable study.json" in err[0]
    # a study.json whose storage is gone: one error line naming both, and no file created
    gone = tmp_path / "gone.db"
    _study_json(rerun, STUDY, f"sqlite:///{gone}")
    assert cli.main([str(rerun)]) == 2
    (err,) = capsys.readouterr().err.splitlines()
    assert err.startswith("error: ") and "no results.json found" in err
    assert f"{rerun / 'study.json'} sqlite:///{gone}: no such SQLite file {gone}" in err
    assert not gone.exists()


def test_every_trial_failed(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'failed.db'}"
    study = optuna.create_study(study_name="all_failed", storage=url, direction="maximize")
    for n in (20, 40):
        add_trial(study, None, None, {"n_mfcc": n}, state="FAIL")
    sweep_dir = tmp_path / "sweep"
    _study_json(sweep_dir, "all_failed", url)
    line = (
        "All 2 trial(s) of study all_failed failed; no result to report. "
        "First error: CUDA out of memory"
    )
    # the report is written (it lists each failure) and says so in one line; exit 0
    assert cli.main([str(sweep_dir)]) == 0
    printed = capsys.readouterr().out
    assert line in printed and "best (predefined folds)" not in printed
    summary = json.loads((sweep_dir / "report" / "summary.json").read_text())
    assert summary["best"] is None and summary["states"] == {"FAIL": 2}
    assert f"> **Note.** {line}" in (sweep_dir / "report" / "report.md").read_text()
    # nothing to evaluate: one error line, exit 2
    assert cli.main([str(sweep_dir), "--random-split"]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "no COMPLETE fold-CV trial to evaluate" in err


def test_parameter_floats_have_four_significant_digits(tmp_path, capsys):
    lrs = (0.0031622776601683794, 0.01)
    for number, lr in enumerate(lrs):
        write_run(
            tmp_path / "mr" / str(number), FOLD_ACC[20 + 20 * number], overrides=[f"train.lr={lr}"]
        )
    sw = load_sweep([tmp_path / "mr"])
    assert sw.records[0].params == {"train.lr": lrs[0]}  # full value kept
    files = build_report(sw, out_dir=tmp_path / "out")
    md = files.markdown.read_text()
    assert "train.lr=0.003162" in md and "0.0031622776601683794" not in md
    table = cli.console_table(sw)
    assert re.search(r"^ *0 +COMPLETE +0.6000 +0.0283 +folds +train.lr=0.003162$", table, re.M)
    assert json.loads(files.summary.read_text())["trials"][1]["params"]["train.lr"] == lrs[0]


def test_epoch_and_trial_axes_have_integer_ticks(tmp_path):
    from urbansound.experiment import plots

    assert [figures.integer_dtick(n) for n in (1, 3, 10, 11, 100, 101, 1000)] == [
        1,
        1,
        1,
        2,
        10,
        20,
        100,
    ]
    for n_epochs, dtick in ((3, 1), (100, 10)):
        run = write_run(tmp_path / str(n_epochs), FOLD_ACC[40], overrides=["n_mfcc=40"])
        rec = load_sweep([tmp_path / str(n_epochs)]).records[0]
        rec.results.cv.history = _history(0.68, [1, 2, 3, 4, 5], epochs=n_epochs)
        fig = figures.epochs_figure([rec], rec)
        assert (fig.layout.xaxis.dtick, fig.layout.xaxis.tickformat) == (dtick, "d")

    def ticks(fig):
        fig.canvas.draw()
        return [t for ax in fig.axes for t in ax.get_xticks()]

    # 3 epochs: matplotlib's own locator would put ticks at 1.25, 1.5, ...
    assert all(float(t).is_integer() for t in ticks(plots.epoch_curves_figure(run["history"])))
    sw = load_sweep([tmp_path / "3", tmp_path / "100"])
    assert all(float(t).is_integer() for t in ticks(figures.history_png_figure(sw)))


def test_evaluation_command_is_the_winners_run_command(sweep, tmp_path):
    sw = load_sweep(storage=sweep["url"], study_name=STUDY)
    best = analysis.best_record(sw)
    assert "trial.number=1" in best.results.overrides
    dest = tmp_path / "a b" / "random_split_trial1"
    argv = evaluations.evaluation_command(best, kind="random_split", run_dir=dest)
    assert argv[:3] == [sys.executable, "-m", "urbansound.run"]
    # the sweeper's trial.* overrides are dropped: the run never reports to the study
    assert argv[3:-1] == ["n_mfcc=40", "cv=random_split"]
    assert parse_override(argv[-1]) == ("hydra.run.dir", str(dest))
    shown = evaluations.shown_command(argv)
    assert shown.startswith("python -m urbansound.run n_mfcc=40 cv=random_split 'hydra.run.dir=")
    with pytest.raises(ConfigError, match="did not hold a fold out"):
        evaluations.evaluation_command(best, kind="outer", run_dir=dest)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n_mfcc=40", ("n_mfcc", 40)),
        ("train.lr=1e-3", ("train.lr", 0.001)),
        ("+extra=true", ("extra", True)),
        ("cv=random_split", ("cv", "random_split")),
        ("data.root='/a b/c'", ("data.root", "/a b/c")),
        ("model.hidden=[256,256]", ("model.hidden", [256, 256])),
        ("n_mfcc=20,40", None),  # a sweep is not one value
        ("~tracking", None),
    ],
)
def test_override_parser(text, expected):
    assert parse_override(text) == expected


def test_override_params_skip_the_sweepers_keys():
    got = records.override_params(
        ["n_mfcc=40", "trial.number=3", "hydra.job.chdir=false", "model.hidden=[64, 64]"],
        skip=("trial", "hydra"),
    )
    assert got == {"n_mfcc": 40, "model.hidden": "[64, 64]"}  # lists shown as written


def test_study_records_from_storage(sweep, tmp_path):
    assert records.study_names(sweep["url"]) == [STUDY]
    study = records.load_study(sweep["url"], STUDY)
    assert [t.state for t in study.trials] == ["COMPLETE"] * 3 + ["FAIL"]
    assert (study.best_number, study.direction) == (1, "maximize")
    assert study.trials[1].run_dir == sweep["sweep_dir"] / "1"
    assert study.trials[3].error == "CUDA out of memory"
    assert json.loads(study.trials[0].distributions["n_mfcc"])["name"] == "CategoricalDistribution"
    json.dumps([t.__dict__ for t in study.trials])  # plain values only
    missing = tmp_path / "none.db"
    with pytest.raises(ConfigError, match="no such SQLite file"):
        records.study_names(f"sqlite:///{missing}")
    assert not missing.exists()


def test_the_report_never_imports_optuna():
    for path in (REPO / "urbansound" / "report").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from) optuna", text, re.M), path


def test_protocol_comparison_figure_labels_leaky(tmp_path):
    """Moved from tests/experiment/test_plots.py with the figure (urbansound.report.figures)."""
    from urbansound.experiment import plots

    fig = figures.protocol_comparison_figure(["n_mfcc=40"], [0.55], [0.91])
    ax = fig.axes[0]
    assert "random 80/20 split (LEAKY)" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(t.get_text() for t in ax.texts) == ["0.550", "0.910"]
    png = plots.save_figure(fig, tmp_path / "p.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_a_file_given_as_sweep_dir_or_report_folder_is_one_line(sweep, tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    assert cli.main([str(a_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {a_file}: a file, not a directory") and "\n" not in err
    for out in (a_file, a_file / "report"):  # the report folder is a file, or under one
        assert cli.main([str(sweep["sweep_dir"]), "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: cannot write {out}: a file is in the way"), err
        assert "Traceback" not in err and "\n" not in err
    assert a_file.read_text() == "x"


def test_a_top_trial_without_readable_results_is_named_not_dropped(tmp_path):
    """A top configuration whose results.json is truncated gets a note in the paired comparison
    saying why it is not tested (it used to vanish from the table silently)."""
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    for number, n in enumerate((20, 40, 60)):
        res = write_run(tmp_path / str(number), FOLD_ACC[n], overrides=[f"n_mfcc={n}"])
        add_trial(study, tmp_path / str(number), res["mean_accuracy"], {"n_mfcc": n})
    (tmp_path / "2" / "results.json").write_text('{"folds": [')  # truncated
    sw = load_sweep([], storage=url, study_name="s")
    comps = analysis.paired_comparisons(sw, top=3)
    assert [c["other"]["number"] for c in comps] == [2, 0]
    assert comps[0]["note"] == (
        f"no readable results.json in {tmp_path / '2'}; no per-fold accuracies to test"
    )
    assert "comparison" in comps[1]
    md = build_report(sw, out_dir=tmp_path / "out").markdown.read_text()
    assert "no readable results.json in" in md


def test_single_fold_trials_say_why_there_is_no_paired_test(tmp_path):
    for number, n in enumerate((20, 40)):
        write_run(tmp_path / "mr" / str(number), FOLD_ACC[n][:1], overrides=[f"n_mfcc={n}"])
    sw = load_sweep([tmp_path / "mr"])
    (comp,) = analysis.paired_comparisons(sw)
    assert comp["note"] == "only 1 common fold(s); a paired test needs at least 2 folds"
    md = build_report(sw, out_dir=tmp_path / "out").markdown.read_text()
    assert "a paired test needs at least 2 folds" in md and "nan" not in md.lower()


def test_summary_json_is_standard_json_when_the_t_statistic_is_infinite(tmp_path):
    """Every fold 0.04 better: zero variance of the differences, t = inf. The page shows ∞;
    summary.json writes null (JSON has no Infinity) and stays readable by strict parsers."""
    write_run(tmp_path / "mr" / "0", FOLD_ACC[40], overrides=["n_mfcc=40"])
    write_run(tmp_path / "mr" / "1", [a - 0.04 for a in FOLD_ACC[40]], overrides=["n_mfcc=20"])
    write_run(tmp_path / "mr" / "2", FOLD_ACC[40], overrides=["n_mfcc=60"])  # identical to #0
    files = build_report(load_sweep([tmp_path / "mr"]), out_dir=tmp_path / "out")
    text = files.summary.read_text()
    assert "Infinity" not in text and "NaN" not in text
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    by_other = {c["other"]["number"]: c["comparison"] for c in summary["paired_comparisons"]}
    assert by_other[1]["ttest"]["statistic"] is None and by_other[1]["ttest"]["pvalue"] == 0.0
    assert by_other[2]["ttest"] == {"name": "corrected_t", "statistic": 0.0, "pvalue": 1.0, "df": 4}
    assert "∞" in files.markdown.read_text()


def test_the_commands_the_report_suggests_can_be_pasted(tmp_path):
    """A study name or directory with spaces and quotes is shell-quoted in the suggested
    `python -m urbansound.report ... --random-split` command (it used to be pasted raw)."""
    import shlex

    name = 'ét/ude "q" $HOME'
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    sweep_dir = tmp_path / "my sweep"
    for number, n in enumerate((20, 40)):
        res = write_run(sweep_dir / str(number), FOLD_ACC[n], overrides=[f"n_mfcc={n}"])
        add_trial(study, sweep_dir / str(number), res["mean_accuracy"], {"n_mfcc": n})
    md = build_report(
        load_sweep([], storage=url, study_name=name), out_dir=tmp_path / "a"
    ).markdown.read_text()
    (cmd,) = re.findall(r"`(python -m urbansound\.report [^`]*--random-split)`", md)
    assert shlex.split(cmd)[3:] == ["--storage", url, "--study", name, "--random-split"]
    plain = tmp_path / "plain run dirs"
    for number, n in enumerate((20, 40)):
        write_run(plain / str(number), FOLD_ACC[n], overrides=[f"n_mfcc={n}"])
    md = build_report(load_sweep([plain]), out_dir=tmp_path / "b").markdown.read_text()
    (cmd,) = re.findall(r"`(python -m urbansound\.report [^`]*--random-split)`", md)
    assert shlex.split(cmd)[3:] == [str(plain), "--random-split"]


def test_ctrl_c_is_one_line_and_exit_130(sweep, tmp_path):
    """Interrupted once the study is loaded (the figures and pages take seconds after that)."""
    import signal

    out = tmp_path / "r"
    proc = subprocess.Popen(
        [sys.executable, "-m", "urbansound.report", str(sweep["sweep_dir"]), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=sweep["root"],
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # the log line that load_sweep writes once the study is open
        if f"study {STUDY} opened from" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip() == (
        f"error: interrupted; the report in {out} is not complete (no file of it is "
        "half-written): run the same command again"
    )
    assert not [p for p in out.glob(".*.tmp")]  # no temporary file left behind


def test_storage_errors_are_one_line(tmp_path, capsys):
    """SQLAlchemy's multi-line errors ([SQL: ...], Background link) were printed as they came;
    a file that is no Optuna storage said "--study is needed: ... holds 0 studies"."""
    not_a_db = tmp_path / "notes.db"
    not_a_db.write_text("not a database\n")
    assert cli.main(["--storage", f"sqlite:///{not_a_db}"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: --storage sqlite:///{not_a_db}: cannot open the study storage "
        "((sqlite3.DatabaseError) file is not a database)\n"
    )
    assert cli.main(["--storage", str(not_a_db)]) == 2  # a path: Optuna's journal storage
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: --storage {not_a_db}: line 1 of the journal file is no Optuna journal record"
    )
    assert err.count("\n") == 1


def test_an_evaluation_of_a_named_sweeps_winner_is_one_run(tmp_path):
    """`sweep=<name>` among the winner's overrides would start the sweep again (hydra.mode is
    MULTIRUN in every named sweep): the evaluation's command leaves it out."""
    results = write_run(
        tmp_path / "0",
        FOLD_ACC[40],
        overrides=["n_mfcc=40", "cv.outer_fold=5"],
        trial={"study_name": "mfcc_grid", "number": 0},
    )
    results["overrides"] = ["n_mfcc=40", "sweep=mfcc_grid", "cv.outer_fold=5", "trial.number=0"]
    (tmp_path / "0" / "results.json").write_text(json.dumps(results))
    rec = load_sweep([tmp_path / "0"]).records[0]
    argv = evaluations.evaluation_command(rec, kind="outer", run_dir=tmp_path / "e")
    assert argv[3:-1] == ["n_mfcc=40", "cv.outer_fold=5", "cv.evaluate_outer=true"]


def test_folds_without_sizes_give_a_note_not_a_traceback(tmp_path):
    """A results.json with n_train 0 was a ValueError traceback from the corrected t-test."""
    for number, n in enumerate((20, 40, 60)):
        results = write_run(tmp_path / "mr" / str(number), FOLD_ACC[n], overrides=[f"n_mfcc={n}"])
        for fold in results["folds"]:
            fold["n_train"] = 0
        (tmp_path / "mr" / str(number) / "results.json").write_text(json.dumps(results))
    sw = load_sweep([tmp_path / "mr"])
    notes = [c["note"] for c in analysis.paired_comparisons(sw)]
    note = "fold sizes (n_train, n_test) missing from trial #1's results.json"
    assert notes == [f"{note}; no corrected t-test possible"] * 2
    summary = json.loads(build_report(sw, out_dir=tmp_path / "out").summary.read_text())
    assert summary["best"]["number"] == 1


def test_a_results_json_that_is_not_a_runs_is_one_warning_naming_the_key(tmp_path, caplog):
    """results.json is read as the typed RunResult: an old or hand-edited one without a fold's
    n_train (a KeyError traceback from the corrected t-test, before) is left out of the report
    with one warning naming the file and the key; the other runs are reported."""
    for number, n in enumerate((20, 40, 60)):
        results = write_run(tmp_path / "mr" / str(number), FOLD_ACC[n], overrides=[f"n_mfcc={n}"])
    del results["folds"][2]["n_train"]
    (tmp_path / "mr" / "2" / "results.json").write_text(json.dumps(results))
    with caplog.at_level(logging.WARNING, logger="urbansound.report.load"):
        sw = load_sweep([tmp_path / "mr"])
    assert [r.run_dir.name for r in sw.records] == ["0", "1"]
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "urbansound.report.load"]
    assert (
        warning == f"cannot read {tmp_path / 'mr' / '2' / 'results.json'}: folds[2]: no 'n_train'"
    )
    assert analysis.best_record(sw).number == 1


def test_a_best_trial_without_its_results_says_so(tmp_path):
    """The study's best trial whose results.json was deleted read '± – std over 0 folds;
    pooled over all 0 test clips: –' under "Best configuration"."""
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    for number, n in enumerate((20, 40)):
        res = write_run(tmp_path / str(number), FOLD_ACC[n], overrides=[f"n_mfcc={n}"])
        add_trial(study, tmp_path / str(number), res["mean_accuracy"], {"n_mfcc": n})
    (tmp_path / "1" / "results.json").unlink()
    sw = load_sweep([], storage=url, study_name="s")
    md = build_report(sw, out_dir=tmp_path / "out").markdown.read_text()
    assert (
        f"**Trial #1: mean CV accuracy {np.mean(FOLD_ACC[40]):.4f}** (from the study; no readable "
        f"results.json in {tmp_path / '1'}; no per-fold accuracies to test)"
    ) in md
    assert "over 0 folds" not in md
