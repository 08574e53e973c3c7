"""Config composition and validation: every bad value is one error line naming its key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from urbansound.config import Settings, settings_from_config
from urbansound.errors import ConfigError

from .conftest import REPO


def test_defaults_compose_to_the_tutorial_setup(compose_cfg) -> None:
    cfg = compose_cfg()
    for group in ("data", "features", "model", "train", "cv", "tracking"):
        assert group in cfg, group
    s = settings_from_config(cfg)
    assert isinstance(s, Settings)
    assert s.features.n_mfcc == 40
    assert s.features.kind == "mfcc" and s.features.pooling == "mean"
    assert (s.features.sr, s.features.n_fft, s.features.hop_length) == (22050, 2048, 512)
    assert s.model.hidden == (256, 256) and s.model.dropout == 0.5
    assert (s.train.epochs, s.train.batch_size, s.train.lr, s.train.eps) == (100, 32, 1e-3, 1e-7)
    assert s.cv.name == "folds" and s.cv.folds is None
    assert s.tracking.mode == "auto" and s.tracking.project_name == "urbansound8k"
    assert s.trial.number is None


def test_top_level_n_mfcc_override_reaches_features(compose_cfg) -> None:
    s = settings_from_config(compose_cfg(["n_mfcc=20"]))
    assert s.features.n_mfcc == 20


def test_output_dirs_follow_the_documented_layout(compose_cfg) -> None:
    from omegaconf import OmegaConf

    hydra_cfg = compose_cfg(return_hydra_config=True).hydra
    assert OmegaConf.to_container(hydra_cfg.run)["dir"].startswith("outputs/runs/${now:")
    sweep = OmegaConf.to_container(hydra_cfg.sweep)
    assert sweep["dir"].startswith("outputs/multirun/${now:")
    assert sweep["subdir"] == "${hydra.job.num}"


def test_tutorial_train_preset_turns_standardisation_off(compose_cfg) -> None:
    s = settings_from_config(compose_cfg(["train=tutorial"]))
    assert s.train.standardize is False
    assert s.train.epochs == 100


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["n_mfcc=200"], "n_mfcc (200) must be <= features.n_mels (128)"),
        (["features.hop_length=4096"], "features.hop_length (4096) must be <= features.n_fft"),
        (["features.pooling=maximum"], "features.pooling must be one of mean, mean_std, stats"),
        (["train.device=tpu"], "train.device must be one of auto, cpu, cuda; got 'tpu'"),
        (["train.epochs=-1"], "train.epochs must be an integer >= 0, got -1"),
        (["train.epochs=many"], "train.epochs must be an integer, got 'many'"),
        (["train.batch_size=0"], "train.batch_size must be an integer >= 1, got 0"),
        (["train.lr=0"], "train.lr must be > 0.0, got 0.0"),
        (["model.dropout=1.5"], "model.dropout must be <= 0.99, got 1.5"),
        (["model.hidden=[256,-3]"], "model.hidden[1] must be an integer >= 1, got -3"),
        (["model.activation=swish"], "model.activation must be one of relu, gelu, tanh, elu"),
        (["data.missing=ignore"], "data.missing must be one of error, skip; got 'ignore'"),
        (["features.deltas=3"], "features.deltas must be 0, 1 or 2, got 3"),
        (["features.fmax=20000"], "features.fmax (20000.0) must be <= sr/2 (11025.0) or null"),
        (["features.n_jobs=0"], "features.n_jobs must be a positive count or -1"),
        (["tracking.mode=cloud"], "tracking.mode must be one of auto, online, offline, disabled"),
        (["cv.folds=[1,11]"], "cv.folds must list folds between 1 and 10, got [1, 11]"),
    ],
)
def test_each_invalid_value_names_its_key(compose_cfg, overrides, message) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_config(compose_cfg(overrides))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_logmel_features_may_have_more_coefficients_than_mels(compose_cfg) -> None:
    # n_mfcc only constrains MFCC features; log-mel features ignore it.
    s = settings_from_config(compose_cfg(["features.kind=logmel", "n_mfcc=200"]))
    assert s.features.kind == "logmel"


def test_cli_reports_a_bad_value_as_one_line_without_traceback(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "urbansound.run", "train.epochs=-5", f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "error: train.epochs must be an integer >= 0, got -5" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
