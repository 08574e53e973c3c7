"""Conditional search spaces: a parameter is asked for only where its key exists.

A sweep over ``model: choice(mlp, random_forest, svm)`` with ``model.dropout``, ``model.C`` and
``model.n_estimators`` asks ``model.dropout`` only when the MLP was chosen, and so on. How:

1. **Groups first.** A swept key that names a config group (it is among
   ``hydra.runtime.choices`` of the composed config, or has a ``/``) is a *group parameter*.
   :func:`resolve_branches` composes the config for every combination of group choices (through
   the sweeper's ``compose``, the same composition the launcher does) and records, for each
   combination, which of the other swept keys exist there: a :class:`Branch`. A group that
   only exists under another choice (``model/kernel`` under ``model=svm``) is branched on inside
   that choice only.
2. **Define-by-run.** :meth:`SearchSpace.suggest` asks the group parameters in order through
   Optuna's public ``trial.suggest_*``, finds the branch, then asks that branch's keys only. A
   trial's parameters are exactly its branch's keys; TPE with ``group=True`` models each
   branch's parameters jointly; the dashboard shows no value for a key a trial does not have.
3. **Grid.** The grid of a conditional space is the union of the branches' grids (each branch's
   group choices times the product of its keys' values): :class:`BranchGridSampler`.

A space with no group parameter whose keys all exist (every sweep before families) keeps
``study.ask(fixed_distributions)`` and Optuna's ``GridSampler`` unchanged.
"""

from __future__ import annotations

import difflib
import itertools
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from urbansound.errors import ConfigError
from urbansound.sweep import EXCESS_ATTR
from urbansound.sweep._compat import set_trial_system_attr

if TYPE_CHECKING:
    from urbansound.sweep.settings import SweepSettings
    from urbansound.sweep.space import SearchSpace

# compose(job overrides) -> the job's composed config (with its ``hydra`` node); raises when the
# overrides do not compose (a missing group option, a key that is not there).
Compose = Callable[[list[str]], Any]
#: Validates a composed job config; raises ConfigError naming the key (the job's own checks).
Check = Callable[[Any], None]

# Combinations of group choices composed at most (a sweep over 3 groups of 10 options is 1000).
MAX_BRANCHES = 1000


@dataclass(frozen=True)
class Branch:
    """One combination of group choices and the swept keys that exist under it.

    Attributes
    ----------
    choices:
        ``(group parameter, value)`` pairs in the order they are asked.
    keys:
        The other swept parameters that exist in this branch's config, in the space's order.
    composes:
        False when the branch's config did not compose (a typo in a group option): its trials
        run and fail with Hydra's message, and every key is asked.
    """

    choices: tuple[tuple[str, Any], ...]
    keys: tuple[str, ...]
    composes: bool = True

    def names(self) -> tuple[str, ...]:
        """Every parameter a trial of this branch has: its group choices, then its keys."""
        return (*(g for g, _ in self.choices), *self.keys)


def suggest(trial: Any, name: str, distribution: Any) -> Any:
    """``trial.suggest_*`` for ``distribution`` (Optuna's public define-by-run API)."""
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, list(distribution.choices))
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    raise ConfigError(f"sweep key {name}: cannot ask for a {type(distribution).__name__}")


def suggest_branch(space: SearchSpace, trial: Any) -> dict[str, Any]:
    """Ask ``trial`` for its group choices, then for the keys of the branch they lead to.

    Returns the trial's parameters (name -> value), exactly the branch's :meth:`Branch.names`.
    """
    params: dict[str, Any] = {}
    prefix: tuple[tuple[str, Any], ...] = ()
    while True:
        candidates = [b for b in space.branches if b.choices[: len(prefix)] == prefix]
        if not candidates:  # a value outside the branches (an enqueued trial): no more groups
            branch = None
            break
        leaf = [b for b in candidates if len(b.choices) == len(prefix)]
        if leaf:
            branch = leaf[0]
            break
        group = candidates[0].choices[len(prefix)][0]
        value = suggest(trial, group, space.params[group].distribution)
        params[group] = value
        prefix = (*prefix, (group, value))
    keys = branch.keys if branch is not None else tuple(n for n in space.params if n not in params)
    for name in keys:
        params[name] = suggest(trial, name, space.params[name].distribution)
    return params


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


def branch_grid(space: SearchSpace) -> list[dict[str, Any]]:
    """The grid of a conditional space: every branch's choices times its keys' value product.

    Points are in a stable order (branches in ask order, keys' values in written order), so a
    grid point's index means the same point in every worker and every resumed run.
    """
    points: list[dict[str, Any]] = []
    for branch in space.branches:
        fixed = dict(branch.choices)
        values = [space.params[n].grid_values() for n in branch.keys]
        for combo in itertools.product(*values):
            points.append({**fixed, **dict(zip(branch.keys, combo, strict=True))})
    return points


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
        n_trials = min(n_trials, len(branch_grid(space)))
    return replace(settings, space=space, n_trials=n_trials)


class BranchGridSampler(optuna.samplers.BaseSampler):
    """Optuna's grid sampler for a conditional space: one trial per point of the branches' union.

    Each trial gets a point (in a seeded order) that no finished or running trial has, picked
    by its number so that workers asking at once get different points. Points are identified by
    their index in :func:`branch_grid`, stored as the trial's ``grid_id`` system attribute like
    Optuna's ``GridSampler`` does. A trial queued with fixed parameters (a retry) keeps them.
    """

    def __init__(self, points: Sequence[Mapping[str, Any]], seed: int | None = 0) -> None:
        self._points = [dict(p) for p in points]
        self._keys = [json.dumps(p, sort_keys=True, default=str) for p in self._points]
        self._order = list(range(len(self._points)))
        random.Random(seed).shuffle(self._order)

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return {}

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
        return {}

    def before_trial(self, study: Any, trial: Any) -> None:
        attrs = trial.system_attrs
        if "grid_id" in attrs or "fixed_params" in attrs:
            return
        taken: set[int] = set()
        running: set[int] = set()
        for t in study.get_trials(deepcopy=False):
            if t.number == trial.number or t.system_attrs.get(EXCESS_ATTR):
                continue
            if "grid_id" in t.system_attrs:
                gid = int(t.system_attrs["grid_id"])
            elif t.params:
                key = json.dumps(dict(t.params), sort_keys=True, default=str)
                gid = self._keys.index(key) if key in self._keys else -1
            else:
                continue
            (running if t.state == optuna.trial.TrialState.RUNNING else taken).add(gid)
        free = [i for i in self._order if i not in taken and i not in running]
        free = free or [i for i in self._order if i not in taken] or self._order
        # Workers that ask at the same moment see the same free points: trial k takes the k-th
        # point of the seeded order when it is free (as Optuna's GridSampler does), else the
        # free point its number picks, so simultaneous asks rarely draw the same point (the
        # later of two that do yields without running).
        preferred = self._order[trial.number % len(self._order)]
        grid_id = preferred if preferred in free else free[trial.number % len(free)]
        set_trial_system_attr(study, trial, "grid_id", grid_id)

    def sample_independent(
        self, study: Any, trial: Any, param_name: str, param_distribution: Any
    ) -> Any:
        gid = trial.system_attrs.get("grid_id")
        point = self._points[int(gid)] if gid is not None else {}
        if param_name not in point:
            raise ConfigError(
                f"grid point {gid} has no value for {param_name}: the branches changed since "
                "the study started; use another hydra.sweeper.study_name"
            )
        return point[param_name]
