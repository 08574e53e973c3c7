"""The feature kinds as options of the ``features`` config group: each kind composes with its own
schema (an embedding kind has no hand-made keys, BirdNET none of the ONNX file's), values are
checked in one line naming the key, and ``features.kind`` alone points to the group."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException

from urbansound.config.checks import settings_from_config
from urbansound.config.schema import config_error
from urbansound.config.settings import (
    EmbeddingFeatureSettings,
    EmbeddingSettings,
    FeatureSettings,
    OnnxEmbeddingSettings,
)
from urbansound.errors import ConfigError


def _settings(compose_cfg, overrides: list[str]):
    try:
        cfg = compose_cfg(overrides)
    except ConfigCompositionException as exc:
        raise config_error(exc) from None
    return settings_from_config(cfg)


def test_each_kind_composes_into_its_own_settings(compose_cfg) -> None:
    assert isinstance(_settings(compose_cfg, []).features, FeatureSettings)
    birdnet = _settings(
        compose_cfg,
        [
            "features=birdnet",
            "features.embedding.hop=1.5",
            "features.pooling=max",
            "features.embedding.concat_mfcc=40",
        ],
    ).features
    assert birdnet == EmbeddingFeatureSettings(
        kind="birdnet", embedding=EmbeddingSettings(hop=1.5, concat_mfcc=40), pooling="max"
    )
    onnx = _settings(
        compose_cfg,
        [
            "features=onnx",
            "features.embedding.path=m.onnx",
            "features.embedding.sample_rate=16000",
            "features.embedding.window_s=0.96",
        ],
    ).features
    assert onnx.kind == "onnx"
    assert onnx.embedding == OnnxEmbeddingSettings(path="m.onnx", sample_rate=16000, window_s=0.96)
    # A run's config.yaml (a plain dict) gives the same settings back.
    from omegaconf import OmegaConf

    cfg = compose_cfg(["features=birdnet", "features.embedding.hop=1.5"])
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert settings_from_config(plain).features.embedding.hop == 1.5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["features.kind=birdnet"], "features.kind=birdnet: write features=birdnet instead"),
        (["features=birdnet", "features.kind=mfcc"], "features.kind=mfcc: write features=mfcc"),
        (["features=birdnet", "features.kind=onnx"], "features.kind=onnx: write features=onnx"),
        (["features.kind=wavelet"], "features.kind must be one of mfcc, logmel, birdnet, onnx"),
        (["features=birdnet", "features.n_fft=1024"], "unknown key features.n_fft"),
        (
            ["features=birdnet", "features.embedding.hopp=1"],
            "unknown key features.embedding.hopp; did you mean features.embedding.hop?",
        ),
        (["features=birdnet", "features.embedding.path=m.onnx"], "unknown key features.embed"),
        (["features=birdnet", "features.embedding.hop=4"], "features.embedding.hop must be <="),
        (["features=birdnet", "features.embedding.hop=0"], "features.embedding.hop must be >"),
        (["features=birdnet", "features.embedding.hop=x"], "features.embedding.hop must be a"),
        (["features=birdnet", "features.pooling=median"], "features.pooling must be one of"),
        (["features=birdnet", "features.embedding.concat_mfcc=200"], "concat_mfcc must be an"),
        (["features=birdnet", "features.embedding.batch_size=0"], "batch_size must be an integ"),
        (["features=birdnet", "features.n_jobs=0"], "features.n_jobs must be a positive count"),
        (["features=onnx", "features.embedding.sample_rate=10"], "sample_rate must be an integ"),
        (
            ["features=onnx", "features.embedding.window_s=0.5", "features.embedding.hop=1"],
            "features.embedding.hop must be <= 0.5",
        ),
    ],
)
def test_bad_values_are_one_line_naming_the_key(compose_cfg, overrides, message) -> None:
    with pytest.raises(ConfigError) as err:
        _settings(compose_cfg, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_the_onnx_kind_needs_its_file_where_the_model_is_opened(compose_cfg, tmp_path) -> None:
    from urbansound.features.embeddings.stage import open_model

    s = _settings(compose_cfg, ["features=onnx"]).features  # composes alone, as every option
    with pytest.raises(ConfigError, match=r"features=onnx needs features\.embedding\.path"):
        open_model(s)
