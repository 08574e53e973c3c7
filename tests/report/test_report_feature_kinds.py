"""The report names the feature kind: in the trials table, beside each paired comparison, and as
its own table of each kind's best with the paired tests (hand-made features against embeddings
under the same folds)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution

from urbansound.report import winners
from urbansound.report.load import load_sweep

from .test_report import link
from .test_report_winners import FOLDS, write_member

#: (member, model family, feature kind): A (the best, hand-made), B and C (embeddings).
MEMBERS = (("B", "logreg", "birdnet"), ("A", "mlp", "mfcc"), ("C", "svm", "birdnet"))


@pytest.fixture
def kinds_study(tmp_path: Path) -> str:
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
