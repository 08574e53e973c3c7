"""End to end: `python -m urbansound.run` on the demo corpus and on the real partial sample."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers import DEMO_CLIPS_PER_CLASS, cli_env, process_alive, start_cli

pytestmark = pytest.mark.slow

QUICK = [
    "train.epochs=3",
    "tracking.mode=disabled",
    "features.n_jobs=2",
    "hydra/sweeper=basic",
]


def _demo(demo_dir: Path) -> list[str]:
    return [f"data.demo_dir={demo_dir}", f"data.demo_clips_per_class={DEMO_CLIPS_PER_CLASS}"]


def _check_results(results: dict, *, n_folds: int) -> None:
    assert results["status"] == "complete"
    folds = results["folds"]
    assert len(folds) == n_folds
    accs = np.array([f["accuracy"] for f in folds])
    assert results["mean_accuracy"] == pytest.approx(accs.mean())
    assert results["std_accuracy"] == pytest.approx(accs.std())
    n_classes = len(results["class_names"])
    for f in folds:
        assert 0.0 <= f["accuracy"] <= 1.0
        assert np.isfinite(f["loss"])
        assert f["n_train"] + f["n_test"] == results["n_clips"]
        confusion = np.array(f["confusion"])
        assert confusion.shape == (n_classes, n_classes)
        assert confusion.sum() == f["n_test"]
        assert np.trace(confusion) / f["n_test"] == pytest.approx(f["accuracy"])
    assert len(results["history"]) == 3
    assert [h["epoch"] for h in results["history"]] == [1, 2, 3]
    for key in ("index", "features", "train", "total"):
        assert results["durations"][key] >= 0.0


def test_demo_run_writes_results_config_and_fold_table(run_cli, tmp_path, demo_dir) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli(*QUICK, *_demo(demo_dir), "n_mfcc=13", f"hydra.run.dir={run_dir}")
    console = proc.stdout + proc.stderr
    assert "DEMO" in console
    assert "mean" in console and "±" in console

    results = json.loads((run_dir / "results.json").read_text())
    assert results["dataset"] == "demo"
    assert results["protocol"] == "folds"
    assert results["n_clips"] == 10 * DEMO_CLIPS_PER_CLASS
    assert results["n_features"] == 13
    assert results["class_names"][8] == "siren"
    _check_results(results, n_folds=10)
    assert sorted(f["fold"] for f in results["folds"]) == list(range(1, 11))

    with (run_dir / "folds.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["fold"]) for r in rows] == [f["fold"] for f in results["folds"]]
    assert float(rows[0]["accuracy"]) == pytest.approx(results["folds"][0]["accuracy"])

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["features"]["n_mfcc"] == 13
    assert config["train"]["epochs"] == 3

    # every test clip's probabilities, by fold: they give back each fold's accuracy
    preds = np.load(run_dir / "predictions.npz")
    assert len(preds["clip"]) == results["n_clips"]  # each clip is tested once
    assert preds["probabilities"].shape == (results["n_clips"], 10)
    assert list(preds["class_names"]) == results["class_names"]
    hits = preds["probabilities"].argmax(axis=1) == preds["y_true"]
    for f in results["folds"]:
        mine = preds["fold"] == str(f["fold"])
        assert mine.sum() == f["n_test"]
        assert hits[mine].mean() == pytest.approx(f["accuracy"], abs=1e-12)


def test_real_partial_sample_runs_on_the_folds_it_has(run_cli, tmp_path, real_root) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli(
        *QUICK, f"data.root={real_root}", "data.missing=skip", f"hydra.run.dir={run_dir}"
    )
    results = json.loads((run_dir / "results.json").read_text())
    assert results["dataset"] == "urbansound8k"
    assert results["n_listed"] == 8732
    assert results["n_missing"] == 8732 - 164
    assert results["n_clips"] == 164
    assert results["empty_folds"] == [2]
    _check_results(results, n_folds=9)
    assert 2 not in [f["fold"] for f in results["folds"]]
    assert "8568" in proc.stdout + proc.stderr  # the missing count is reported


def test_real_sample_with_missing_files_stops_by_default(run_cli, tmp_path, real_root) -> None:
    proc = run_cli(*QUICK, f"data.root={real_root}", check=False)
    assert proc.returncode == 2
    assert "8568" in proc.stderr and "data.missing=skip" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_basic_sweeper_multirun_gives_one_job_dir_per_value(run_cli, tmp_path, demo_dir) -> None:
    sweep_dir = tmp_path / "sweep"
    run_cli("-m", *QUICK, *_demo(demo_dir), f"hydra.sweep.dir={sweep_dir}", "n_mfcc=13,20")
    for job, n in (("0", 13), ("1", 20)):
        results = json.loads((sweep_dir / job / "results.json").read_text())
        assert results["n_features"] == n
        _check_results(results, n_folds=10)


def test_real_sample_records_leaky_recordings(run_cli, tmp_path, real_root) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli(
        *QUICK, f"data.root={real_root}", "data.missing=skip", f"hydra.run.dir={run_dir}"
    )
    results = json.loads((run_dir / "results.json").read_text())
    assert {r["fsID"] for r in results["leaky_recordings"]} == {
        77751,
        106905,
        132016,
        176638,
        180937,
    }
    assert "fsID 77751 in folds 2, 7" in proc.stdout + proc.stderr


def test_empty_outer_fold_is_blamed_on_cv_outer_fold(run_cli, tmp_path, real_root) -> None:
    proc = run_cli(
        *QUICK, f"data.root={real_root}", "data.missing=skip", "cv.outer_fold=2", check=False
    )
    assert proc.returncode == 2
    assert "cv.outer_fold=2" in proc.stderr and "cv.folds" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_listed_fold_without_clips_stops_before_the_features(run_cli, tmp_path, real_root):
    cache = tmp_path / "cache"
    proc = run_cli(
        *QUICK,
        f"data.root={real_root}",
        "data.missing=skip",
        "cv.folds=[1,2]",  # fold 2 holds no clip of the sample
        f"features.cache_dir={cache}",
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cv.folds lists fold(s) [2]")
    assert "Traceback" not in proc.stderr
    assert not cache.exists()  # no clip was decoded: the error came first


def test_a_random_split_too_small_for_the_classes_stops_before_the_features(
    run_cli, tmp_path, demo_dir
):
    cache = tmp_path / "cache"
    proc = run_cli(
        *QUICK,
        *_demo(demo_dir),
        "cv=random_split",
        "cv.test_size=0.1",  # 6 of 60 clips: fewer than the 10 classes a stratified split needs
        f"features.cache_dir={cache}",
        check=False,
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot split 60 clips with cv.test_size=0.1")
    assert not cache.exists()


def test_unwritable_run_dir_is_one_line_and_leaves_nothing(run_cli, tmp_path, demo_dir) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").mkdir()  # a directory where results.json must go
    proc = run_cli(*QUICK, *_demo(demo_dir), f"hydra.run.dir={run_dir}", check=False)
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(run_dir / "results.json") in errors[0]
    assert "Traceback" not in proc.stderr
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    assert not (run_dir / "folds.csv").exists()


def test_dataset_figures_drawn_after_the_run_once_per_stage_settings(
    run_cli, tmp_path, demo_dir
) -> None:
    cache = f"features.cache_dir={tmp_path / 'cache' / 'features'}"
    sweep_dir = tmp_path / "sweep"
    run_cli(
        "-m",
        *QUICK,
        *_demo(demo_dir),
        cache,
        f"hydra.sweep.dir={sweep_dir}",
        "n_mfcc=13,20",
    )
    # in the cache directory chosen (features.cache_dir), not beside it: one entry for both
    (entry,) = (tmp_path / "cache" / "features" / "figures").iterdir()
    assert not (tmp_path / "cache" / "figures").exists()
    linked = sweep_dir / "figures" / "dataset"
    assert (linked / "classes_overview.png").stat().st_ino == (
        entry / "classes_overview.png"
    ).stat().st_ino
    assert len(list(linked.glob("class_*.wav"))) == 10
    for job in ("0", "1"):  # a job's own figures only; its durations say what they cost
        results = json.loads((sweep_dir / job / "results.json").read_text())
        assert set(results["durations"]) == {"index", "features", "train", "figures", "total"}
        assert not (sweep_dir / job / "figures" / "dataset").exists()
        names = {p.name for p in (sweep_dir / job / "figures").iterdir()}
        assert names == {"confusion_matrix.png", "epoch_curves.png"}


def test_hydra_verbose_shows_our_debug_lines_not_matplotlibs(run_cli, tmp_path, demo_dir) -> None:
    run_dir = tmp_path / "run"
    cache = f"features.cache_dir={tmp_path / 'cache' / 'features'}"  # figures drawn afresh
    proc = run_cli(
        *QUICK, *_demo(demo_dir), cache, "hydra.verbose=true", f"hydra.run.dir={run_dir}"
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    debug = [ln for ln in lines if "[DEBUG]" in ln]
    assert any("[urbansound.run][DEBUG] - durations (s): index" in ln for ln in debug)
    # the dataset figures (matplotlib) were drawn in this process (without the quieting its
    # font scan logs ~300 DEBUG lines here), yet no library line is shown
    assert (run_dir / "figures" / "dataset" / "classes_overview.png").is_file()
    chatty = [ln for ln in debug if "[matplotlib" in ln or "[PIL" in ln]
    assert chatty == [], chatty[:3]


def test_a_config_error_leaves_no_run_directory_behind(run_cli, tmp_path) -> None:
    for bad in ("+train.epoch=3", "train.epochs=0", "n_mfcc=200"):
        proc = run_cli(bad, "tracking.mode=disabled", check=False)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    left = list((tmp_path / "outputs").rglob("*"))
    assert not [p for p in left if p.is_file() or p.name == ".hydra"], left  # Hydra's run dirs


def test_a_wrong_data_root_is_said_before_torch_is_imported(tmp_path) -> None:
    # torch takes 1.5 s of a 4 s wait for a typo in data.root: data errors come first now
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "urbansound.run",
         f"data.root={tmp_path / 'nowhere'}", "tracking.mode=disabled"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [errors[0]] and f"data.root={tmp_path / 'nowhere'} does not exist" in errors[0]
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}  # fmt: skip
    assert "urbansound.data.index" in imported and "torch" not in imported


def _children_of(pid: int) -> list[int]:
    """Live child processes of ``pid`` (Linux /proc), zombies left out."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc; groups fork on Linux only")
def test_ctrl_c_during_training_is_one_line_exit_130_and_leaves_nothing_running(
    tmp_path, demo_dir
) -> None:
    run_dir = tmp_path / "run"
    proc = start_cli(
        "urbansound.run", *QUICK, *_demo(demo_dir), "train.epochs=100000", "train.threads=2",
        "progress=none", f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not _children_of(proc.pid):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)  # training has started once its child group exists
        children = _children_of(proc.pid)
        assert children, "training never started"
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends: the whole process group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    assert "Traceback" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last == (
        f"error: interrupted; {run_dir} holds no results.json (its config.yaml and log stay); "
        "run the same command to start again"
    )
    assert not (run_dir / "results.json").exists() and (run_dir / "config.yaml").exists()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(process_alive(c) for c in children):
        time.sleep(0.1)
    assert not any(process_alive(c) for c in children), "a training child outlived the run"
    assert not [p for p in run_dir.rglob("*.tmp")]
