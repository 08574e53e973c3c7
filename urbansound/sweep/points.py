"""Points of a search space given from outside: known configurations and earlier trials.

- :func:`parse_enqueue`: ``hydra.sweeper.enqueue`` (a list of override sets, or the path of a
  YAML file holding one) as override texts, each set checked for Hydra's grammar.
- :func:`enqueue_params`: one override set as the parameters of a trial of the space, each
  value checked against its key's distribution (:func:`fits`); a conditional space's set names
  its group choices, and its other keys must be keys of the branch they lead to (keys left out
  are drawn by the sampler).
- :func:`fits`: whether a value lies in an Optuna distribution (a warm start takes an earlier
  trial only when every parameter does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from urbansound.config.overrides import format_value, parse, parse_override
from urbansound.errors import ConfigError
from urbansound.sweep.space import SearchSpace, describe_distribution

__all__ = ["enqueue_params", "fits", "parse_enqueue"]

_NONE = object()


def _choice(distribution: CategoricalDistribution, value: Any) -> Any:
    """The choice equal to ``value`` (``1`` is the choice ``1.0``; ``True`` is not ``1``), or
    :data:`_NONE`."""
    for choice in distribution.choices:
        same_kind = isinstance(choice, bool) == isinstance(value, bool)
        if same_kind and type(choice) in (type(value), int, float) and choice == value:
            return choice
    return _NONE


_KEY = "hydra.sweeper.enqueue"


def _text(value: Any) -> str:
    """A value written in Hydra's override grammar (lists and mappings too)."""
    if isinstance(value, list | tuple):
        return "[" + ",".join(_text(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_text(v)}" for k, v in value.items()) + "}"
    return format_value(value)


def _one_set(item: Any, where: str) -> tuple[str, ...]:
    if isinstance(item, Mapping):
        texts = [f"{key}={_text(value)}" for key, value in item.items()]
    elif isinstance(item, list | tuple) and all(isinstance(t, str) for t in item):
        texts = list(item)
    else:
        raise ConfigError(
            f"{where}: {item!r} is no configuration; give a list of overrides "
            "([model=svm, model.C=10]) or a mapping ({model: svm, model.C: 10})"
        )
    if not texts:
        raise ConfigError(f"{where}: an empty configuration")
    for text in texts:
        try:
            parsed = parse_override(text)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if parsed is None:
            raise ConfigError(f"{where}: {text!r} is a sweep or a deletion, not one value")
    return tuple(texts)


def parse_enqueue(value: Any) -> tuple[tuple[str, ...], ...]:
    """``hydra.sweeper.enqueue`` as override sets (tuples of ``key=value`` texts).

    ``value`` is null, a list whose items are lists of overrides or mappings of key to value,
    or the path of a YAML file holding such a list.

    Raises
    ------
    ConfigError
        One line naming the key (or the file) and the item that is wrong.
    """
    if value is None:
        return ()
    where = _KEY
    if isinstance(value, str):
        import yaml

        path = Path(value).expanduser()
        where = f"{_KEY}={value}"
        try:
            value = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read the file ({exc.strerror or exc})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: not YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(
            f"{where} must be a non-empty list of configurations (each a list of overrides or a "
            f"mapping) or a YAML file holding one, got {value!r}"
        )
    return tuple(_one_set(item, f"{where} item {i}") for i, item in enumerate(value))


def fits(distribution: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` is a value of ``distribution`` (a choice, or within the bounds and on
    the step of a range)."""
    if isinstance(distribution, CategoricalDistribution):
        return _choice(distribution, value) is not _NONE
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    if isinstance(distribution, IntDistribution):
        if isinstance(value, float) and not value.is_integer():
            return False
        within = distribution.low <= value <= distribution.high
        return within and (int(value) - distribution.low) % distribution.step == 0
    if isinstance(distribution, FloatDistribution):
        if not distribution.low <= value <= distribution.high:
            return False
        if distribution.step is None:
            return True
        k = (value - distribution.low) / distribution.step
        return abs(k - round(k)) < 1e-8
    return False


def _choice_value(space: SearchSpace, name: str, text: str, value: Any) -> Any:
    """An enqueued value as the space's distribution holds it (list choices are their text)."""
    if not space.params[name].raw:
        return value
    written = "".join(text.split("=", 1)[1].split())
    for choice in space.params[name].distribution.choices:  # type: ignore[attr-defined]
        if "".join(str(choice).split()) == written:
            return choice
    return written


def enqueue_params(space: SearchSpace, overrides: Sequence[str], *, where: str) -> dict[str, Any]:
    """The parameters of a trial that runs the configuration ``overrides`` (``key=value``).

    Raises
    ------
    ConfigError
        A key the space does not sweep, a value outside its key's distribution, or (in a
        conditional space) a configuration without its group choices or with a key of another
        branch; one line naming ``where`` (the configuration) and the key.
    """
    params: dict[str, Any] = {}
    for text in overrides:
        parsed = parse_override(text)
        assert parsed is not None  # checked by parse_enqueue
        name = parse(text).get_key_element().lstrip("+")
        if name not in space.params:
            swept = ", ".join(space.params) or "none"
            raise ConfigError(
                f"{where}: {name} is not a swept key of this sweep (swept: {swept}); a known "
                "configuration sets swept keys only"
            )
        value = _choice_value(space, name, text, parsed[1])
        distribution = space.params[name].distribution
        if isinstance(distribution, CategoricalDistribution):
            value = _choice(distribution, value)
        if value is _NONE or not fits(distribution, value):
            raise ConfigError(
                f"{where}: {text} is not among the sweep's values of {name} "
                f"({describe_distribution(distribution)})"
            )
        params[name] = value
    if space.is_conditional:
        _check_branch(space, params, where)
    return params


def _check_branch(space: SearchSpace, params: Mapping[str, Any], where: str) -> None:
    """ConfigError unless ``params`` hold the group choices of a branch and only its keys."""
    for branch in space.branches:
        choices = dict(branch.choices)
        if all(params.get(g) == v and g in params for g, v in choices.items()):
            extra = sorted(set(params) - set(branch.names()))
            if extra:
                raise ConfigError(
                    f"{where}: {', '.join(extra)} do not exist under "
                    + ", ".join(f"{g}={v}" for g, v in choices.items())
                    + f" (its keys: {', '.join(branch.keys) or 'none'})"
                )
            return
    groups = sorted({g for b in space.branches for g, _ in b.choices})
    raise ConfigError(
        f"{where}: a known configuration of a conditional space names its group choices "
        f"({', '.join(groups)}) with values the sweep has"
    )
