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

from urbansound import tracking
from urbansound.config import settings_from_config

from .conftest import DEMO_CLIPS_PER_CLASS

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
        if key.startswith("COMET_") and key not in tracking.COMET_ENV_DEFAULTS:
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)


def _settings(tmp_path: Path, **tracking_keys: Any) -> Any:
    node = {"mode": "offline", "offline_dir": str(tmp_path / "comet")} | tracking_keys
    return settings_from_config({"tracking": node})


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

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/clientlib/"
    server.shutdown()
    server.server_close()


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
    assert tracking.flatten_config(nested) == {
        "n_mfcc": 20,
        "model.hidden": "[256, 256]",
        "model.dropout": 0.5,
        "data.root": None,
    }

    cfg = OmegaConf.to_container(compose_cfg(["n_mfcc=13", "trial.number=2"]), resolve=True)
    flat = tracking.flatten_config(cfg)
    assert flat["n_mfcc"] == 13 and flat["features.n_mfcc"] == 13
    assert flat["train.lr"] == pytest.approx(1e-3)
    assert flat["tracking.mode"] == "auto"
    assert not [k for k in flat if k.startswith(("trial", "hydra"))]
    assert all(not isinstance(v, dict | list) for v in flat.values())


def test_sweep_names_tags_and_optimization_parameters() -> None:
    settings = settings_from_config(
        {"trial": {"study_name": "mfcc_grid", "storage": "sqlite:///x.db", "number": 4}}
    )
    assert tracking.experiment_tags(settings, dataset="demo") == [
        "demo",
        "sweep",
        "study:mfcc_grid",
        "trial:4",
    ]
    overrides = [
        "n_mfcc=20",
        "+extra=x",
        "trial.number=4",
        "hydra.verbose=true",
        "model.hidden=[8]",
    ]
    assert tracking.experiment_name(settings, run_dir="outputs/x/4", overrides=overrides) == (
        "mfcc_grid#4"
    )
    flat = {"n_mfcc": 20, "model.hidden": "[8]"}
    assert tracking.swept_parameters(overrides, flat) == {
        "n_mfcc": 20,
        "extra": "x",
        "model.hidden": "[8]",
    }

    single = settings_from_config({})
    assert tracking.experiment_tags(single) == []
    assert tracking.experiment_name(single, run_dir="outputs/runs/d/12-00-00", overrides=[]) == (
        "run 12-00-00"
    )
    assert tracking.experiment_name(single, run_dir="r", overrides=["n_mfcc=13"]) == "n_mfcc=13"
    assert tracking._redact("postgresql://me:s3cret@db/optuna") == "postgresql://me:***@db/optuna"


def test_upload_command_names_archives_or_lists_them_in_a_file(tmp_path: Path) -> None:
    assert tracking.upload_command([]) == ""
    few = [tmp_path / "comet" / f"{i}.zip" for i in range(2)]
    assert tracking.upload_command(few) == "comet upload comet/0.zip comet/1.zip"
    many = [tmp_path / "comet" / f"{i:02d}.zip" for i in range(12)]
    listing = tmp_path / "archives.txt"
    assert tracking.upload_command(many, list_file=listing) == "xargs comet upload < archives.txt"
    assert listing.read_text().splitlines() == [str(p) for p in many]


# --------------------------------------------------------------------------------------------
# Modes


def test_disabled_tracking_writes_nothing(tmp_path: Path) -> None:
    settings = _settings(tmp_path, mode="disabled")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text('{"status": "complete"}')
    tracker = tracking.start(settings, run_dir=run_dir, config={"n_mfcc": 40})
    tracker.log_epoch(object())  # not even looked at
    info = tracker.finish(run_dir)
    assert (info["mode"], info["experiment_key"], info["archive"]) == ("disabled", None, None)
    assert (run_dir / "results.json").read_text() == '{"status": "complete"}'
    assert not (tmp_path / "comet").exists()


@pytest.mark.parametrize("server", ["no key", "closed port", "refusing server"])
def test_online_mode_falls_back_to_an_offline_archive_with_one_warning(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, request
) -> None:
    if server != "no key":
        monkeypatch.setenv("COMET_API_KEY", "0123456789abcdef0123456789")
        url = (
            f"http://127.0.0.1:{_closed_port()}/clientlib/"
            if server == "closed port"
            else request.getfixturevalue("refusing_server")
        )
        monkeypatch.setenv("COMET_URL_OVERRIDE", url)
    settings = _settings(tmp_path, mode="online")
    with caplog.at_level(logging.WARNING):
        tracker = tracking.start(settings, run_dir=tmp_path / "run", config={"n_mfcc": 40})
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "cannot track online" in warnings[0].getMessage()
    assert tracker.mode == "offline"
    info = tracker.end()
    assert Path(info["archive"]) == tmp_path / "comet" / f"{info['experiment_key']}.zip"
    assert "cannot track online" in info["errors"][0]
    assert read_archive(info["archive"]).parameters == {"n_mfcc": 40}


# --------------------------------------------------------------------------------------------
# Runs


def _demo(demo_dir: Path, cache: Path) -> list[str]:
    return [
        f"data.demo_dir={demo_dir}",
        f"data.demo_clips_per_class={DEMO_CLIPS_PER_CLASS}",
        f"features.cache_dir={cache}",
        "features.n_jobs=1",
        "train.epochs=3",
    ]


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One feature cache for this module's runs, so the demo clips are decoded once."""
    return tmp_path_factory.mktemp("features")


def _summed(folds: list[dict[str, Any]]) -> list[list[int]]:
    return np.sum([f["confusion"] for f in folds], axis=0).tolist()


@pytest.mark.slow
def test_single_run_archive_holds_parameters_curves_folds_and_confusion(
    run_cli, tmp_path: Path, demo_dir: Path, feature_cache: Path
) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli(
        *_demo(demo_dir, feature_cache),
        "n_mfcc=13",
        "tracking.mode=offline",
        f"hydra.run.dir={run_dir}",
    )
    results = json.loads((run_dir / "results.json").read_text())
    info = results["tracking"]
    assert info["mode"] == "offline" and info["errors"] == []
    archive_path = Path(info["archive"])
    assert archive_path == tmp_path / "outputs" / "comet" / f"{info['experiment_key']}.zip"

    console = proc.stdout + proc.stderr
    assert console.count("comet upload") == 1
    assert f"comet upload outputs/comet/{archive_path.name}" in console

    a = read_archive(archive_path)
    assert a.experiment["project_name"] == "urbansound8k"
    assert "demo" in a.experiment["tags"]
    assert a.others["Name"].startswith(f"data.demo_dir={demo_dir}")
    assert a.others["status"] == "complete"
    assert a.others["dataset"] == "demo"
    # parameters: the flattened resolved config
    assert a.parameters["n_mfcc"] == 13
    assert a.parameters["features.n_mfcc"] == 13
    assert a.parameters["train.epochs"] == 3
    assert a.parameters["model.hidden"] == "[256, 256]"
    assert not [k for k in a.parameters if k.startswith("trial")]
    # per-epoch curves, step = epoch
    history = results["history"]
    assert a.metrics["test_accuracy"] == pytest.approx(
        {h["epoch"]: h["mean_test_accuracy"] for h in history}
    )
    assert a.metrics["train_loss"] == pytest.approx(
        {h["epoch"]: float(np.mean(h["train_loss"])) for h in history}
    )
    assert a.metrics["test_accuracy_fold_7"] == pytest.approx(
        {h["epoch"]: h["test_accuracy"][6] for h in history}
    )
    # per-fold metrics, mean and std, at the last epoch
    for fold in results["folds"]:
        assert a.metrics[f"accuracy_fold_{fold['fold']}"] == pytest.approx({3: fold["accuracy"]})
        assert a.metrics[f"loss_fold_{fold['fold']}"] == pytest.approx({3: fold["loss"]})
    assert a.metrics["mean_accuracy"] == pytest.approx({3: results["mean_accuracy"]})
    assert a.metrics["std_accuracy"] == pytest.approx({3: results["std_accuracy"]})
    # confusion matrices through Comet's confusion-matrix API, with the class names
    matrices = a.uploads_of("confusion-matrix")
    assert len(matrices) == 11 and "confusion-matrix.json" in matrices
    total = json.loads(a.upload("confusion-matrix.json"))
    assert total["labels"] == results["class_names"]
    assert total["matrix"] == _summed(results["folds"])
    fold3 = json.loads(a.upload("confusion-matrix-fold-3.json"))
    assert fold3["matrix"] == results["folds"][2]["confusion"]
    # the resolved Hydra config files and the run's outputs as assets
    assert b"n_mfcc: 13" in a.upload("hydra/config.yaml")
    assert b"n_mfcc=13" in a.upload("hydra/overrides.yaml")
    assert b"n_mfcc: 13" in a.upload("config.yaml")
    assert json.loads(a.upload("results.json"))["mean_accuracy"] == results["mean_accuracy"]
    assert a.upload("folds.csv").startswith(b"fold,accuracy")
    # the tutorial's samples: one clip, one waveform and one MFCC image per class
    audio = a.uploads_of("audio")
    assert len(audio) == 10 and "8_siren.wav" in audio
    assert a.upload("8_siren.wav")[:4] == b"RIFF"
    images = a.uploads_of("visualization")
    for name in results["class_names"]:  # plots.dataset_figures draws both pictures per class
        assert [n for n in images if name in n], f"no figure of {name} in {images}"
    assert all(a.upload(n).startswith(b"\x89PNG") for n in images)
    assert a.others["samples_experiment"] == info["experiment_key"]


def _sweep(hydra_sweep_runner: Any, tmp_path: Path, *overrides: str) -> Any:
    """Run ``python -m urbansound.run -m OVERRIDES`` in this process; returns the Optuna study."""
    import optuna

    from urbansound import run

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    runner = hydra_sweep_runner(
        calling_file=run.__file__,
        calling_module=None,
        task_function=run.main.__wrapped__,
        config_path="../conf",
        config_name="config",
        overrides=[*overrides, f"hydra.sweeper.storage={storage}"],
        temp_dir=tmp_path / "sweep",
    )
    runner.__enter__()  # not as a context: its __exit__ would delete the job directories
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


@pytest.mark.slow
def test_sweep_trials_are_linked_experiments_with_samples_logged_once(
    hydra_sweep_runner, tmp_path: Path, demo_dir: Path, feature_cache: Path, capsys
) -> None:
    study = _sweep(
        hydra_sweep_runner,
        tmp_path,
        "n_mfcc=13,20",
        *_demo(demo_dir, feature_cache),
        "tracking.mode=offline",
        "tracking.log_figures=false",
    )
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]

    archives = {}
    for t in trials:
        results = json.loads((Path(t.user_attrs["run_dir"]) / "results.json").read_text())
        key = results["tracking"]["experiment_key"]
        assert t.user_attrs["comet_experiment_key"] == key
        archives[t.number] = read_archive(results["tracking"]["archive"])
        a = archives[t.number]
        assert set(a.experiment["tags"]) == {
            "demo",
            "sweep",
            f"study:{study.study_name}",
            f"trial:{t.number}",
        }
        assert a.others["Name"] == f"{study.study_name}#{t.number}"
        assert (a.others["study_name"], a.others["trial_number"]) == (study.study_name, t.number)
        assert a.parameters["n_mfcc"] == a.parameters["features.n_mfcc"] == t.params["n_mfcc"]
        # Comet's optimization fields group the study
        assert a.others["optimizer_id"] == study.study_name
        assert a.others["optimizer_objective"] == "maximize"
        assert a.others["optimizer_metric"] == "mean_accuracy"
        assert a.others["optimizer_metric_value"] == pytest.approx(t.value)
        assert json.loads(a.others["optimizer_parameters"])["n_mfcc"] == t.params["n_mfcc"]
        # the curve Comet holds is the one Optuna's pruner saw
        assert a.metrics["test_accuracy"] == pytest.approx(t.intermediate_values)
        assert a.metrics["mean_accuracy"] == pytest.approx({3: t.value})
    # stable parameter names: the experiments of one study line up in Comet's comparison views
    assert set(archives[0].parameters) == set(archives[1].parameters)

    # the class samples are in one experiment of the sweep; the other one points to it
    with_audio = [n for n, a in archives.items() if a.uploads_of("audio")]
    assert len(with_audio) == 1
    first, other = archives[with_audio[0]], archives[1 - with_audio[0]]
    assert len(first.uploads_of("audio")) == 10
    assert other.others["samples_experiment"] == first.others["samples_experiment"]
    assert (
        first.others["samples_experiment"]
        == trials[with_audio[0]].user_attrs["comet_experiment_key"]
    )

    console = capsys.readouterr().out
    assert console.count("comet upload") == 1
    (line,) = [ln for ln in console.splitlines() if "comet upload" in ln]
    assert sorted(line.split()[2:]) == sorted(
        f"outputs/comet/{t.user_attrs['comet_experiment_key']}.zip" for t in trials
    )


def test_an_unusable_offline_dir_leaves_the_run_untracked_with_one_warning(
    tmp_path: Path, caplog
) -> None:
    not_a_dir = tmp_path / "comet"
    not_a_dir.write_text("a file where the archives should go")
    settings = _settings(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text('{"status": "complete", "mean_accuracy": 0.5}')
    with caplog.at_level(logging.WARNING):
        tracker = tracking.start(settings, run_dir=run_dir, config={"n_mfcc": 40})
        tracker.log_results({"status": "complete", "mean_accuracy": 0.5})
        info = tracker.finish(run_dir)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.startswith("Comet: tracking is off for this run")
    assert (info["mode"], info["experiment_key"], info["archive"]) == ("failed", None, None)
    recorded = json.loads((run_dir / "results.json").read_text())
    assert recorded["mean_accuracy"] == 0.5
    assert recorded["tracking"]["mode"] == "failed"
    assert recorded["tracking"]["errors"] == [warning]


def test_finish_logs_the_run_directory_and_records_the_experiment_in_results(
    tmp_path: Path,
) -> None:
    settings = settings_from_config(
        {
            "tracking": {"mode": "offline", "offline_dir": "comet", "log_model": True},
            "trial": {"study_name": "s", "number": 1},
        }
    )
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- n_mfcc=20\n")
    (run_dir / "run.log").write_text("the job's log\n")
    (run_dir / "fold_models.pt").write_bytes(b"weights")
    (run_dir / "results.json").write_text(json.dumps({"status": "pruned", "pruned_at_epoch": 2}))
    tracker = tracking.start(settings, run_dir=run_dir, config={"n_mfcc": 20})
    info = tracker.finish(run_dir)
    assert info["mode"] == "offline" and info["errors"] == []
    recorded = json.loads((run_dir / "results.json").read_text())
    assert recorded == {"status": "pruned", "pruned_at_epoch": 2, "tracking": info}
    a = read_archive(info["archive"])
    assert a.upload("hydra/overrides.yaml") == b"- n_mfcc=20\n"
    assert a.upload("run.log") == b"the job's log\n"
    assert a.uploads_of("model-element") == ["fold_models.pt"]
    assert (a.others["status"], a.others["pruned_at_epoch"]) == ("pruned", 2)
    assert set(a.experiment["tags"]) == {"sweep", "study:s", "trial:1", "pruned"}
    assert "optimizer_id" not in a.others  # a pruned trial has no objective value
    assert Path(info["archive"]) == tmp_path / "comet" / f"{info['experiment_key']}.zip"


@pytest.mark.slow
def test_a_failing_logging_call_leaves_the_optuna_trial_complete_with_its_value(
    hydra_sweep_runner, tmp_path: Path, demo_dir: Path, feature_cache: Path, monkeypatch
) -> None:
    """An in-process sweep (one trial) whose per-fold metrics cannot be logged."""

    def broken(self: tracking.Tracker, *args: Any) -> None:
        raise RuntimeError("metrics channel broken")

    monkeypatch.setattr(tracking.Tracker, "_log_fold_metrics", broken)
    study = _sweep(
        hydra_sweep_runner,
        tmp_path,
        "n_mfcc=13",
        *_demo(demo_dir, feature_cache),
        "tracking.mode=offline",
        "tracking.log_audio=false",
        "tracking.log_figures=false",
    )
    (trial,) = study.trials
    assert trial.state.name == "COMPLETE"
    job_dir = Path(trial.user_attrs["run_dir"])
    results = json.loads((job_dir / "results.json").read_text())
    assert results["status"] == "complete"
    assert trial.value == pytest.approx(results["mean_accuracy"])
    (error,) = results["tracking"]["errors"]
    assert "per-fold metrics" in error and "metrics channel broken" in error
    assert (job_dir / "run.log").read_text().count("metrics channel broken") == 1

    a = read_archive(results["tracking"]["archive"])
    assert not [m for m in a.metrics if m.startswith(("accuracy_fold_", "loss_fold_", "std_"))]
    assert a.metrics["test_accuracy"] == pytest.approx(trial.intermediate_values)
    assert json.loads(a.upload("confusion-matrix.json"))["matrix"] == _summed(results["folds"])
    assert a.others["optimizer_metric_value"] == pytest.approx(trial.value)
