"""What the report says a search kept: pruned winners, each family's best, the ensemble.

Every number here is computed by hand from run directories and a real SQLite study written by
the fixtures (results.json from ``RunResult.to_dict()``, config.yaml, predictions.npz as
``urbansound.run`` writes them).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution

from urbansound.errors import ConfigError
from urbansound.report import winners
from urbansound.report.load import load_sweep
from urbansound.training.results import CVResult, FoldResult

from .test_report import link, results_json

optuna.logging.set_verbosity(optuna.logging.WARNING)

FOLDS = [1, 2, 3, 4]
Y_TRUE = [0, 1, 2, 0, 1]  # each fold's 5 test clips
N_TRAIN = 15
T0 = dt.datetime(2026, 1, 1, 12, 0, 0)


def _probs(member: str, fold: int) -> np.ndarray:
    """Class probabilities of one fold's 5 clips (3 classes), designed so that:

    - A (best) is right on clips 0-3 and wrong on clip 4 (0.6 on class 2, 0.3 on the true 1);
    - B is right on clips 1-4 and wrong on clip 0 (0.5 on class 1, 0.4 on the true 0); in
      fold 4 it is wrong on clip 4 too (0.9 on class 2);
    - their mean is right everywhere except clip 4 of fold 4: accuracy 1, 1, 1, 0.8.
    """
    p = np.zeros((5, 3))
    for i, y in enumerate(Y_TRUE):
        p[i, y] = 0.9
        p[i, (y + 1) % 3] = 0.05
        p[i, (y + 2) % 3] = 0.05
    if member == "A":
        p[4] = [0.1, 0.3, 0.6]
    elif member == "B":
        p[0] = [0.4, 0.5, 0.1]
        if fold == 4:
            p[4] = [0.05, 0.05, 0.9]
    else:  # C: wrong on clips 0 and 1 everywhere
        p[0] = [0.1, 0.8, 0.1]
        p[1] = [0.1, 0.1, 0.8]
    return p


def _accuracies(member: str) -> list[float]:
    return [float((_probs(member, f).argmax(1) == Y_TRUE).mean()) for f in FOLDS]


def write_member(run_dir: Path, member: str, family: str, *, shuffle: bool = False) -> float:
    """A run directory: results.json, config.yaml (model.family) and predictions.npz."""
    run_dir.mkdir(parents=True)
    accs = _accuracies(member)
    folds = [
        FoldResult(
            fold=f, accuracy=a, loss=0.5, n_train=N_TRAIN, n_test=5, per_class_accuracy=[],
            confusion=[],
        )
        for f, a in zip(FOLDS, accs, strict=True)
    ]  # fmt: skip
    cv = CVResult(folds=folds, mean_accuracy=float(np.mean(accs)), std_accuracy=float(np.std(accs)))
    results = results_json(cv, class_names=["a", "b", "c"], overrides=[f"model={family}"])
    (run_dir / "results.json").write_text(json.dumps(results))
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"model": {"family": family}}))
    fold = np.repeat([str(f) for f in FOLDS], 5)
    index = np.arange(20)
    probs = np.concatenate([_probs(member, f) for f in FOLDS]).astype(np.float32)
    order = np.random.default_rng(1).permutation(20) if shuffle else np.arange(20)
    np.savez_compressed(
        run_dir / "predictions.npz",
        fold=fold[order],
        clip=np.array([f"c{i}.wav" for i in index])[order],
        index=index[order],
        y_true=np.tile(Y_TRUE, 4).astype(np.int64)[order],
        probabilities=probs[order],
        class_names=np.array(["a", "b", "c"]),
    )
    return results["mean_accuracy"]


def _add(study, *, state, value=None, params=None, run_dir=None, steps=None, minute=0):
    params = params or {}
    dists = {
        k: CategoricalDistribution(["mlp", "svm"]) if k == "model" else FloatDistribution(0, 100)
        for k in params
    }
    study.add_trial(  # a FrozenTrial: create_trial cannot set the completion time
        optuna.trial.FrozenTrial(
            number=-1,
            trial_id=-1,
            state=optuna.trial.TrialState[state],
            value=value,
            datetime_start=T0,
            datetime_complete=T0 + dt.timedelta(minutes=minute),
            params=params,
            distributions=dists,
            user_attrs=link(study, run_dir) if run_dir else {},
            system_attrs={},
            intermediate_values=steps or {},
        )
    )


@pytest.fixture
def families_study(tmp_path) -> tuple[str, Path]:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="fam", storage=url, direction="maximize")
    members = (("A", "mlp", {}), ("B", "svm", {"C": 1.0}), ("C", "svm", {"C": 10.0}))
    for n, (member, family, keys) in enumerate(members):
        run = tmp_path / "runs" / str(n)
        value = write_member(run, member, family, shuffle=member == "B")
        params = {"model": family, **{f"model.{k}": v for k, v in keys.items()}}
        _add(study, state="COMPLETE", value=value, params=params, run_dir=run, minute=n)
    return url, tmp_path


def test_each_familys_best_with_its_folds_and_the_paired_comparison(families_study):
    url, _ = families_study
    sweep = load_sweep([], storage=url, study_name="fam")
    bests = winners.family_bests(sweep)
    assert [(b["family"], b["number"], b["n_trials"]) for b in bests] == [
        ("mlp", 0, 1),
        ("svm", 1, 2),
    ]
    assert [f["accuracy"] for f in bests[0]["folds"]] == [0.8, 0.8, 0.8, 0.8]
    assert [f["accuracy"] for f in bests[1]["folds"]] == [0.8, 0.8, 0.8, 0.6]
    (cmp,) = winners.family_comparisons(bests)
    assert (cmp["best"]["family"], cmp["other"]["family"]) == ("mlp", "svm")
    c = cmp["comparison"]
    assert c["folds"] == FOLDS
    assert c["differences"] == pytest.approx([0.0, 0.0, 0.0, 0.2])
    assert c["mean_difference"] == pytest.approx(0.05)
    # corrected resampled t-test by hand: t = mean / sqrt((1/J + n_test/n_train) * var)
    var = np.var([0, 0, 0, 0.2], ddof=1)
    t = 0.05 / np.sqrt((1 / 4 + 5 / N_TRAIN) * var)
    assert c["ttest"]["statistic"] == pytest.approx(t)


def test_ensemble_of_the_top_two_averages_their_probabilities_per_fold(families_study):
    url, _ = families_study
    ens = winners.ensemble(load_sweep([], storage=url, study_name="fam"), 2)
    assert ens["k"] == 2 and ens["members"] == [0, 1]
    assert [f["fold"] for f in ens["folds"]] == ["1", "2", "3", "4"]
    assert [f["accuracy"] for f in ens["folds"]] == pytest.approx([1.0, 1.0, 1.0, 0.8])
    assert [f["n_test"] for f in ens["folds"]] == [5, 5, 5, 5]
    assert ens["value"] == pytest.approx(0.95)
    assert [f["accuracy"] for f in ens["best"]["folds"]] == pytest.approx([0.8] * 4)
    assert ens["best"]["value_from_predictions"] == pytest.approx(ens["best"]["value"])
    c = ens["comparison"]
    assert c["differences"] == pytest.approx([0.2, 0.2, 0.2, 0.0])
    assert c["mean_difference"] == pytest.approx(0.15)


def test_ensemble_of_three_and_its_report(families_study, tmp_path):
    url, _ = families_study
    ens = winners.ensemble(load_sweep([], storage=url, study_name="fam"), 3)
    # A + B + C: clip 0 -> class 0 (0.9+0.4+0.1 vs 0.05+0.5+0.8: 1.4 vs 1.35), clip 1 -> class 1
    # (0.9+0.9+0.1 = 1.9), clip 4 of folds 1-3 -> class 1 (0.3+0.9+0.9), of fold 4 -> class 2
    assert [f["accuracy"] for f in ens["folds"]] == pytest.approx([1.0, 1.0, 1.0, 0.8])
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "urbansound.report", "--storage", url, "--study", "fam",
         "--out", str(out), "--ensemble", "2"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ensemble"]["value"] == pytest.approx(0.95)
    assert [f["family"] for f in summary["families"]] == ["mlp", "svm"]
    assert summary["family_comparisons"][0]["comparison"]["mean_difference"] == pytest.approx(0.05)
    assert "ensemble of the top 2 (#0, #1): 0.9500 vs best #0 0.8000" in proc.stdout
    md = (out / "report.md").read_text()
    assert "### Best configuration of each model family" in md
    assert "### Ensemble of the best" in md


def test_ensemble_members_are_distinct_configurations(families_study):
    url, root = families_study
    study = optuna.load_study(study_name="fam", storage=url)
    # the sampler drew A's configuration again (a second run directory, same predictions)
    run = root / "runs" / "3"
    write_member(run, "A", "mlp")
    _add(study, state="COMPLETE", value=0.8, params={"model": "mlp"}, run_dir=run, minute=3)
    ens = winners.ensemble(load_sweep([], storage=url, study_name="fam"), 2)
    assert ens["members"] == [0, 1]
    assert ens["value"] == pytest.approx(0.95)


def test_ensemble_refuses_runs_tested_on_other_clips(families_study):
    url, root = families_study
    path = root / "runs" / "1" / "predictions.npz"
    arrays = dict(np.load(path))
    arrays["index"] = arrays["index"] + 100
    np.savez_compressed(path, **arrays)
    with pytest.raises(ConfigError, match=r"trial 1 .* other clips or folds than trial 0"):
        winners.ensemble(load_sweep([], storage=url, study_name="fam"), 2)


def test_pruned_trials_above_the_best_completed_value_when_pruned(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="p", storage=url, direction="maximize")
    _add(study, state="COMPLETE", value=0.5, steps={1: 0.3, 2: 0.5}, minute=1)
    _add(study, state="PRUNED", steps={1: 0.55}, minute=2)  # above 0.5: counted
    _add(study, state="COMPLETE", value=0.6, steps={1: 0.4, 2: 0.6}, minute=3)
    _add(study, state="PRUNED", steps={1: 0.4, 2: 0.58}, minute=4)  # below 0.6
    _add(study, state="PRUNED", steps={1: 0.65}, minute=5)  # above 0.6: counted
    _add(study, state="PRUNED", steps={1: 0.9}, minute=0)  # before any completed: not counted
    result = winners.pruned_above_best(load_sweep([], storage=url, study_name="p"))
    assert result["pruned"] == 4
    assert result["above_best"] == 2
    assert result["trials"] == [
        {"number": 1, "step": 1, "value": 0.55, "best_then": 0.5},
        {"number": 4, "step": 1, "value": 0.65, "best_then": 0.6},
    ]


def _report(url: str, out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "urbansound.report", "--storage", url, "--study", "fam",
         "--out", str(out), "--no-progress", *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:100]), "the file is damaged"),  # truncated
        (lambda p: p.write_bytes(b""), "the file is damaged"),  # 0 bytes
        (lambda p: np.savez(p, fold=np.array([1])), "not a run's predictions (no clip"),
        (lambda p: p.unlink(), "no such file"),
    ],
    ids=["truncated", "empty", "other-arrays", "deleted"],
)
def test_a_damaged_predictions_file_is_one_line_naming_it(families_study, damage, says):
    url, root = families_study
    path = root / "runs" / "1" / "predictions.npz"
    damage(path)
    with pytest.raises(ConfigError, match=r"predictions\.npz: "):
        winners.ensemble(load_sweep([], storage=url, study_name="fam"), 2)
    out = root / "report"
    proc = _report(url, out, "--ensemble", "2")
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = [x for x in proc.stderr.splitlines() if not x.startswith("[")]
    assert line.startswith(f"error: {path}: ") and says in line, line
    assert not out.exists()  # refused before any file of the report is written


def test_an_ensemble_of_more_than_the_study_has(families_study, tmp_path):
    url, _ = families_study
    proc = _report(url, tmp_path / "r", "--ensemble", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ensemble of the top 3 (#0, #1, #2)" in proc.stdout
    assert "only 3 distinct configurations for --ensemble 5" in proc.stdout
    ens = json.loads((tmp_path / "r" / "summary.json").read_text())["ensemble"]
    assert (ens["k"], ens["requested"], ens["members"]) == (3, 5, [0, 1, 2])


def test_an_ensemble_of_a_single_configuration_says_why_there_is_none(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="fam", storage=url, direction="maximize")
    value = write_member(tmp_path / "runs" / "0", "A", "mlp")
    _add(
        study,
        state="COMPLETE",
        value=value,
        params={"model": "mlp"},
        run_dir=tmp_path / "runs" / "0",
    )
    proc = _report(url, tmp_path / "r", "--ensemble", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    note = (
        "--ensemble 2: the study has 1 distinct COMPLETE fold-CV configuration(s) with a run "
        "directory; an ensemble needs at least 2"
    )
    assert f"no ensemble: {note}" in proc.stdout
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["ensemble"]["note"] == note and summary["ensemble"]["value"] is None
    assert f"No ensemble: {note}." in (tmp_path / "r" / "report.md").read_text()
