"""The installed commands: configs ship with the package; each console script is its ``python -m``
command; shell completion and help name them.

Every command runs for real in a subprocess, from a working directory outside the checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO, SWEEP_DIR

SWEEPS = sorted(p.stem for p in SWEEP_DIR.glob("*.yaml"))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMET_", "HYDRA_"))}
    env.update(extra)
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_completion_query_lists_groups_and_options(tmp_path) -> None:
    """What bash asks for `urbansound <words><TAB>` (Hydra's `-sc query=bash`)."""
    module = [sys.executable, "-m", "urbansound.run", "-sc", "query=bash"]
    cases = {
        "urbansound sweep=": {f"sweep={name}" for name in SWEEPS},
        "urbansound features=": {"features=mfcc", "features=logmel"},
        "urbansound hydra/sweeper/sampler=": {"hydra/sweeper/sampler=tpe"},
        "urbansound train.ep": {"train.epochs=", "train.eps="},
        "urbansound n_mfcc=20 fe": {"features=", "features."},
    }
    for line, expected in cases.items():
        out = set(_run(module, tmp_path, _env(COMP_LINE=line)).stdout.split())
        assert expected <= out, (line, out)


@pytest.mark.parametrize(("module", "command"), [("run", "urbansound"), ("fit", "urbansound-fit")])
def test_help_names_the_installed_command(tmp_path, module, command) -> None:
    base = [sys.executable, "-m", f"urbansound.{module}"]
    hydra_help = _run([*base, "--hydra-help"], tmp_path, _env()).stdout
    assert f'eval "$({command} -sc install=bash)"' in hydra_help
    assert f"{module}.py" not in hydra_help
    app_help = _run([*base, "--help"], tmp_path, _env()).stdout
    assert f"sweep: {', '.join(SWEEPS)}" in app_help
    assert f"{command} -sc install=bash" in app_help
    # the install script completes the console script, not every `python` command
    script = _run([*base, "-sc", "install=bash"], tmp_path, _env()).stdout
    assert script.rstrip().endswith(f"-F hydra_bash_completion {command}")


def _bash_completion(bin_dir: Path, line: str, cwd: Path, env: dict[str, str]) -> list[str]:
    """Install the completion as the README says, then complete ``line`` as bash would."""
    words = line.split(" ")
    script = (
        'eval "$(urbansound -sc install=bash)"\n'
        f"COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; COMP_CWORD={len(words) - 1}\n"
        "hydra_bash_completion\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"}
    return _run(["bash", "-c", script], cwd, env).stdout.split()


#: The console scripts of ``[project.scripts]`` and the module each is the same command as.
COMMANDS = {
    "urbansound": "urbansound.run",
    "urbansound-fit": "urbansound.fit",
    "urbansound-report": "urbansound.report",
    "urbansound-predict": "urbansound.predict",
}


@dataclass(frozen=True)
class Installed:
    """The wheel installed with ``pip install --target``: its site, scripts and environment."""

    wheel: Path
    site: Path
    env: dict[str, str]

    @property
    def bin(self) -> Path:
        return self.site / "bin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """`pip wheel` of the checkout, installed into a folder of its own (no dependencies: the
    environment's serve), used with only that folder on ``PYTHONPATH``."""
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist), str(REPO)],
        tmp,
        _env(),
    )  # fmt: skip
    (wheel,) = dist.glob("urbansound-*.whl")
    site = tmp / "site"
    _run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
         str(wheel)],
        tmp,
        _env(),
    )  # fmt: skip
    return Installed(wheel=wheel, site=site, env=_env(PYTHONPATH=str(site)))


@pytest.mark.slow
def test_a_wheel_installed_outside_the_checkout_finds_its_configs(installed, tmp_path) -> None:
    """The console script, -m, sweeps and completion, from a directory outside the checkout."""
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    conf = (str(p.relative_to(REPO)) for p in REPO.glob("urbansound/conf/**/*.yaml"))
    modules = [
        *REPO.glob("urbansound/**/*.py"),
        *REPO.glob("urbansound/**/templates/*"),  # the report's Jinja2 templates
        *REPO.glob("hydra_plugins/**/*.py"),
    ]
    code = (str(p.relative_to(REPO)) for p in modules)
    expected = {*conf, *code}
    assert expected <= names, sorted(expected - names)

    site, env = installed.site, installed.env
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run(
        [sys.executable, "-c", "import urbansound.config.schema as c; print(c.__file__)"],
        elsewhere,
        env,
    )
    assert Path(where.stdout.strip()).is_relative_to(site)

    console = installed.bin / "urbansound"
    help_text = _run([str(console), "--help"], elsewhere, env).stdout
    assert f"sweep: {', '.join(SWEEPS)}" in help_text

    job = _run(
        [sys.executable, "-m", "urbansound.run", "--cfg", "job", "sweep=mfcc_grid"], elsewhere, env
    )
    assert "n_mfcc: 40" in job.stdout and "features:" in job.stdout
    hydra_cfg = _run([str(console), "--cfg", "hydra", "sweep=full_tpe"], elsewhere, env).stdout
    assert "study_name: full_tpe" in hydra_cfg

    completions = _bash_completion(installed.bin, "urbansound sweep=", elsewhere, env)
    assert completions == [f"sweep={name}" for name in SWEEPS]
    completions = _bash_completion(
        installed.bin, "urbansound hydra/sweeper/sampler=t", elsewhere, env
    )
    assert completions == ["hydra/sweeper/sampler=tpe"]
    completions = _bash_completion(installed.bin, "urbansound-fit fit.t", elsewhere, env)
    assert completions == ["fit.trial="]
    assert not list(elsewhere.iterdir())  # nothing written by --help, --cfg or completion

    bad = subprocess.run(
        [str(console), "+train.epoch=3"], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: unknown key train.epoch; did you mean train.epochs?"


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_console_script_is_its_python_m_command(installed, tmp_path, command) -> None:
    """Each console script the wheel installs prints the help of its ``python -m`` module, and
    fails as it does: one ``error:`` line, exit status 2."""
    script = installed.bin / command
    assert script.is_file(), sorted(p.name for p in installed.bin.iterdir())
    module = [sys.executable, "-m", COMMANDS[command]]
    env = installed.env
    own = _run([str(script), "--help"], tmp_path, env).stdout
    assert own == _run([*module, "--help"], tmp_path, env).stdout
    # predict's parser (urbansound.inference.cli) names its module, the others their script
    assert (COMMANDS[command] if command == "urbansound-predict" else command) in own

    missing = str(tmp_path / "missing")
    bad_args = {
        "urbansound": [f"data.root={missing}", "tracking.mode=disabled"],
        "urbansound-fit": [f"fit.from={missing}"],
        "urbansound-report": [missing],
        "urbansound-predict": [f"{missing}.safetensors", f"{missing}.wav"],
    }[command]
    failures = [
        subprocess.run([*argv, *bad_args], cwd=tmp_path, env=env, capture_output=True, text=True)
        for argv in ([str(script)], module)
    ]
    for proc in failures:
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("error: ") and missing in line
    assert failures[0].stderr == failures[1].stderr


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job", "sweep=full_tpe"]])
def test_the_command_starts_without_heavy_libraries(tmp_path, args) -> None:
    """Hydra's start (its plugin scan imports the sweeper plugin; the schemas; composition) pulls
    in no training, tracking or search library: those load when a run or a sweep starts."""
    proc = _run(
        [sys.executable, "-X", "importtime", "-m", "urbansound.run", *args], tmp_path, _env()
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert "urbansound.config.app" in imported  # the log holds this process's imports
    heavy = {"optuna", "torch", "comet_ml", "librosa", "numba", "sklearn", "matplotlib"}
    assert not imported & heavy
