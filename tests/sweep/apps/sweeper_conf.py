"""``hydra.sweeper`` as the sweeper receives it: the plugin dataclass's defaults plus overrides."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


def sweeper_conf(**overrides: Any) -> dict[str, Any]:
    """Every key of ``UrbansoundSweeperConf`` (its defaults; auto sampler, no pruner), updated."""
    from hydra_plugins.urbansound_sweeper.config import (
        AutoSamplerConf,
        NopPrunerConf,
        UrbansoundSweeperConf,
    )

    node = OmegaConf.structured(UrbansoundSweeperConf)
    node.sampler = OmegaConf.structured(AutoSamplerConf)
    node.pruner = OmegaConf.structured(NopPrunerConf)
    conf = OmegaConf.to_container(node, resolve=True)
    assert isinstance(conf, dict)
    for key in ("_target_", "_recursive_", "defaults"):
        conf.pop(key, None)
    unknown = set(overrides) - set(conf)
    assert not unknown, f"not sweeper keys: {unknown}"
    conf.update(overrides)
    return conf
