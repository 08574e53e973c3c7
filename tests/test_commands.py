"""The commands' ``--help`` pages say what the tool does: its commands, groups, named sweeps and
keys, and not the sweeper's internal ``trial`` node; ``--hydra-help`` stays Hydra's.

Each page is printed by the real command in a subprocess (``python -m``, as the console scripts
run it: tests/test_packaging.py checks that each script prints the same page).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import SWEEP_DIR
from urbansound.config.help import help_sweeps

SWEEPS = sorted(p.stem for p in SWEEP_DIR.glob("*.yaml"))
COMMANDS = ("urbansound", "urbansound-report", "urbansound-fit", "urbansound-predict")


def _help(module: str, *args: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMET_", "HYDRA_"))}
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert not list(cwd.iterdir())  # --help writes nothing
    return proc.stdout


def _config_block(page: str) -> dict:
    """The YAML the page shows under ``== Config ==``, read back."""
    block = page.split("== Config ==", 1)[1].split("\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line.startswith("urbansound"):  # the footer
            break
        lines.append(line)
    return yaml.safe_load("\n".join(lines))


def test_the_help_says_what_urbansound_does_and_lists_its_commands_and_sweeps(tmp_path) -> None:
    page = _help("urbansound.run", "--help", cwd=tmp_path)
    assert "powered by Hydra" not in page
    assert "audio classification on UrbanSound8K" in page
    for command in COMMANDS:
        assert f"\n  {command} " in page, command
    # the groups with their options, as Hydra lists them ($APP_CONFIG_GROUPS)
    assert f"sweep: {', '.join(SWEEPS)}" in page
    assert "model: extra_trees, hist_gb, knn, logreg, mlp, random_forest, sklearn, svm" in page
    # every named sweep with its first phrase, sampler and budget
    sweeps = page.split("== Named sweeps ==", 1)[1].split("== Most used keys ==", 1)[0]
    for name in SWEEPS:
        assert f"\n  {name} " in sweeps, name
    assert "The tutorial's question, answered with 10-fold cross-validation" in sweeps
    assert "grid sampler, no pruner, every grid point once; searches n_mfcc" in sweeps
    assert "tpe sampler, median pruner, 40 trials; searches n_mfcc, features.n_mels" in sweeps
    # the user's keys with their values; the sweeper's trial node is not shown
    config = _config_block(page)
    assert "trial" not in config and "hydra" not in config
    assert "\ntrial:" not in page and "study_name: null" not in page
    assert config["n_mfcc"] == 40 and config["train"]["epochs"] == 100
    assert config["features"]["n_mfcc"] == "${n_mfcc}"  # as written, like Hydra's $CONFIG
    assert 'eval "$(urbansound -sc install=bash)"' in page  # $$ in the template: one $


def test_the_help_shows_the_config_the_overrides_make(tmp_path) -> None:
    page = _help("urbansound.run", "--help", "n_mfcc=13", "model=svm", cwd=tmp_path)
    config = _config_block(page)
    assert config["n_mfcc"] == 13
    assert config["model"]["family"] == "svm" and "C" in config["model"]


def test_the_fit_help_lists_its_keys_and_the_other_commands(tmp_path) -> None:
    page = _help("urbansound.fit", "--help", cwd=tmp_path)
    assert "powered by Hydra" not in page
    assert page.startswith("urbansound-fit: train one configuration of urbansound")
    for key in ("fit.from=", "fit.study=", "fit.trial=", "fit.seeds="):
        assert f"\n  {key}" in page, key
    for command in ("urbansound", "urbansound-report", "urbansound-predict"):
        assert f"\n  {command} " in page, command
    config = _config_block(page)
    assert set(config["fit"]) >= {"from", "study", "trial", "seeds"}
    assert "trial" not in config and "\ntrial:" not in page
    assert 'eval "$(urbansound-fit -sc install=bash)"' in page


@pytest.mark.parametrize("module", ["run", "fit"])
def test_hydra_help_stays_hydras(tmp_path, module) -> None:
    page = _help(f"urbansound.{module}", "--hydra-help", cwd=tmp_path)
    assert page.startswith("Hydra (") and "== Flags ==" in page


def test_the_named_sweeps_list_reads_each_sweep_file() -> None:
    """One entry per sweep file, each with that file's budget and every key it searches."""
    entries: dict[str, str] = {}
    for line in help_sweeps().splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            name = line.split()[0]
            entries[name] = line
        else:
            entries[name] += " " + line.strip()
    assert sorted(entries) == SWEEPS
    for name, entry in entries.items():
        sweeper = yaml.safe_load((SWEEP_DIR / f"{name}.yaml").read_text())["hydra"]["sweeper"]
        n_trials = sweeper["n_trials"]
        assert (f"{n_trials} trials" if n_trials else "every grid point once") in entry, entry
        searched = entry.split("; searches ", 1)[1].split(", ")
        assert searched == list(sweeper["params"]), entry
