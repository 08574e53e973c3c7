"""Conditional search spaces: a parameter is asked for only where its key exists.

A sweep over ``model: choice(mlp, random_forest, svm)`` with ``model.dropout``, ``model.C`` and
``model.n_estimators`` asks ``model.dropout`` only when the MLP was chosen, and so on. How:

1. **Groups first.** A swept key that names a config group (it is among
   ``hydra.runtime.choices`` of the composed config, or has a ``/``) is a *group parameter*.
   :func:`resolve_branches` composes the config for every combination of group choices (through
   the sweeper's ``compose``, the same composition the launcher does) and records, for each
   combination, which of the other swept keys exist there: a
   :class:`~urbansound.sweep.space.Branch`. A group that only exists under another choice
   (``model/kernel`` under ``model=svm``) is branched on inside that choice only.
2. **Define-by-run.** :meth:`~urbansound.sweep.space.SearchSpace.suggest` asks the group
   parameters in order, finds the branch, then asks that branch's keys only. A trial's
   parameters are exactly its branch's keys; TPE with ``group=True`` models each branch's
   parameters jointly; the dashboard shows no value for a key a trial does not have.
3. **Grid.** The grid of a conditional space is the union of the branches' grids
   (:mod:`urbansound.sweep.grid`).
4. **Validation.** :func:`validate_space` composes jobs before any trial exists, so that a key
   or value no trial can run stops the sweep at once (:func:`resolve_settings` does both).

A space with no group parameter whose keys all exist (every sweep before families) keeps
``study.ask(fixed_distributions)`` and Optuna's ``GridSampler`` unchanged.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from optuna.distributions import CategoricalDistribution

from urbansound.errors import ConfigError
from urbansound.sweep.grid import grid_n_trials
from urbansound.sweep.settings import SweepSettings
from urbansound.sweep.space import Branch, SearchSpace

# compose(job overrides) -> the job's composed config (with its ``hydra`` node); raises when the
# overrides do not compose (a missing group option, a key that is not there).
Compose = Callable[[list[str]], Any]
#: Validates a composed job config; raises ConfigError naming the key (the job's own checks).
Check = Callable[[Any], None]

# Combinations of group choices composed at most (a sweep over 3 groups of 10 options is 1000).
MAX_BRANCHES = 1000


def _tree(cfg: Any) -> Any:
    """A composed config as plain containers (unresolved: ``???`` and interpolations kept)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)
    return cfg


def has_key(tree: Mapping[str, Any], key: str) -> bool:
    """True when the dotted ``key`` exists in ``tree`` (a config as plain containers).

    A key whose value is ``???`` or an interpolation exists.
    """
    node: Any = tree
    for part in key.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def _dotted_keys(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every dotted key of a composed config's plain tree, ``hydra`` left out."""
    keys = []
    for key, value in tree.items():
        if not prefix and key == "hydra":
            continue
        keys.append(f"{prefix}{key}")
        if isinstance(value, Mapping):
            keys.extend(_dotted_keys(value, f"{prefix}{key}."))
    return keys


def _choices(tree: Mapping[str, Any]) -> Mapping[str, Any]:
    return ((tree.get("hydra") or {}).get("runtime") or {}).get("choices") or {}


def _compose_prefix(
    space: SearchSpace, compose: Compose, prefix: Sequence[tuple[str, Any]]
) -> Mapping[str, Any] | None:
    overrides = [*space.fixed, *(space.params[g].override(v) for g, v in prefix)]
    try:
        return _tree(compose(overrides))
    except Exception:
        return None


def resolve_branches(space: SearchSpace, compose: Compose) -> SearchSpace:
    """``space`` with its :class:`Branch` es, found by composing every group combination.

    Returns ``space`` unchanged (no branches) when no swept key is a group or when every swept
    key exists under every combination: such a space is asked as before.

    Raises
    ------
    ConfigError
        When the sweep's fixed overrides do not compose, when a swept key exists in no branch
        (a typo: ``nope.key``), when a group parameter is not a choice, or when there are more
        than :data:`MAX_BRANCHES` combinations.
    """
    root = _compose_prefix(space, compose, ())
    if root is None:
        try:
            compose(list(space.fixed))
        except Exception as exc:
            raise ConfigError(f"the sweep's overrides do not compose: {exc}") from None
    groups = [n for n in space.params if "/" in n or n in _choices(root or {})]
    for name in groups:
        if not isinstance(space.params[name].distribution, CategoricalDistribution):
            raise ConfigError(f"sweep key {name} is a config group: sweep it with choice(...)")
    others = [n for n in space.params if n not in groups]
    leaves: list[Branch] = []

    def walk(prefix: tuple[tuple[str, Any], ...], tree: Mapping[str, Any] | None) -> None:
        if len(leaves) >= MAX_BRANCHES:
            raise ConfigError(
                f"the sweep's group choices make more than {MAX_BRANCHES} combinations: "
                "sweep fewer config groups at once"
            )
        asked = {g for g, _ in prefix}
        if tree is not None:
            nxt = next(
                (g for g in groups if g not in asked and ("/" in g or g in _choices(tree))), None
            )
            present = [n for n in others if space.params[n].key.startswith("+")]
            present += [n for n in others if n not in present and has_key(tree, n)]
            keys = tuple(n for n in others if n in present)
        else:  # does not compose: its trials fail with Hydra's message
            nxt, keys = None, tuple(others)
        if nxt is None:
            leaves.append(Branch(prefix, keys, composes=tree is not None))
            return
        for value in space.params[nxt].grid_values():
            branch_prefix = (*prefix, (nxt, value))
            walk(branch_prefix, _compose_prefix(space, compose, branch_prefix))

    walk((), root)
    found = {n for b in leaves for n in b.names()}
    missing = [n for n in space.params if n not in found]
    if missing:
        close = difflib.get_close_matches(missing[0], _dotted_keys(root or {}), n=1)
        hint = (
            f"did you mean {close[0]}?"
            if close
            else f"check its spelling, or add it with +{missing[0]}=..."
        )
        raise ConfigError(
            f"the sweep's overrides do not compose: key {missing[0]} exists in no configuration "
            f"the sweep composes ({hint})"
        )
    if len(leaves) == 1 and set(leaves[0].names()) == set(space.params):
        return space
    if all(set(b.names()) == set(space.params) for b in leaves) and all(b.composes for b in leaves):
        return space  # groups swept, but every key everywhere: a plain product space
    return replace(space, branches=tuple(leaves))


def validate_space(space: SearchSpace, compose: Compose, check: Check | None = None) -> None:
    """Compose jobs before any trial exists, so that a bad key or value fails fast.

    Within each branch (the whole space when it has none), every value of every swept key is
    tried once (the others at their first value; an interval at both bounds) and, with
    ``check``, the composed config is validated as the job validates it (ranges, settings that
    depend on each other). A value that does not compose or is invalid is left to its trials
    (they FAIL with its message); a key none of whose values compose or pass the check in a
    branch that composes, or fixed overrides that fail, stop the sweep here: no trial is asked,
    no feature extracted.

    Raises
    ------
    ConfigError
        Naming the first error: the job's own line for an invalid value
        (``train.epochs must be an integer >= 1, got 0``), Hydra's message for one that does
        not compose.
    """

    def attempt(params: Mapping[str, Any]) -> None:
        cfg = compose(space.overrides(params))
        if check is not None:
            check(cfg)

    branches = space.branches or (Branch((), tuple(space.params)),)
    for branch in branches:
        if not branch.composes:
            continue
        names = [n for n in branch.names() if n not in dict(branch.choices)]
        values = {n: _values(space.params[n]) for n in names}
        base = {**dict(branch.choices), **{n: v[0] for n, v in values.items()}}
        try:
            attempt(base)
            continue
        except Exception as exc:
            first = exc
        if not values:
            raise _space_error(first) from None
        for name, options in values.items():
            errors = []  # the first error of each value that works in no try
            for value in options:
                # the value with the others at their first value, then with each other key's
                # other values (n_mfcc=60 needs features.n_mels=128, not 40)
                tries = [{**base, name: value}]
                tries += [
                    {**base, name: value, other: v}
                    for other, vs in values.items()
                    if other != name
                    for v in vs[1:]
                ]
                failed: BaseException | None = None
                for params in tries:
                    try:
                        attempt(params)
                    except Exception as exc:
                        failed = failed or exc
                        continue
                    failed = None
                    break
                if failed is not None:
                    errors.append(failed)
            if len(errors) == len(options):
                if len({str(e) for e in errors}) > 1:  # each value fails on its own
                    example = _space_error(errors[0])
                    raise ConfigError(
                        f"every value of sweep key {name} is invalid, e.g. {example}"
                    ) from None
                raise _space_error(errors[0]) from None


def _space_error(exc: BaseException) -> ConfigError:
    """The job's own line for an invalid value; Hydra's message for one that does not compose."""
    if isinstance(exc, ConfigError):
        return exc
    return ConfigError(f"the sweep's overrides do not compose: {exc}")


def _values(param: Any) -> list[Any]:
    """The values to try composing for a swept key: each choice, or the lower bound."""
    dist = param.distribution
    if hasattr(dist, "choices"):
        return list(dist.choices)
    return [dist.low, dist.high]


def resolve_settings(
    settings: SweepSettings, compose: Compose, check: Check | None = None
) -> SweepSettings:
    """``settings`` with its space's branches resolved and validated (see the module doc).

    A grid over a conditional space runs the union of its branches' grids once: ``n_trials``
    is capped at that union's size. ``check`` validates a composed job config (see
    :func:`validate_space`).
    """
    space = resolve_branches(settings.space, compose)
    validate_space(space, compose, check)
    if space is settings.space:
        return settings
    n_trials = settings.n_trials
    if settings.is_grid:
        n_trials = grid_n_trials(n_trials, space.grid_size())
    return replace(settings, space=space, n_trials=n_trials)
