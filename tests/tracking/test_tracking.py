"""Comet tracking with comet_ml's real offline mode: archives are opened and read back.

No test touches the network: Comet's "server" is either absent (no key), a closed port on the
loopback interface, or a tiny HTTP server on the loopback interface.
"""

from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from urbansound.config.checks import settings_from_config
from urbansound.config.settings import Settings, TrackingSettings, TrialSettings
from urbansound.tracking import experiments
from urbansound.tracking.archives import (
    ARCHIVE_MEMBERS,
    archives_under,
    is_complete_archive,
    upload_command,
)
from urbansound.tracking.comet import (
    COMET_ENV_DEFAULTS,
    DEFAULT_OFFLINE_DIR,
    DEFAULT_PROJECT_NAME,
    comet_quiet,
    comet_settings,
)
from urbansound.tracking.naming import (
    OBJECTIVE,
    experiment_name,
    experiment_tags,
    flatten_config,
    rerun_command,
)
from urbansound.tracking.tracker import Tracker
from urbansound.training.results import CVResult, EpochMetrics, FoldResult, RunResult

# --------------------------------------------------------------------------------------------
# Reading an offline archive back


@dataclass
class Archive:
    """What an offline archive holds, by kind."""

    experiment: dict[str, Any]
    parameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    others: dict[str, Any] = field(default_factory=dict)
    uploads: list[tuple[str, str, bytes]] = field(default_factory=list)  # (type, name, content)

    def upload(self, name: str) -> bytes:
        matches = [content for _, n, content in self.uploads if n == name]
        assert len(matches) == 1, f"{name}: {len(matches)} uploads named so"
        return matches[0]

    def uploads_of(self, kind: str) -> list[str]:
        return sorted(n for t, n, _ in self.uploads if t == kind)


def read_archive(path: str | Path) -> Archive:
    with zipfile.ZipFile(path) as z:
        archive = Archive(experiment=json.loads(z.read("experiment.json")))
        lines = z.read("messages.json").decode().splitlines()
        for message in (json.loads(line) for line in lines if line.strip()):
            kind, payload = message["type"], message["payload"]
            if kind == "parameter_msg":
                param = payload.get("param") or payload.get("params")
                if param["source"] == "manual":
                    archive.parameters[param["paramName"]] = param["paramValue"]
            elif kind == "metric_msg":
                metric = payload["metric"]
                archive.metrics[metric["metricName"]][metric["step"]] = metric["metricValue"]
            elif kind == "log_other":
                archive.others[payload["key"]] = payload["value"]
            elif kind == "file_upload":
                params = payload["additional_params"]
                name = params.get("fileName") or params.get("figName")  # figName: images
                archive.uploads.append((payload["upload_type"], name, z.read(payload["file_path"])))
    return archive


# --------------------------------------------------------------------------------------------
# Isolation: no Comet key, no Comet config file, no network


@pytest.fixture(autouse=True)
def comet_isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No COMET_* variables but this project's defaults, no ~/.comet.config, cwd in tmp_path."""
    import os

    for key in list(os.environ):
        if key.startswith("COMET_") and key not in COMET_ENV_DEFAULTS:
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)


def _settings(tmp_path: Path, *, trial: TrialSettings | None = None, **keys: Any) -> Settings:
    """Offline settings; ``None`` for a key means "not set" (Comet's configuration decides)."""
    fields = {"mode": "offline", "offline_dir": str(tmp_path / "comet")} | keys
    return Settings(tracking=TrackingSettings(**fields), trial=trial or TrialSettings())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def refusing_server() -> Iterator[str]:
    """An HTTP server on the loopback interface that answers 401 to everything."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _refuse(self) -> None:
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"msg": "invalid api key"}')

        do_GET = do_POST = _refuse

        def log_message(self, *args: Any) -> None:
            pass

    yield from _serve(Handler)


def _serve(handler: type) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/clientlib/"
    server.shutdown()
    server.server_close()


@pytest.fixture
def key_refusing_server() -> Iterator[str]:
    """A server that answers Comet's version check and nothing else that Comet understands:
    the probe passes, Comet's own start does not get an experiment."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            ok = self.path.rstrip("/").endswith("isAlive/ver")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"version": "3.0.0"}' if ok else b"<html>not Comet</html>")

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    yield from _serve(Handler)


# --------------------------------------------------------------------------------------------
# Typed results, as run.py hands them over

CLASSES = ["air_conditioner", "car_horn", "siren"]


def _epoch(epoch: int, acc: list[float]) -> EpochMetrics:
    n = len(acc)
    return EpochMetrics(
        epoch=epoch,
        folds=list(range(1, n + 1)),
        train_loss=np.linspace(1.0, 0.5, n) / epoch,
        test_loss=np.linspace(1.2, 0.6, n) / epoch,
        test_accuracy=np.array(acc),
    )


def _result(status: str = "complete", *, epochs: int = 2, trial: dict | None = None) -> RunResult:
    confusions = [[[2, 1, 0], [0, 3, 0], [0, 0, 1]], [[1, 0, 0], [1, 2, 0], [0, 1, 2]]]
    folds = [
        FoldResult(
            fold=k + 1,
            accuracy=float(np.trace(cm) / np.sum(cm)),
            loss=0.5 + k,
            n_train=20,
            n_test=int(np.sum(cm)),
            per_class_accuracy=[cm[i][i] / sum(cm[i]) for i in range(3)],
            confusion=cm,
        )
        for k, cm in enumerate(confusions)
    ]
    history = [_epoch(e, [0.5 + 0.1 * e, 0.4 + 0.1 * e]) for e in range(1, epochs + 1)]
    accs = [f.accuracy for f in folds]
    return RunResult(
        status=status,
        dataset="demo",
        data_root="/data/demo",
        protocol="2-fold CV (official folds)",
        leaky=False,
        n_listed=15,
        n_clips=15,
        n_missing=0,
        empty_folds=[],
        skipped=[],
        class_names=CLASSES,
        n_features=40,
        overrides=["n_mfcc=13"],
        trial=trial or {"study_name": None, "number": None},
        cv=CVResult(folds=folds, history=history, mean_accuracy=float(np.mean(accs))),
        mean_accuracy=float(np.mean(accs)) if status == "complete" else 0.55,
        std_accuracy=float(np.std(accs)),
        pruned_at_epoch=epochs if status == "pruned" else None,
    )


def _run_dir(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- n_mfcc=13\n")
    (run_dir / "config.yaml").write_text("features:\n  n_mfcc: 13\n")
    (run_dir / "run.log").write_text("the job's log\n")
    (run_dir / "folds.csv").write_text("fold,accuracy\n1,0.75\n")
    (run_dir / "results.json").write_text('{"status": "complete"}\n')
    return run_dir


def _png(path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1])
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# Names, parameters, commands


def test_flatten_config_gives_every_key_a_stable_dotted_name(compose_cfg) -> None:
    from omegaconf import OmegaConf

    nested = {
        "n_mfcc": 20,
        "model": {"hidden": [256, 256], "dropout": 0.5},
        "data": {"root": None},
        "trial": {"study_name": "s", "number": 3},
    }
    assert flatten_config(nested) == {
        "n_mfcc": 20,
        "model.hidden": "[256, 256]",
        "model.dropout": 0.5,
        "data.root": None,
    }

    cfg = OmegaConf.to_container(compose_cfg(["n_mfcc=13", "trial.number=2"]), resolve=True)
    flat = flatten_config(cfg)
    assert flat["n_mfcc"] == 13 and flat["features.n_mfcc"] == 13
    assert flat["train.lr"] == pytest.approx(1e-3)
    assert flat["tracking.mode"] == "auto"
    assert not [k for k in flat if k.startswith(("trial", "hydra"))]
    assert all(not isinstance(v, dict | list) for v in flat.values())


def test_sweep_names_and_tags() -> None:
    settings = settings_from_config(
        {"trial": {"study_name": "mfcc_grid", "storage": "sqlite:///x.db", "number": 4}}
    )
    assert experiment_tags(settings, dataset="demo") == [
        "demo",
        "sweep",
        "study:mfcc_grid",
        "trial:4",
    ]
    overrides = ["n_mfcc=20", "trial.number=4", "model.hidden=[8]"]
    assert experiment_name(settings, run_dir="outputs/x/4", overrides=overrides) == ("mfcc_grid#4")
    single = settings_from_config({})
    assert experiment_tags(single) == []
    assert experiment_name(single, run_dir="outputs/runs/d/12-00-00", overrides=[]) == (
        "run 12-00-00"
    )
    assert experiment_name(single, run_dir="r", overrides=["n_mfcc=13"]) == "n_mfcc=13"


def test_the_recorded_command_reruns_the_configuration(tmp_path: Path) -> None:
    """Pasted into a shell, the command gives Hydra exactly the job's overrides (but trial.*)."""
    import subprocess

    overrides = [
        "n_mfcc=13",
        "model.hidden=[8, 8]",
        "+train.note=it's",
        "data.root=/data/my corpus",
        "trial.number=4",
        "trial.study_name=s",
    ]
    command = rerun_command(overrides)
    assert command.startswith("python -m urbansound.run ")
    # what a shell hands to the program
    argv = subprocess.run(
        ["bash", "-c", command.replace("python -m urbansound.run", 'printf "%s\\n"')],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert argv == overrides[:4]


def test_upload_command_names_complete_archives_or_lists_them_in_a_file(tmp_path: Path) -> None:
    assert upload_command([]) == ""
    few = [_fake_archive(tmp_path / "comet" / f"{i}.zip") for i in range(2)]
    assert upload_command(few) == "comet upload comet/0.zip comet/1.zip"
    many = [_fake_archive(tmp_path / "comet" / f"{i:02d}.zip") for i in range(12)]
    listing = tmp_path / "archives.txt"
    assert upload_command(many, list_file=listing) == "xargs comet upload < archives.txt"
    assert listing.read_text().splitlines() == [str(p) for p in many]


def _fake_archive(path: Path, key: str = "0" * 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("experiment.json", json.dumps({"offline_id": key}))
        z.writestr("messages.json", "")
    return path


def test_archive_members_are_comet_mls_own_names() -> None:
    from urbansound.tracking.comet import import_comet

    import_comet()  # with our Comet defaults (no error reports to Comet's tracker)
    from comet_ml.config import (
        OFFLINE_EXPERIMENT_JSON_FILE_NAME,
        OFFLINE_EXPERIMENT_MESSAGES_JSON_FILE_NAME,
    )

    assert ARCHIVE_MEMBERS == (
        OFFLINE_EXPERIMENT_JSON_FILE_NAME,
        OFFLINE_EXPERIMENT_MESSAGES_JSON_FILE_NAME,
    )


# --------------------------------------------------------------------------------------------
# Comet's own configuration, ours on top where set


def test_comet_configuration_decides_where_our_keys_are_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unset = _settings(tmp_path, project_name=None, workspace=None, offline_dir=None)
    c = comet_settings(unset)
    assert (c.project_name, c.workspace) == (DEFAULT_PROJECT_NAME, None)
    assert c.offline_dir == tmp_path / DEFAULT_OFFLINE_DIR

    (tmp_path / ".comet.config").write_text(  # HOME is tmp_path: ~/.comet.config
        "[comet]\nproject_name = from-file\nworkspace = file-ws\noffline_directory = ~/file-dir\n"
    )
    c = comet_settings(unset)
    assert (c.project_name, c.workspace, c.offline_dir) == (
        "from-file",
        "file-ws",
        tmp_path / "file-dir",
    )

    monkeypatch.setenv("COMET_PROJECT_NAME", "from-env")
    monkeypatch.setenv("COMET_WORKSPACE", "env-ws")
    monkeypatch.setenv("COMET_OFFLINE_DIRECTORY", str(tmp_path / "env-dir"))
    c = comet_settings(unset)
    assert (c.project_name, c.workspace, c.offline_dir) == (
        "from-env",
        "env-ws",
        tmp_path / "env-dir",
    )

    ours = _settings(tmp_path, project_name="ours", workspace="our-ws", offline_dir="our-dir")
    c = comet_settings(ours)
    assert (c.project_name, c.workspace, c.offline_dir) == ("ours", "our-ws", tmp_path / "our-dir")


def test_an_offline_experiment_goes_where_comets_configuration_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMET_PROJECT_NAME", "env-project")
    monkeypatch.setenv("COMET_OFFLINE_DIRECTORY", str(tmp_path / "env-dir"))
    settings = _settings(tmp_path, project_name=None, offline_dir=None)
    tracker = experiments.start(settings, run_dir=tmp_path / "run", config={}, overrides=[])
    info = tracker.end()
    assert Path(info["archive"]).parent == tmp_path / "env-dir"
    assert (info["project_name"], info["errors"]) == ("env-project", [])
    assert read_archive(info["archive"]).experiment["project_name"] == "env-project"


# --------------------------------------------------------------------------------------------
# Modes


def test_disabled_tracking_writes_nothing(tmp_path: Path) -> None:
    settings = _settings(tmp_path, mode="disabled")
    run_dir = _run_dir(tmp_path)
    tracker = experiments.start(settings, run_dir=run_dir, config={"n_mfcc": 40}, overrides=[])
    tracker.log_epoch(object())  # not even looked at
    tracker.finish(_result(), run_dir=run_dir, figures={})
    info = tracker.info()
    assert (info["mode"], info["experiment_key"], info["archive"]) == ("disabled", None, None)
    assert not (tmp_path / "comet").exists()
    assert experiments.log_dataset_samples(settings, figures={}, samples=[], tags=["demo"]) is None


@pytest.mark.parametrize(
    "server", ["no key", "closed port", "refusing server", "key refusing server"]
)
def test_online_mode_falls_back_to_an_offline_archive_with_one_warning(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, request
) -> None:
    if server != "no key":
        monkeypatch.setenv("COMET_API_KEY", "0123456789abcdef0123456789")
        url = (
            f"http://127.0.0.1:{_closed_port()}/clientlib/"
            if server == "closed port"
            else request.getfixturevalue(server.replace(" ", "_"))
        )
        monkeypatch.setenv("COMET_URL_OVERRIDE", url)
    settings = _settings(tmp_path, mode="online")
    with caplog.at_level(logging.WARNING):
        tracker = experiments.start(
            settings, run_dir=tmp_path / "run", config={"n_mfcc": 40}, overrides=[]
        )
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "cannot track online" in warnings[0].getMessage()
    assert tracker.mode == "offline"
    info = tracker.end()
    assert Path(info["archive"]) == tmp_path / "comet" / f"{info['experiment_key']}.zip"
    assert "cannot track online" in info["errors"][0]
    assert read_archive(info["archive"]).parameters == {"n_mfcc": 40}


# --------------------------------------------------------------------------------------------
# The sink: what an experiment holds


def test_a_trial_archive_holds_curves_folds_confusion_objective_files_and_figures(
    tmp_path: Path,
) -> None:
    trial = TrialSettings(study_name="mfcc_grid", storage="postgresql://me:s3cret@db/o", number=4)
    settings = _settings(tmp_path, trial=trial)
    run_dir = _run_dir(tmp_path)
    overrides = ["n_mfcc=13", "model.hidden=[8, 8]", "trial.number=4"]
    tracker = experiments.start(
        settings,
        run_dir=run_dir,
        config={"features": {"n_mfcc": 13}, "model": {"hidden": [8, 8]}, "trial": {"number": 4}},
        overrides=overrides,
        swept={"n_mfcc": 13},
    )
    result = _result()
    for m in result.cv.history:
        tracker.log_epoch(m)
    info = tracker.info()
    assert info["mode"] == "offline" and info["errors"] == []
    assert info["samples_experiment"] == ["samples", "study:mfcc_grid"]
    assert (info["project_name"], info["workspace"]) == ("urbansound8k", None)
    figure = _png(tmp_path / "curves.png")
    tracker.finish(result, run_dir=run_dir, figures={"learning-curves": figure})
    assert tracker.info() == info  # nothing went wrong at the end either
    a = read_archive(info["archive"])

    # the flattened config (and Comet's optimizer adds the swept parameters under their name)
    assert a.parameters == {"features.n_mfcc": 13, "model.hidden": "[8, 8]", "n_mfcc": 13}
    assert set(a.experiment["tags"]) == {"demo", "sweep", "study:mfcc_grid", "trial:4"}
    assert a.others["Name"] == "mfcc_grid#4"
    assert a.others["command"] == "python -m urbansound.run n_mfcc=13 'model.hidden=[8, 8]'"
    assert a.others["storage"] == "postgresql://me:***@db/o"
    assert a.others["samples_experiment"] == "samples study:mfcc_grid"
    assert (a.others["status"], a.others["dataset"], a.others["n_clips"]) == (
        "complete",
        "demo",
        15,
    )
    # per-epoch curves, step = epoch
    assert a.metrics["test_accuracy"] == pytest.approx({1: 0.55, 2: 0.65})
    assert a.metrics["test_accuracy_fold_2"] == pytest.approx({1: 0.5, 2: 0.6})
    assert a.metrics["train_loss"] == pytest.approx({1: 0.75, 2: 0.375})
    # final metrics at the last epoch; the objective under its one name
    folds = result.cv.folds
    assert a.metrics["accuracy_fold_1"] == pytest.approx({2: folds[0].accuracy})
    assert a.metrics["loss_fold_2"] == pytest.approx({2: 1.5})
    assert a.metrics["mean_cv_accuracy"] == pytest.approx({2: result.mean_accuracy})
    assert a.metrics["std_cv_accuracy"] == pytest.approx({2: result.std_accuracy})
    assert "mean_accuracy" not in a.metrics
    assert a.metrics["class_accuracy_car_horn"] == pytest.approx({2: 5 / 6})
    # confusion matrices with the class names
    total = json.loads(a.upload("confusion-matrix.json"))
    assert total["labels"] == CLASSES
    assert total["matrix"] == [[3, 1, 0], [1, 5, 0], [0, 1, 3]]
    assert json.loads(a.upload("confusion-matrix-fold-2.json"))["matrix"] == folds[1].confusion
    # Comet's optimization fields: the study, the objective, only the swept parameters
    assert a.others["optimizer_id"] == "mfcc_grid"
    assert a.others["optimizer_metric"] == "mean_cv_accuracy" == OBJECTIVE
    assert a.others["optimizer_metric_value"] == pytest.approx(result.mean_accuracy)
    assert a.others["optimizer_objective"] == "maximize"
    assert json.loads(a.others["optimizer_parameters"]) == {"n_mfcc": 13}
    # the run directory's files and the figures
    assert a.upload("hydra/overrides.yaml") == b"- n_mfcc=13\n"
    assert a.upload("config.yaml") == b"features:\n  n_mfcc: 13\n"
    assert a.upload("run.log") == b"the job's log\n"
    assert a.upload("folds.csv").startswith(b"fold,accuracy")
    assert a.upload("results.json") == b'{"status": "complete"}\n'
    assert a.uploads_of("visualization") == ["learning-curves"]
    assert a.upload("learning-curves") == figure.read_bytes()


def test_a_pruned_trial_has_no_objective_and_a_failed_run_says_why(tmp_path: Path) -> None:
    trial = TrialSettings(study_name="s", number=1)
    settings = _settings(tmp_path, trial=trial, log_model=True)
    run_dir = _run_dir(tmp_path)
    (run_dir / "fold_models.pt").write_bytes(b"weights")
    pruned = experiments.start(settings, run_dir=run_dir, config={}, overrides=[], swept={"a": 1})
    pruned.finish(_result("pruned", epochs=2), run_dir=run_dir, figures={})
    a = read_archive(pruned.info()["archive"])
    assert (a.others["status"], a.others["pruned_at_epoch"]) == ("pruned", 2)
    assert set(a.experiment["tags"]) == {"demo", "sweep", "study:s", "trial:1", "pruned"}
    assert "optimizer_id" not in a.others and "mean_cv_accuracy" not in a.metrics
    assert a.uploads_of("model-element") == ["fold_models.pt"]

    failed = experiments.start(settings, run_dir=run_dir, config={}, overrides=[])
    failed.finish(None, run_dir=run_dir, figures={}, error=ValueError("no clips left"))
    a = read_archive(failed.info()["archive"])
    assert (a.others["status"], a.others["error"]) == ("failed", "ValueError: no clips left")
    assert "failed" in a.experiment["tags"]


def test_the_class_samples_are_one_experiment_of_their_own(tmp_path: Path) -> None:
    import soundfile

    settings = _settings(tmp_path, trial=TrialSettings(study_name="mfcc_grid"))
    wavs = []
    for name in CLASSES:
        wav = tmp_path / f"{name}.wav"
        soundfile.write(wav, np.zeros(100), 22050, subtype="PCM_16")
        wavs.append((name, wav))
    figure = _png(tmp_path / "overview.png")
    key = experiments.log_dataset_samples(
        settings,
        figures={"class-overview": figure},
        samples=wavs,
        tags=["demo", "sweep", "study:mfcc_grid"],
    )
    archive = experiments.offline_archive(settings, key)
    assert archive == tmp_path / "comet" / f"{key}.zip"
    a = read_archive(archive)
    assert sorted(a.experiment["tags"]) == ["demo", "samples", "study:mfcc_grid", "sweep"]
    assert a.uploads_of("audio") == [f"{n}.wav" for n in CLASSES]
    assert a.upload("siren.wav") == (tmp_path / "siren.wav").read_bytes()
    assert a.uploads_of("visualization") == ["class-overview"]
    assert a.others["Name"] == "class samples demo sweep"

    no_audio = _settings(tmp_path, log_audio=False, log_figures=False)
    assert experiments.log_dataset_samples(no_audio, figures={}, samples=wavs, tags=[]) is None


# --------------------------------------------------------------------------------------------
# Failures: tracking never raises into the run, and leaves no junk


def test_an_unusable_offline_dir_leaves_the_run_untracked_with_one_warning(
    tmp_path: Path, caplog, capfd
) -> None:
    not_a_dir = tmp_path / "comet"
    not_a_dir.write_text("a file where the archives should go")
    settings = _settings(tmp_path)
    run_dir = _run_dir(tmp_path)
    with caplog.at_level(logging.WARNING):
        tracker = experiments.start(settings, run_dir=run_dir, config={"n_mfcc": 40}, overrides=[])
        tracker.log_epoch(_epoch(1, [0.5]))
        tracker.finish(_result(), run_dir=run_dir, figures={})
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.startswith("Comet: tracking is off for this run (cannot write")
    assert str(not_a_dir) in warning
    info = tracker.info()
    assert (info["mode"], info["experiment_key"], info["archive"]) == ("failed", None, None)
    assert info["errors"] == [warning]
    assert "Traceback" not in capfd.readouterr().err


@pytest.fixture
def read_only_dir(tmp_path: Path, tiny_mount) -> Iterator[Path]:
    """A directory nobody can write to: a read-only mount as root, else mode 0555."""
    import os

    if os.geteuid() == 0:  # permissions stop no root process: a read-only file system does
        yield tiny_mount("ro")
        return
    path = tmp_path / "read-only"
    path.mkdir()
    path.chmod(0o555)
    yield path
    path.chmod(0o755)


@pytest.fixture
def full_dir(tiny_mount) -> Path:
    """A directory on a 64 KiB file system (a tmpfs mount: root only)."""
    return tiny_mount("rw")


def test_a_read_only_offline_dir_is_one_warning_and_no_file(
    tmp_path: Path, read_only_dir: Path, caplog, capfd
) -> None:
    settings = _settings(tmp_path, offline_dir=str(read_only_dir / "comet"))
    run_dir = _run_dir(tmp_path)
    with caplog.at_level(logging.WARNING):
        tracker = experiments.start(settings, run_dir=run_dir, config={}, overrides=[])
        tracker.finish(_result(), run_dir=run_dir, figures={})
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "tracking is off for this run" in warning and "read-only" in warning
    assert tracker.info()["mode"] == "failed"
    err = capfd.readouterr().err
    assert "Traceback" not in err and "COMET" not in err
    assert list(read_only_dir.iterdir()) == []


def test_a_full_offline_dir_is_one_warning_and_no_zip(
    tmp_path: Path, full_dir: Path, caplog, capfd
) -> None:
    """The archive does not fit: Comet's traceback becomes one warning; no partial zip is left."""
    settings = _settings(tmp_path, offline_dir=str(full_dir))
    run_dir = _run_dir(tmp_path)
    (run_dir / "run.log").write_bytes(np.random.default_rng(0).bytes(200_000))  # incompressible
    with caplog.at_level(logging.WARNING):
        tracker = experiments.start(settings, run_dir=run_dir, config={}, overrides=[])
        tracker.finish(_result(), run_dir=run_dir, figures={})
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "could not be written" in warning and "No space left on device" in warning
    assert warning.endswith(
        "; tracking.offline_dir (or COMET_OFFLINE_DIRECTORY) chooses another directory"
    )
    info = tracker.info()
    assert info["archive"] is None and info["errors"] == [warning]
    err = capfd.readouterr().err
    assert "Traceback" not in err and "COMET" not in err and "Exception ignored" not in err
    assert list(full_dir.iterdir()) == []

    # full from the start: the same, at start
    (full_dir / "filler").write_bytes(b"\0" * 65_536)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        tracker = experiments.start(settings, run_dir=run_dir, config={}, overrides=[])
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "tracking is off for this run" in warning and "disk is full" in warning
    assert "tracking.offline_dir (or COMET_OFFLINE_DIRECTORY) chooses another directory" in warning
    assert [p.name for p in full_dir.iterdir()] == ["filler"]


def _record(run_dir: Path, archive: Path) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps({"tracking": {"archive": str(archive)}}))


def test_only_complete_archives_are_listed_and_uploaded(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    tracker = experiments.start(settings, run_dir=tmp_path, config={"n_mfcc": 13}, overrides=[])
    complete = Path(tracker.end()["archive"])
    assert is_complete_archive(complete)

    comet = tmp_path / "comet"
    empty = comet / "empty.zip"  # Comet's placeholder, left by a kill -9
    with zipfile.ZipFile(empty, "w"):
        pass
    assert empty.stat().st_size == 22
    zero = comet / "zero.zip"  # left by a full disk
    zero.write_bytes(b"")
    truncated = comet / "truncated.zip"
    truncated.write_bytes(complete.read_bytes()[: complete.stat().st_size // 2])
    no_experiment = comet / "other.zip"
    with zipfile.ZipFile(no_experiment, "w") as z:
        z.writestr("messages.json", "")
    missing = comet / "missing.zip"
    for path in (empty, zero, truncated, no_experiment, missing):
        assert not is_complete_archive(path), path.name
        _record(tmp_path / "sweep" / path.stem, path)
    _record(tmp_path / "sweep" / "ok", complete)

    assert archives_under(tmp_path / "sweep") == [complete]
    assert upload_command([complete, empty, zero, truncated, missing]) == (
        f"comet upload comet/{complete.name}"
    )
    assert upload_command([empty, zero, truncated]) == ""


_KILLED_RUN = """
import sys, time
from pathlib import Path
from urbansound.tracking import experiments
from urbansound.config.settings import Settings, TrackingSettings
settings = Settings(tracking=TrackingSettings(mode="offline", offline_dir=sys.argv[1]))
tracker = experiments.start(settings, run_dir=Path(sys.argv[2]), config={"n_mfcc": 13},
                            overrides=[])
Path(sys.argv[2], "results.json").write_text(__import__("json").dumps({"tracking": tracker.info()}))
print("running", flush=True)
time.sleep(600)
"""


def test_a_run_killed_mid_way_leaves_no_archive_to_list(tmp_path: Path) -> None:
    """kill -9 of a real process while its experiment is open: no zip, nothing to upload."""
    import os
    import signal
    import subprocess
    import sys

    comet, run_dir = tmp_path / "comet", tmp_path / "sweep" / "0"
    run_dir.mkdir(parents=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, str(comet), str(run_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"HOME": str(tmp_path)},
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "running\n"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    recorded = json.loads((run_dir / "results.json").read_text())["tracking"]["archive"]
    assert Path(recorded).parent == comet
    assert list(comet.iterdir()) == []  # not even Comet's empty placeholder
    assert archives_under(tmp_path / "sweep") == []


def test_a_failing_logging_call_is_one_warning_and_the_rest_is_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    def broken(self: Tracker, *args: Any) -> None:
        raise RuntimeError("metrics channel broken")

    monkeypatch.setattr(Tracker, "_log_fold_metrics", broken)
    settings = _settings(tmp_path, trial=TrialSettings(study_name="s", number=0))
    run_dir = _run_dir(tmp_path)
    result = _result()
    with caplog.at_level(logging.WARNING):
        tracker = experiments.start(settings, run_dir=run_dir, config={}, overrides=[])
        for m in result.cv.history:
            tracker.log_epoch(m)
        tracker.finish(result, run_dir=run_dir, figures={"missing": tmp_path / "nope.png"})
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings  # the per-fold metrics, the missing figure
    assert "per-fold metrics" in warnings[0] and "metrics channel broken" in warnings[0]
    assert "the figures" in warnings[1]
    info = tracker.info()
    assert info["errors"] == warnings
    a = read_archive(info["archive"])
    assert not [m for m in a.metrics if m.startswith(("accuracy_fold_", "loss_fold_", "std_cv"))]
    assert a.metrics["test_accuracy"] == pytest.approx({1: 0.55, 2: 0.65})
    assert json.loads(a.upload("confusion-matrix.json"))["matrix"][0] == [3, 1, 0]
    assert a.others["optimizer_metric_value"] == pytest.approx(result.mean_accuracy)


def test_finish_never_raises_even_when_everything_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    run_dir = _run_dir(tmp_path)
    tracker = experiments.start(settings, run_dir=run_dir, config={}, overrides=[])
    exp = tracker._exp

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError("gone")

    for name in ("log_metrics", "log_others", "log_other", "add_tags", "log_asset", "end"):
        monkeypatch.setattr(exp, name, fail)
    tracker.finish(_result(), run_dir=run_dir, figures={})
    tracker.finish(None, run_dir=tmp_path / "no-such-dir", figures={}, error=KeyboardInterrupt())
    assert tracker.info()["archive"] is None  # never written, and said so
    assert any("could not be written" in e for e in tracker.info()["errors"])
    monkeypatch.undo()
    with comet_quiet():  # not left to Comet's exit hook
        exp.end()


def test_empty_comet_variables_count_as_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`COMET_OFFLINE_DIRECTORY= urbansound ...` used to put the archives into the working
    directory (and an empty project name went to Comet as ""): empty means "not set"."""
    for key in ("COMET_PROJECT_NAME", "COMET_WORKSPACE", "COMET_OFFLINE_DIRECTORY"):
        monkeypatch.setenv(key, "")
    unset = _settings(tmp_path, project_name=None, workspace=None, offline_dir=None)
    c = comet_settings(unset)
    assert (c.project_name, c.workspace) == (DEFAULT_PROJECT_NAME, None)
    assert c.offline_dir == tmp_path / DEFAULT_OFFLINE_DIR
    (tmp_path / ".comet.config").write_text("[comet]\noffline_directory = ~/file-dir\n")
    assert comet_settings(unset).offline_dir == tmp_path / "file-dir"  # next in line
    blank = _settings(tmp_path, project_name=" ", workspace="", offline_dir="")
    c = comet_settings(blank)
    assert (c.project_name, c.workspace) == (DEFAULT_PROJECT_NAME, None)
    assert c.offline_dir == tmp_path / "file-dir"
    tracker = experiments.start(unset, run_dir=tmp_path / "run", config={}, overrides=[])
    info = tracker.end()
    assert Path(info["archive"]).parent == tmp_path / "file-dir" and info["errors"] == []
    assert not list(tmp_path.glob("*.zip"))


def test_an_offline_dir_that_is_a_file_is_one_warning_saying_what_to_do(
    tmp_path: Path, caplog
) -> None:
    in_the_way = tmp_path / "comet"
    in_the_way.write_text("x")
    with caplog.at_level(logging.WARNING):
        tracker = experiments.start(
            _settings(tmp_path), run_dir=tmp_path / "run", config={}, overrides=[]
        )
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning == (
        f"Comet: tracking is off for this run (cannot write {in_the_way}: a file is in the way "
        "where a directory should be; remove it or choose another path); tracking.offline_dir "
        "(or COMET_OFFLINE_DIRECTORY) chooses another directory"
    )
    assert tracker.mode == "failed" and in_the_way.read_text() == "x"


def test_the_recorded_command_of_a_named_sweeps_trial_runs_once(tmp_path: Path) -> None:
    """A trial of `urbansound sweep=mfcc_grid` has `sweep=mfcc_grid` among its overrides; the
    named sweep sets hydra.mode=MULTIRUN, so the recorded command started the whole sweep
    again. Its swept values are in the overrides already: the command leaves it out."""
    overrides = [
        "n_mfcc=20",
        "sweep=mfcc_grid",
        "hydra/launcher=joblib",
        "tracking.mode=offline",
        "trial.study_name=mfcc_grid",
        "trial.number=0",
    ]
    assert rerun_command(overrides) == ("python -m urbansound.run n_mfcc=20 tracking.mode=offline")
