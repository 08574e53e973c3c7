"""A study's Comet archives wherever its sweeps ran, and the fit of one of its trials, for real:
a sweep, its resume in a second process into another directory, then a fit, all tracked offline.

The oracle is the offline directory itself: every archive the two sweeps wrote there must be on
the resumed sweep's one ``comet upload`` line, and no archive of another study.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import DEMO_CLIPS_PER_CLASS, cli_env
from tests.tracking.archives import read_archive
from urbansound.config.overrides import parse_override
from urbansound.experiment.callbacks import study_sweep_dirs
from urbansound.tracking.archives import is_complete_archive

pytestmark = pytest.mark.slow

QUICK = [
    "train.epochs=3",
    "train.batch_size=16",
    "model.hidden=[16]",
    "features.n_jobs=1",
    "train.device=cpu",
    "train.threads=1",
    "cv.folds=[10]",
]


@dataclass(frozen=True)
class Study:
    """The two sweeps of one study, and where everything went."""

    work: Path
    first: Path
    second: Path
    comet: Path
    resumed: subprocess.CompletedProcess[str]
    foreign: Path  # an archive of another study's sweep directory beside them


def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", f"urbansound.{module}", *args],
        cwd=cwd,
        env={**cli_env(), "HOME": str(cwd)},  # no ~/.comet.config
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"{module} {args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Study:
    work = tmp_path_factory.mktemp("study")
    comet = work / "comet"
    common = [
        *QUICK,
        f"data.demo_dir={demo_dir}",
        f"data.demo_clips_per_class={DEMO_CLIPS_PER_CLASS}",
        f"features.cache_dir={work / 'cache' / 'features'}",
        "tracking.mode=offline",
        f"tracking.offline_dir={comet}",
        f"hydra.sweeper.storage=sqlite:///{work / 'optuna.db'}",
        "hydra.sweeper.study_name=resumed",
        "n_mfcc=13,20",
    ]
    first, second = work / "multirun" / "first", work / "multirun" / "second"
    _cli("run", "-m", *common, "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={first}", cwd=work)

    # another study's sweep directory beside them, recording a complete archive of its own
    other = work / "multirun" / "other"
    (other / "0").mkdir(parents=True)
    study_file = json.loads((first / "study.json").read_text())
    (other / "study.json").write_text(json.dumps({**study_file, "study_name": "other"}))
    foreign = work / "elsewhere" / "foreign.zip"
    foreign.parent.mkdir()
    shutil.copy(next(comet.glob("*.zip")), foreign)
    (other / "0" / "results.json").write_text(json.dumps({"tracking": {"archive": str(foreign)}}))

    resumed = _cli(
        "run", "-m", *common, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={second}", cwd=work
    )
    return Study(work, first, second, comet, resumed, foreign)


def test_the_sweep_directories_of_a_study_are_found_through_its_storage(study: Study) -> None:
    """Each sweep records its directory in the study (sweep.study.study_sweep_dirs); the other
    study's directory beside them is not one of them."""
    assert study_sweep_dirs(study.second) == [study.second, study.first]
    assert study_sweep_dirs(study.first) == [study.first, study.second]
    # a directory of no study: only itself
    assert study_sweep_dirs(study.work / "elsewhere") == [study.work / "elsewhere"]


def test_a_resumed_sweep_prints_one_upload_line_naming_every_archive_of_its_study(
    study: Study,
) -> None:
    # trial 0 in the first directory, trial 1 in the second
    assert [p.parent.name for p in study.first.glob("*/results.json")] == ["0"]
    assert [p.parent.name for p in study.second.glob("*/results.json")] == ["1"]
    written = sorted(p.name for p in study.comet.glob("*.zip") if is_complete_archive(p))
    # two trials and each sweep's class-samples experiment
    assert len(written) == 4, written

    console = study.resumed.stdout.splitlines()
    (at,) = [i for i, line in enumerate(console) if line.startswith("Comet: ")]
    assert console[at].startswith(f"Comet: {len(written)} offline archive(s); to upload them")
    words = shlex.split(console[at + 1])
    assert words[:2] == ["comet", "upload"]
    assert sorted(Path(w).name for w in words[2:]) == written
    assert study.foreign.name not in console[at + 1]
    for word in words[2:]:  # shown relative to the working directory, where they are
        assert (study.work / word).is_file()


def test_a_fit_of_a_trial_is_named_tagged_and_recorded_as_a_fit_of_that_trial(study: Study) -> None:
    fit_dir = study.work / "fits" / "trial0"
    overrides = [
        f"fit.from={study.first}",
        "fit.trial=0",
        "train.epochs=2",
        "tracking.mode=offline",
        f"tracking.offline_dir={study.comet / 'fits'}",
        f"hydra.run.dir={fit_dir}",
    ]
    _cli("fit", *overrides, cwd=study.work)
    summary = json.loads((fit_dir / "fit.json").read_text())
    archive = read_archive(summary["tracking"]["archive"])

    assert archive.others["Name"] == "fit of resumed trial 0"
    assert {"fit", "study:resumed", "trial:0", "demo"} <= set(archive.experiment["tags"])
    assert "sweep" not in archive.experiment["tags"]
    command = archive.others["command"]
    assert command.startswith("urbansound-fit ")
    words = shlex.split(command)[1:]
    assert dict(map(parse_override, words)) == {
        "fit.from": str(study.first),
        "fit.study": "resumed",
        "fit.trial": 0,
        "train.epochs": 2,
        "tracking.mode": "offline",
        "tracking.offline_dir": str(study.comet / "fits"),
    }
    assert (archive.others["source_study_name"], archive.others["source_trial_number"]) == (
        "resumed",
        0,
    )
    assert archive.others["source_run_dir"] == str(study.first / "0")
