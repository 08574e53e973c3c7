"""Search spaces: Hydra's override grammar -> Optuna distributions.

:func:`parse_param` turns one override (``n_mfcc=20,40,60``, ``model.dropout=interval(0.1,0.6)``,
``train.lr=tag(log,interval(1e-4,1e-2))``, ``train.batch_size=choice(16,32,64)``,
``features.n_mels=range(32,129,32)``, ``model.hidden=choice([256,256],[512,256])``,
``int(interval(...))``) into an Optuna distribution. ``range(start, stop, step)`` excludes
``stop`` for every sampler (as in Python and Hydra's basic sweeper): ``range(10,50,10)`` is 10,
20, 30, 40 for the grid and for TPE alike. Overrides are read by the package's one parser,
:mod:`urbansound.config.overrides`.

A :class:`SearchSpace` is asked define-by-run (:meth:`SearchSpace.suggest`, Optuna's public
``trial.suggest_*``). A conditional space (keys that exist only under some config-group choices)
carries its :class:`Branch` es, found by :mod:`urbansound.sweep.conditional`: a trial asks its
group choices first, then only the keys of the branch they lead to, and its grid is the union of
the branches' grids (:meth:`SearchSpace.branch_grid`).
"""

from __future__ import annotations

import decimal
import hashlib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from urbansound.config.overrides import format_value, override_key, parse
from urbansound.errors import ConfigError

# Task overrides that do not change a trial's result: left out of the derived study name.
OPERATIONAL_KEYS = (
    "hydra.",
    "trial.",
    "tracking.",
    "sweep",
    "features.cache_dir",
    "features.n_jobs",
    "features.embedding.batch_size",  # windows per network call: memory, not results
    "data.demo_dir",
    "train.device",
    "train.threads",
)


@dataclass(frozen=True)
class Param:
    """One swept key.

    Attributes
    ----------
    key:
        The override's left-hand side as written (``n_mfcc``, ``+extra``, ``model``).
    name:
        The Optuna parameter name (``key`` without ``+``/``++``).
    distribution:
        Where Optuna draws values from.
    raw:
        Values are Hydra override text (list or dict choices) and are written verbatim.
    """

    key: str
    name: str
    distribution: BaseDistribution
    raw: bool = False

    def override(self, value: Any) -> str:
        """The job override that sets this key to ``value``."""
        return f"{self.key}={value if self.raw else format_value(value)}"

    def grid_values(self) -> list[Any]:
        """Every value of a discrete distribution, in order; ConfigError for a continuous one."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return list(d.choices)
        if isinstance(d, IntDistribution):
            return list(range(d.low, d.high + 1, d.step))
        if isinstance(d, FloatDistribution) and d.step is not None:
            low, step = decimal.Decimal(repr(d.low)), decimal.Decimal(repr(d.step))
            n = int((decimal.Decimal(repr(d.high)) - low) / step) + 1
            return [float(low + k * step) for k in range(n)]
        raise ConfigError(
            f"sweep key {self.key}: a grid needs discrete values, got a continuous "
            f"{type(d).__name__}; use choice(...) or range(...), or another sampler "
            "(hydra/sweeper/sampler=tpe) with hydra.sweeper.n_trials"
        )


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


@dataclass(frozen=True)
class SearchSpace:
    """The swept keys and the overrides every job gets unchanged.

    ``branches`` is empty for a plain product space; for a conditional one (config-group
    choices under which only some keys exist) it lists every combination of group choices and
    its keys (set by :func:`urbansound.sweep.conditional.resolve_branches`).
    """

    params: dict[str, Param]
    fixed: tuple[str, ...] = ()
    branches: tuple[Branch, ...] = ()

    @property
    def is_conditional(self) -> bool:
        """True when trials ask different keys depending on their group choices."""
        return bool(self.branches)

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Ask ``trial`` (an ``optuna.Trial``) for its parameters, define-by-run.

        A conditional space asks the group choices first, then only the keys of the branch they
        lead to. Returns the trial's parameters (name -> value): a branch's :meth:`Branch.names`,
        or every swept key of a plain space.
        """
        if not self.is_conditional:
            return {name: suggest(trial, name, p.distribution) for name, p in self.params.items()}
        params: dict[str, Any] = {}
        prefix: tuple[tuple[str, Any], ...] = ()
        while True:
            candidates = [b for b in self.branches if b.choices[: len(prefix)] == prefix]
            if not candidates:  # a value outside the branches (an enqueued trial): no more groups
                branch = None
                break
            leaf = [b for b in candidates if len(b.choices) == len(prefix)]
            if leaf:
                branch = leaf[0]
                break
            group = candidates[0].choices[len(prefix)][0]
            value = suggest(trial, group, self.params[group].distribution)
            params[group] = value
            prefix = (*prefix, (group, value))
        keys = (
            branch.keys if branch is not None else tuple(n for n in self.params if n not in params)
        )
        for name in keys:
            params[name] = suggest(trial, name, self.params[name].distribution)
        return params

    def distributions(self) -> dict[str, BaseDistribution]:
        """Parameter name -> its distribution (``study.ask(fixed_distributions=...)``)."""
        return {name: p.distribution for name, p in self.params.items()}

    def is_discrete(self) -> bool:
        """True when every swept key has finitely many values (a grid is possible)."""
        try:
            self.grid()
        except ConfigError:
            return False
        return True

    def grid(self) -> dict[str, list[Any]]:
        """Parameter name -> its grid values, in order (ConfigError for a continuous key)."""
        return {name: p.grid_values() for name, p in self.params.items()}

    def branch_grid(self) -> list[dict[str, Any]]:
        """The grid of a conditional space: every branch's choices times its keys' value product.

        Points are in a stable order (branches in ask order, keys' values in written order), so a
        grid point's index means the same point in every worker and every resumed run.
        """
        points: list[dict[str, Any]] = []
        for branch in self.branches:
            fixed = dict(branch.choices)
            values = [self.params[n].grid_values() for n in branch.keys]
            for combo in itertools.product(*values):
                points.append({**fixed, **dict(zip(branch.keys, combo, strict=True))})
        return points

    def grid_size(self) -> int:
        """Grid points: the product of every key's values, or the branches' union's size."""
        if self.is_conditional:
            return len(self.branch_grid())
        return math.prod(len(v) for v in self.grid().values())

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The job's overrides: the fixed ones, then one per swept key the trial has."""
        if not self.is_conditional:
            return [*self.fixed, *(p.override(params[n]) for n, p in self.params.items())]
        swept = (p.override(params[n]) for n, p in self.params.items() if n in params)
        return [*self.fixed, *swept]

    def describe(self) -> dict[str, str]:
        """Parameter name -> a readable, stable description of its distribution."""
        return {name: _describe(p.distribution) for name, p in sorted(self.params.items())}

    def to_json(self) -> dict[str, Any]:
        """Parameter name -> its distribution as a JSON object (``distribution_to_json``)."""
        return {name: json.loads(text) for name, text in self.describe().items()}


def _describe(d: BaseDistribution) -> str:
    return optuna.distributions.distribution_to_json(d)


def describe_distribution(d: BaseDistribution) -> str:
    """A distribution as a reader writes it: ``choice(20, 40)``, ``interval(0.1, 0.6)``,
    ``range(32, 128, step 32)``, with ``log`` where it is log-scaled."""
    if isinstance(d, CategoricalDistribution):
        return f"choice({', '.join(map(str, d.choices))})"
    if isinstance(d, IntDistribution | FloatDistribution):
        kind = "range" if d.step is not None and not isinstance(d, IntDistribution) else "interval"
        if isinstance(d, IntDistribution) and d.step != 1:
            kind = "range"
        step = f", step {d.step}" if kind == "range" else ""
        return f"{'log ' if d.log else ''}{kind}({d.low}, {d.high}{step})"
    return type(d).__name__


def suggest(trial: Any, name: str, distribution: BaseDistribution) -> Any:
    """``trial.suggest_*`` for ``distribution`` (Optuna's public define-by-run API).

    Returns the value drawn (or fixed, for a queued trial); ConfigError for a distribution
    type Optuna has no ``suggest_*`` for.
    """
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


def parse_param(text: str) -> Param | None:
    """The swept key of one override (``key=<sweep>``), or None when it sets a single value.

    Raises
    ------
    ConfigError
        For a sweep Optuna cannot draw from (an empty range, ``tag(log, ...)`` on a choice or
        below zero, an unknown tag), naming the override.
    """
    from hydra.core.override_parser.types import (
        ChoiceSweep,
        IntervalSweep,
        RangeSweep,
        Transformer,
    )

    override = parse(text)
    if not override.is_sweep_override():
        return None
    key = override.get_key_element()
    name = key.lstrip("+")
    sweep = override.value()
    tags = set(getattr(sweep, "tags", set()) or set())
    unknown = tags - {"log"}
    if unknown:
        raise ConfigError(f"{text}: unknown tag {sorted(unknown)}; the sweeper knows tag(log, ...)")
    log_scale = "log" in tags

    if isinstance(sweep, ChoiceSweep) or (isinstance(sweep, RangeSweep) and sweep.shuffle):
        if log_scale:
            raise ConfigError(f"{text}: tag(log, ...) needs an interval or a range, not a choice")
        values = list(override.sweep_iterator(transformer=Transformer.identity))
        if not values:
            raise ConfigError(f"{text}: the sweep has no values")
        raw = any(isinstance(v, list | dict) for v in values)
        if raw:
            values = list(override.sweep_iterator(transformer=Transformer.encode))
        if isinstance(sweep, RangeSweep):
            values = sorted(values)
        if len({json.dumps(v) for v in values}) != len(values):
            raise ConfigError(f"{text}: a value is listed twice")
        return Param(key, name, CategoricalDistribution(values), raw=raw)

    if isinstance(sweep, RangeSweep):
        return Param(key, name, _range_distribution(text, sweep, log_scale=log_scale))

    if isinstance(sweep, IntervalSweep):
        low, high = sweep.start, sweep.end
        if low is None or high is None or not low < high:
            raise ConfigError(f"{text}: interval(low, high) needs low < high")
        if log_scale and low <= 0:
            raise ConfigError(f"{text}: tag(log, interval(...)) needs a low bound above 0")
        if isinstance(low, int) and isinstance(high, int):
            return Param(key, name, IntDistribution(low, high, log=log_scale))
        return Param(key, name, FloatDistribution(float(low), float(high), log=log_scale))

    raise ConfigError(f"{text}: unsupported sweep {type(sweep).__name__}")


def _range_distribution(text: str, sweep: Any, *, log_scale: bool) -> BaseDistribution:
    """``range(start, stop, step)``: start, start + step, ... strictly before stop."""
    start, stop, step = sweep.start, sweep.stop, sweep.step
    d_start, d_stop, d_step = (decimal.Decimal(repr(v)) for v in (start, stop, step))
    if d_step == 0:
        raise ConfigError(f"{text}: range step must not be 0")
    n = math.ceil((d_stop - d_start) / d_step)
    if n <= 0:
        raise ConfigError(f"{text}: the range has no values")
    last = d_start + (n - 1) * d_step
    low, high, step_abs = min(d_start, last), max(d_start, last), abs(d_step)
    is_int = all(isinstance(v, int) for v in (start, stop, step))
    if log_scale:
        if not is_int or step_abs != 1:
            raise ConfigError(
                f"{text}: tag(log, range(...)) needs integers with step 1; "
                "use tag(log, interval(...)) for floats"
            )
        if low <= 0:
            raise ConfigError(f"{text}: tag(log, range(...)) needs values above 0")
        return IntDistribution(int(low), int(high), log=True)
    if n == 1:
        value = int(low) if is_int else float(low)
        return CategoricalDistribution([value])
    if is_int:
        return IntDistribution(int(low), int(high), step=int(step_abs))
    return FloatDistribution(float(low), float(high), step=float(step_abs))


def build_search_space(
    params: Mapping[str, Any] | None, arguments: Sequence[str] = ()
) -> SearchSpace:
    """The search space of ``hydra.sweeper.params`` plus the command line's overrides.

    A command-line override of a key replaces that key's entry in ``params``. Overrides that set
    a single value are passed to every job unchanged.
    """
    entries: list[str] = []
    for key, value in (params or {}).items():
        if isinstance(value, str):
            entries.append(f"{key}={value}")
        elif value is None or isinstance(value, bool | int | float):
            entries.append(f"{key}={format_value(value)}")
        else:
            raise ConfigError(
                f"hydra.sweeper.params.{key} must be an override string such as "
                f"'choice(a,b)' or '20,40,60', got {value!r}"
            )
    entries.extend(arguments)
    swept: dict[str, Param] = {}
    fixed: dict[str, str] = {}
    for text in entries:
        param = parse_param(text)
        if param is None:
            key = parse(text).get_key_element()
            swept.pop(key.lstrip("+~"), None)
            fixed[key] = text
        else:
            fixed = {k: v for k, v in fixed.items() if k.lstrip("+~") != param.name}
            swept[param.name] = param
    return SearchSpace(params=swept, fixed=tuple(fixed.values()))


def derive_study_name(
    space: SearchSpace,
    task_overrides: Sequence[str],
    *,
    identity: Mapping[str, Any] | None = None,
) -> str:
    """A stable study name for a sweep whose file or command line names none.

    ``<swept keys>-<hash>``, the hash over the search space, the result-changing task overrides
    and ``identity`` (the sampler and pruner nodes): the same command reopens the same study,
    another sampler, pruner or task starts another one.
    """
    relevant = sorted(o for o in task_overrides if not _is_operational(o))
    payload: dict[str, Any] = {"space": space.describe(), "overrides": relevant}
    if identity is not None:
        payload["identity"] = identity
    digest = hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    names = "+".join(sorted(space.params)) or "sweep"
    return f"{names[:60]}-{digest[:8]}"


def _is_operational(override: str) -> bool:
    key = override_key(override)
    if key.startswith("hydra.sweeper.params"):
        return False  # the search space itself
    return any(key == k.rstrip(".") or key.startswith(k) for k in OPERATIONAL_KEYS)
