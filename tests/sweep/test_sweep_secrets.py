"""A storage password never reaches a file: a URL holding one is refused before anything is
written, and the password comes from the environment (PGPASSWORD, ~/.pgpass, or the variable
``hydra.sweeper.storage_password_env`` names) for the sweeper, its jobs, the report and fit.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from tests.helpers import DEMO_CLIPS_PER_CLASS, cli_env
from urbansound.errors import ConfigError
from urbansound.sweep.settings import sweep_settings
from urbansound.sweep.storage import dashboard_command, open_storage
from urbansound.sweep.urls import display_storage, storage_identity
from urbansound.utils.redaction import has_password

from .apps.sweeper_conf import sweeper_conf
from .postgres import Server, postgres_server
from .test_sweep_processes import command

SECRET = "Sekr1t-pw"
# (storage URL, the secret as it is written there): every way a URL can carry a password
WITH_PASSWORD = [
    (f"postgresql://user:{SECRET}@dbhost/optuna", SECRET),
    (f"postgresql+psycopg://user:{SECRET}@dbhost:5432/optuna", SECRET),
    (f"mysql://user:{SECRET}@dbhost/optuna", SECRET),
    (f"mysql+pymysql://user:{SECRET}@dbhost/optuna?charset=utf8mb4", SECRET),
    ("postgresql://user:P%40SS%2Fw%3Ard@dbhost/optuna", "P%40SS%2Fw%3Ard"),  # percent-encoded
    (f"postgresql://user@dbhost/optuna?password={SECRET}", SECRET),  # a query parameter
    (f"postgresql://user@dbhost/optuna?sslmode=require&Password={SECRET}", SECRET),
    (f"mysql://user@dbhost/optuna?passwd={SECRET}", SECRET),
    (f"postgresql://user:{SECRET}@dbhost:port/optuna", SECRET),  # no URL SQLAlchemy parses
    (f"sqlite://user:{SECRET}@/optuna.db", SECRET),  # SQLite has none, but it is written
]


@pytest.mark.parametrize(("url", "written"), WITH_PASSWORD)
def test_a_storage_url_with_a_password_is_refused_saying_how_to_give_it(
    tmp_path, monkeypatch, url, written
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        sweep_settings(sweeper_conf(storage=url), arguments=["x=0,1"])
    message = str(info.value)
    assert message.startswith("hydra.sweeper.storage=") and "\n" not in message
    for way in ("PGPASSWORD", "~/.pgpass", "hydra.sweeper.storage_password_env=<NAME>"):
        assert way in message
    for form in {written, SECRET, "P@SS/w:rd", "P%40SS"}:  # as written and decoded: never shown
        assert form not in message
    assert list(tmp_path.iterdir()) == []  # no folder, no file


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////tmp/a:b@c/optuna.db",  # ':' and '@' in a folder name are no password
        "sqlite:///outputs/optuna.db",
        "postgresql://user@dbhost/optuna",
        "postgresql://user@dbhost/optuna?sslmode=require&application_name=sweep",
        "journal@host:1/optuna.log",  # a journal file's path
    ],
)
def test_a_url_without_a_password_is_not_taken_for_one(url):
    assert not has_password(url)
    assert "***" not in display_storage(url)


def test_hidden_passwords_and_storage_identity():
    assert display_storage("postgresql://u:pw@db/x?password=pw&sslmode=require") == (
        "postgresql://u:***@db/x?password=***&sslmode=require"
    )
    same = [
        "postgresql+psycopg://u:pw@DB/optuna",
        "postgresql://other@db:5432/optuna",
        "postgres://db/optuna",
        "postgresql://db/optuna?password=x",
    ]
    assert len({storage_identity(u) for u in same}) == 1
    assert storage_identity("postgresql://db/optuna") != storage_identity("postgresql://db/other")
    assert storage_identity("postgresql://db/optuna") != storage_identity("mysql://db/optuna")


def test_storage_password_env_must_name_a_variable_that_is_set_for_a_server(tmp_path, monkeypatch):
    monkeypatch.delenv("URBANSOUND_NO_SUCH_VARIABLE", raising=False)
    server = "postgresql://user@dbhost/optuna"
    cases = {
        (server, "URBANSOUND_NO_SUCH_VARIABLE"): "the environment variable "
        "URBANSOUND_NO_SUCH_VARIABLE is not set; export URBANSOUND_NO_SUCH_VARIABLE",
        (server, "not a name"): "must name an environment variable",
        (f"sqlite:///{tmp_path / 'o.db'}", "HOME"): "has no password (a SQLite or journal file)",
    }
    for (storage, name), words in cases.items():
        conf = sweeper_conf(storage=storage, storage_password_env=name)
        with pytest.raises(ConfigError, match=re.escape(words)) as info:
            sweep_settings(conf, arguments=["x=0,1"])
        assert str(info.value).startswith("hydra.sweeper.")
    monkeypatch.setenv("URBANSOUND_DB_PASSWORD", "s3cret")
    conf = sweeper_conf(storage=server, storage_password_env="URBANSOUND_DB_PASSWORD")
    settings = sweep_settings(conf, arguments=["x=0,1"])
    assert settings.password_env == "URBANSOUND_DB_PASSWORD"
    assert "s3cret" not in repr(settings) and "s3cret" not in settings.storage
    assert dashboard_command(settings.storage, settings.password_env) == (
        'PGPASSWORD="$URBANSOUND_DB_PASSWORD" optuna-dashboard '
        "postgresql+psycopg://user@dbhost/optuna"
    )


@pytest.mark.slow
def test_a_sweep_given_a_password_stops_before_anything_is_written(tmp_path):
    """The user's command: nothing of the sweep appears, and the password is not printed."""
    cmd = command(tmp_path / "jobs", f"postgresql://user:{SECRET}@localhost:1/optuna", "x=0,1")
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert "PGPASSWORD" in error and "hydra.sweeper.storage_password_env" in error
    assert SECRET not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# PostgreSQL: a role of its own, whose password is written nowhere


def _psql(sql: str, database: str = "postgres") -> None:
    subprocess.run(
        ["runuser", "-u", "postgres", "--", "psql", "-v", "ON_ERROR_STOP=1", "-d", database],
        input=sql,
        text=True,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def secret_role(tmp_path: Path) -> Iterator[tuple[Server, str]]:
    """A login role with a password of its own, in the test server's database: (server as
    that role, its password). Needs the local cluster (root); skips elsewhere."""
    import shutil

    pg = postgres_server()
    if shutil.which("runuser") is None or os.geteuid() != 0 or "localhost" not in pg.url:
        pytest.skip("needs the local PostgreSQL cluster (root) to create a role")
    from sqlalchemy.engine import make_url

    role, password = f"us_secret_{uuid.uuid4().hex[:8]}", f"Pw-{uuid.uuid4().hex}"
    owner = make_url(pg.url).username
    _psql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'; GRANT {owner} TO {role};")
    url = make_url(pg.url).set(username=role).render_as_string(False)
    try:
        yield Server(url, password), password
    finally:
        _psql(f"DROP OWNED BY {role};", database=make_url(pg.url).database or "postgres")
        _psql(f"DROP ROLE {role};")


def _written(root: Path, secret: str) -> list[str]:
    """Every file under ``root`` (and every member of a zip archive) that holds ``secret``."""
    found = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if secret.encode() in data:
            found.append(str(path))
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    if secret.encode() in archive.read(member):
                        found.append(f"{path}:{member}")
    return found


def _isolated_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A user's environment: no PGPASSWORD, no ~/.pgpass (HOME is tmp_path), no Comet key."""
    env = {k: v for k, v in cli_env().items() if not k.startswith("PG")}
    env.pop("HYDRA_FULL_ERROR", None)
    return {**env, "HOME": str(tmp_path), "PGPASSFILE": str(tmp_path / "no.pgpass"), **extra}


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("way", ["PGPASSWORD", "storage_password_env"])
def test_a_postgres_sweep_report_and_fit_source_never_write_the_password(
    tmp_path, demo_dir, secret_role, way
):
    server, password = secret_role
    study_name = f"secret-{uuid.uuid4().hex[:8]}"
    if way == "PGPASSWORD":
        env, extra = _isolated_env(tmp_path, PGPASSWORD=password), []
    else:
        env = _isolated_env(tmp_path, URBANSOUND_DB_PASSWORD=password)
        extra = ["hydra.sweeper.storage_password_env=URBANSOUND_DB_PASSWORD"]
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "urbansound.run",
            "-m",
            "n_mfcc=13,20",
            "train.epochs=2",
            "features.n_jobs=1",
            f"features.cache_dir={tmp_path / 'cache'}",
            f"data.demo_dir={demo_dir}",
            f"data.demo_clips_per_class={DEMO_CLIPS_PER_CLASS}",
            "tracking.mode=offline",
            f"tracking.offline_dir={tmp_path / 'comet'}",
            f"hydra.sweep.dir={sweep_dir}",
            f"hydra.sweeper.storage={server.url}",
            f"hydra.sweeper.study_name={study_name}",
            *extra,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert password not in proc.stdout + proc.stderr
    study = optuna.load_study(study_name=study_name, storage=server.direct)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert list((tmp_path / "comet").glob("*.zip"))  # the Comet archives are there, and clean
    info = json.loads((sweep_dir / "study.json").read_text())
    assert info["storage"] == server.url
    assert info["password_env"] == (None if way == "PGPASSWORD" else "URBANSOUND_DB_PASSWORD")

    # the report opens the study the same way: from the environment
    report = subprocess.run(
        [sys.executable, "-m", "urbansound.report", str(sweep_dir), "--no-progress"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert f"study {study_name} ({server.url} (study {study_name})" in report.stdout
    assert password not in report.stdout + report.stderr
    assert _written(tmp_path, password) == []
    optuna.delete_study(study_name=study_name, storage=server.direct)


@pytest.mark.postgres
def test_storage_password_env_opens_a_postgres_study_without_pgpassword(monkeypatch):
    pg = postgres_server()
    for key in ("PGPASSWORD", "PGPASSFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")  # no ~/.pgpass either
    monkeypatch.setenv("URBANSOUND_TEST_PW", pg.password)
    storage = open_storage(pg.url, create=False, password_env="URBANSOUND_TEST_PW")
    assert isinstance(optuna.study.get_all_study_names(storage=storage), list)
    monkeypatch.delenv("URBANSOUND_TEST_PW")
    with pytest.raises(ConfigError, match="URBANSOUND_TEST_PW is not set"):
        open_storage(pg.url, create=False, password_env="URBANSOUND_TEST_PW")
