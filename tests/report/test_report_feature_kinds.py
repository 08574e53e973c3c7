"""The report names the feature kind: in the trials table, beside each paired comparison, and as
its own table of each kind's best with the paired tests (hand-made features against embeddings
under the same folds); its top-K ensemble combines trials of different kinds."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution

from urbansound.errors import ConfigError
from urbansound.report import winners
from urbansound.report.load import load_sweep

from .test_report import link
from .test_report_winners import FOLDS, write_member

#: (member, model family, feature kind): A (the best, hand-made), B and C (embeddings).
MEMBERS = (("B", "logreg", "birdnet"), ("A", "mlp", "mfcc"), ("C", "svm", "birdnet"))


@pytest.fixture
def kinds_study(tmp_path: Path) -> str:
    """Trials 0 (B: logreg on BirdNET), 1 (A: the MLP on MFCC, the best) and 2 (C: SVM on
    BirdNET), run directories under ``tmp_path/runs/<n>``."""
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="kinds", storage=url, direction="maximize")
    for n, (member, family, kind) in enumerate(MEMBERS):
        run = tmp_path / "runs" / str(n)
        value = write_member(run, member, family)
        config = {"model": {"family": family}, "features": {"kind": kind}}
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        params = {"features": kind, "model": family}
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions={
                    "features": CategoricalDistribution(["mfcc", "birdnet"]),
                    "model": CategoricalDistribution(["mlp", "logreg", "svm"]),
                },
                value=value,
                user_attrs=link(study, run),
            )
        )
    return url


def test_each_feature_kinds_best_and_the_paired_comparison(kinds_study: str) -> None:
    sweep = load_sweep([], storage=kinds_study, study_name="kinds")
    assert [r.feature_kind for r in sweep.trials] == ["birdnet", "mfcc", "birdnet"]
    bests = winners.kind_bests(sweep)
    assert [(b["kind"], b["family"], b["number"], b["n_trials"]) for b in bests] == [
        ("mfcc", "mlp", 1, 1),
        ("birdnet", "logreg", 0, 2),
    ]
    (cmp,) = winners.kind_comparisons(bests)
    assert (cmp["best"]["kind"], cmp["other"]["kind"]) == ("mfcc", "birdnet")
    assert (cmp["best"]["family"], cmp["other"]["family"]) == ("mlp", "logreg")
    c = cmp["comparison"]
    assert c["folds"] == FOLDS  # A vs B: B is wrong on one more clip in fold 4
    assert c["differences"] == pytest.approx([0.0, 0.0, 0.0, 0.2])
    # each family's best names its feature kind
    assert [(b["family"], b["kind"]) for b in winners.family_bests(sweep)] == [
        ("mlp", "mfcc"),
        ("logreg", "birdnet"),
        ("svm", "birdnet"),
    ]


def test_the_report_names_the_kind_in_its_tables(kinds_study: str, tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "urbansound.report", "--storage", kinds_study, "--study", "kinds",
         "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "features mfcc: best trial #1 = 0.8000 (1 complete)" in proc.stdout
    assert "features birdnet: best trial #0 = 0.7500 (2 complete)" in proc.stdout
    md = re.sub(r" +", " ", (out / "report.md").read_text())  # table cells unpadded
    assert "### Best configuration of each feature kind" in md
    section = md.split("### Best configuration of each feature kind")[1]
    assert "| features | best trial | family |" in section
    # the trials table and the paired comparisons carry the kind of every trial
    trials = md.split("## Trials (best first)")[1].split("##")[0]
    assert "| features |" in trials and "birdnet" in trials
    paired = md.split("## Is the best really better?")[1].split("## What the search kept")[0]
    assert "| vs trial | features |" in paired
    html = (out / "report.html").read_text()
    assert "Best configuration of each feature kind" in html


def test_the_ensemble_combines_trials_of_different_feature_kinds(kinds_study: str) -> None:
    """Each member brings the probabilities its own trial predicted from its own features: the
    MLP on MFCC (A) and logistic regression on BirdNET embeddings (B) average as two families on
    one kind do (test_report_winners: 1, 1, 1, 0.8)."""
    ens = winners.ensemble(load_sweep([], storage=kinds_study, study_name="kinds"), 2)
    assert ens["members"] == [1, 0]
    assert ens["member_features"] == ["mfcc", "birdnet"]
    assert ens["member_families"] == ["mlp", "logreg"]
    assert [f["accuracy"] for f in ens["folds"]] == pytest.approx([1.0, 1.0, 1.0, 0.8])
    assert ens["value"] == pytest.approx(0.95)
    assert (ens["n_clips"], ens["left_out"]) == (20, [])
    assert ens["comparison"]["differences"] == pytest.approx([0.2, 0.2, 0.2, 0.0])


def _skip_clip(run: Path, clip: str, *, record: bool) -> None:
    """Remove ``clip`` from the run's predictions (renumbering its rows, as a table without that
    clip does) and, with ``record``, list it in results.json's ``skipped``."""
    path = run / "predictions.npz"
    arrays = dict(np.load(path))
    keep = arrays["clip"] != clip
    arrays = {k: v[keep] if k != "class_names" else v for k, v in arrays.items()}
    arrays["index"] = np.argsort(np.argsort(arrays["index"]))  # rows of a 19-clip table
    np.savez_compressed(path, **arrays)
    if record:
        results = json.loads((run / "results.json").read_text())
        results["skipped"] = [{"path": f"/data/audio/fold4/{clip}", "error": "cannot decode"}]
        (run / "results.json").write_text(json.dumps(results))


def test_a_clip_one_members_extraction_skipped_is_left_out_of_every_score(
    kinds_study: str, tmp_path: Path
) -> None:
    """BirdNET's run (trial 0) skipped c19.wav (fold 4's clip 4, the one the ensemble gets wrong):
    every member, the best included, is scored on the 19 clips all of them tested."""
    _skip_clip(tmp_path / "runs" / "0", "c19.wav", record=True)
    ens = winners.ensemble(load_sweep([], storage=kinds_study, study_name="kinds"), 2)
    assert ens["n_clips"] == 19
    assert ens["left_out"] == [{"number": 0, "features": "birdnet", "clips": ["c19.wav"]}]
    assert [f["n_test"] for f in ens["folds"]] == [5, 5, 5, 4]
    assert [f["accuracy"] for f in ens["folds"]] == pytest.approx([1.0, 1.0, 1.0, 1.0])
    # the best alone on the same 19 clips: wrong on clip 4 of folds 1-3 only
    assert [f["accuracy"] for f in ens["best"]["folds"]] == pytest.approx([0.8, 0.8, 0.8, 1.0])
    assert ens["best"]["value_from_predictions"] == pytest.approx(0.85)
    assert ens["comparison"]["differences"] == pytest.approx([0.2, 0.2, 0.2, 0.0])


def test_a_clip_missing_without_being_skipped_is_refused(kinds_study: str, tmp_path: Path) -> None:
    _skip_clip(tmp_path / "runs" / "0", "c19.wav", record=False)
    with pytest.raises(ConfigError, match=r"trial 0 .* other clips or folds than trial 1"):
        winners.ensemble(load_sweep([], storage=kinds_study, study_name="kinds"), 2)
