"""The configuration a final fit trains: its source's, with the command line's overrides on top.

- :func:`source_model_choice`: before Hydra composes ``urbansound.fit``'s config, the model family
  of the source that ``fit.from`` names (``model=random_forest``), so that overrides such as
  ``model.n_estimators=500`` are composed against that family's schema
  (:func:`urbansound.config.app.hydra_main`'s ``composition_choices``);
- :func:`fit_configuration`: the composed config to the fit's options, its source
  (:func:`urbansound.experiment.fit_source.resolve_source`) and the resolved configuration to
  train: the source's, each key an override sets taken from the composed config
  (:func:`apply_overrides`), ``cv.folds`` cleared (:func:`without_cv_folds`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from urbansound.errors import ConfigError
from urbansound.experiment.fit_source import FitOptions, Source, fit_options, resolve_source

log = logging.getLogger("urbansound.fit")

__all__ = ["apply_overrides", "fit_configuration", "source_model_choice", "without_cv_folds"]


def source_model_choice(argv: Sequence[str]) -> list[str]:
    """``["model=<family>"]`` of the source that ``fit.from`` (``fit.study``, ``fit.trial``) in
    ``argv`` names, when it is no MLP and ``argv`` chooses no model; else empty.

    Empty too when there is no usable source: the task then says what is wrong with it (this
    runs before Hydra's logging is set up, so nothing is said here).
    """
    import importlib.resources

    from urbansound.config.overrides import parse_all

    try:
        parsed = parse_all([a for a in argv if "=" in a])
    except ConfigError:
        return []
    given = {o.key_or_group: o.value() for o in parsed if not o.is_delete()}
    if "model" in given or given.get("fit.from") is None:
        return []
    logging.disable(logging.INFO)  # resolving the source is said again by the task
    try:
        opts = fit_options(
            {k.removeprefix("fit."): v for k, v in given.items() if k.startswith("fit.")}
        )
        source = resolve_source(opts)
    except Exception:  # reported by the task, in one line
        return []
    finally:
        logging.disable(logging.NOTSET)
    family = (source.config.get("model") or {}).get("family", "mlp")
    if not isinstance(family, str) or family == "mlp":
        return []
    known = (importlib.resources.files("urbansound.conf") / "model" / f"{family}.yaml").is_file()
    return [f"model={family}"] if known else []


def fit_configuration(
    cfg: Any, overrides: Sequence[str]
) -> tuple[FitOptions, Source | None, dict[str, Any]]:
    """The fit's options, its source (None without ``fit.from``) and the resolved configuration
    to train, from the composed config ``cfg`` (a DictConfig) and the command line's
    ``overrides``.

    Raises
    ------
    ConfigError
        A bad ``fit`` node, a source that is not there, or an override fit cannot apply.
    """
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(plain, dict)
    opts = fit_options(plain.pop("fit", None))
    plain.pop("hydra", None)
    if opts.source is None:
        resolved = OmegaConf.to_container(OmegaConf.create(plain), resolve=True)
        assert isinstance(resolved, dict)
        return opts, None, without_cv_folds(resolved)
    source = resolve_source(opts)
    log.info(
        "fitting the configuration of %s%s",
        source.run_dir,
        f" (trial {source.trial} of study {source.study_name})" if source.trial is not None else "",
    )
    return opts, source, without_cv_folds(apply_overrides(source.config, cfg, overrides))


def without_cv_folds(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with ``cv.folds`` null: a fit trains on every fold (but ``cv.outer_fold``), so
    the folds a CV run tested on (``cv.folds=[10]``) neither apply nor clash with
    ``cv.outer_fold``. ``config`` itself is left as it was."""
    cv = config.get("cv")
    if isinstance(cv, dict) and cv.get("folds") is not None:
        log.info("cv.folds=%s does not apply to a fit: it trains on every fold", cv["folds"])
        config = {**config, "cv": {**cv, "folds": None}}
    return config


def apply_overrides(
    base: Mapping[str, Any], composed: Any, overrides: Sequence[str]
) -> dict[str, Any]:
    """``base`` (a resolved config) with the keys that ``overrides`` set taken from ``composed``.

    ``composed`` is the Hydra config composed with those overrides (a DictConfig). A group choice
    (``features=logmel``) replaces the whole group; a key that other keys interpolate
    (``n_mfcc``, read by ``features.n_mfcc``) sets those too. ``fit.*``, ``hydra.*`` and
    ``trial.*`` overrides are not configuration of the model. Returns plain containers with the
    ``trial`` node cleared (a fit is no trial) and no ``fit`` node.

    Raises
    ------
    ConfigError
        An override that deletes a key (``~key``).
    """
    from omegaconf import OmegaConf

    from urbansound.config.overrides import parse_all

    out = OmegaConf.create(dict(base))
    raw = OmegaConf.to_container(composed, resolve=False)
    assert isinstance(raw, dict)
    parsed = parse_all(overrides)
    for o in parsed:
        key = o.key_or_group
        if key.split(".")[0].split("/")[0] in ("fit", "hydra", "trial", "sweep"):
            continue
        if o.is_delete():
            raise ConfigError(f"~{key}: deleting keys is not supported by fit")
        keys = [key.replace("/", "."), *_followers(raw, "${" + key + "}")]
        for k in keys:
            value = OmegaConf.select(composed, k, throw_on_missing=False)
            if OmegaConf.is_config(value):
                value = OmegaConf.to_container(value, resolve=True)
            OmegaConf.update(out, k, value, merge=False, force_add=True)
    result = OmegaConf.to_container(out, resolve=True)
    assert isinstance(result, dict)
    result["trial"] = {"study_name": None, "storage": None, "number": None}
    result.pop("fit", None)
    return result


def _followers(node: Any, text: str, prefix: str = "") -> list[str]:
    """Dotted keys under ``node`` whose value is exactly the interpolation ``text``."""
    if isinstance(node, dict):
        out = []
        for k, v in node.items():
            out += _followers(v, text, f"{prefix}{k}.")
        return out
    return [prefix[:-1]] if node == text else []
