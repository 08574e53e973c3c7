"""Optuna sweeps: search spaces from Hydra's override grammar, studies, the trial bridge, pruning.

The Hydra side is the thin sweeper in ``hydra_plugins/urbansound_sweeper``; everything else lives
here. A sweep is an Optuna study in a persistent storage:

- **Search space.** :func:`parse_param` turns one override (``n_mfcc=20,40,60``,
  ``model.dropout=interval(0.1,0.6)``, ``train.lr=tag(log,interval(1e-4,1e-2))``,
  ``train.batch_size=choice(16,32,64)``, ``features.n_mels=range(32,129,32)``,
  ``model.hidden=choice([256,256],[512,256])``, ``int(interval(...))``) into an Optuna
  distribution. ``range(start, stop, step)`` excludes ``stop`` for every sampler (as in Python and
  Hydra's basic sweeper): ``range(10,50,10)`` is 10, 20, 30, 40 for the grid and for TPE alike.
- **Studies.** ``create_study(load_if_exists=True)`` in ``hydra.sweeper.storage`` (SQLite by
  default, any SQLAlchemy URL such as PostgreSQL, or a file path for Optuna's journal storage).
  The default study name is derived from the search space and the task overrides that change
  results, so the same command reopens the same study.
- **Trials.** ``study.ask(fixed_distributions=...)``; the job runs through Hydra's launcher with
  ``trial.study_name``, ``trial.storage`` and ``trial.number`` overrides; ``study.tell`` records
  COMPLETE (the returned mean CV accuracy), PRUNED or FAIL (the error in the ``error`` user
  attribute and ``error.txt`` in the job directory). Job numbers are trial numbers, so a resumed
  sweep never reuses an earlier job directory name.
- **Resume.** ``n_trials`` is the size the study should reach: COMPLETE, PRUNED and FAIL trials
  of earlier runs count. A worker records a heartbeat for its running trial; a trial whose
  heartbeat stopped (the process was killed) is failed and queued again by Optuna's
  ``fail_stale_trials`` and ``RetryHeartbeatStaleTrialCallback``, and the queued copy replaces it
  in the count. Ctrl-C does the same at once.
- **Workers.** ``n_jobs`` worker processes, each asking for its next trial as soon as its last one
  ends (no batches). Several machines run the same command against a PostgreSQL storage; the
  storage is the only coordination. A grid assigns grid points by trial number, so two workers
  never run the same point.
- **Failures.** A FAIL trial is final (``retry_failed`` queues the study's failed trials again);
  once more than ``max_failure_rate * n_trials`` trials failed no new trial starts and the sweep
  ends with an error after its summary.
- **Seeds.** The first worker on a new study uses the configured seed, so a sweep is
  reproducible; other workers and resumed runs derive theirs (:func:`derive_seed`) so that they do
  not replay draws already made. Grid and QMC keep the seed: their points follow trial numbers.
- **Job side.** :func:`epoch_reporter` reopens the trial in the job process, reports the mean CV
  accuracy per epoch and raises :class:`~urbansound.errors.TrialPruned` when the pruner says so;
  :func:`set_trial_attrs` stores links (run directory, Comet experiment key).
"""

from __future__ import annotations

import contextlib
import decimal
import hashlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import shlex
import socket
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from urbansound.config import TrialSettings
from urbansound.errors import ConfigError, TrialPruned, UrbansoundError

log = logging.getLogger(__name__)

GRID_SAMPLER = "optuna.samplers.GridSampler"
TPE_SAMPLER = "optuna.samplers.TPESampler"
AUTO_SAMPLER = "urbansound.sweep.auto_sampler"
NOP_PRUNER = "optuna.pruners.NopPruner"
# Samplers whose draws are indexed by trial number: every worker and every resumed run must use
# the same seed, or two of them would map one grid id / sequence index to different points.
_SEED_SHARED = frozenset({GRID_SAMPLER, "optuna.samplers.QMCSampler"})

PRUNER_ATTR = "urbansound:pruner"
EXCESS_ATTR = "urbansound:excess"
HEARTBEAT_ATTR = "urbansound:heartbeat"
# Task overrides that do not change a trial's result: left out of the derived study name.
OPERATIONAL_KEYS = (
    "hydra.",
    "trial.",
    "tracking.",
    "sweep",
    "features.cache_dir",
    "features.n_jobs",
    "data.demo_dir",
    "train.device",
    "train.threads",
)
ERROR_MAX_CHARS = 2000


class SweepError(UrbansoundError):
    """A sweep stopped: too many failed trials, or a worker process died."""


# --------------------------------------------------------------------------------------------
# Search space


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
class SearchSpace:
    """The swept keys and the overrides every job gets unchanged."""

    params: dict[str, Param]
    fixed: tuple[str, ...] = ()

    def distributions(self) -> dict[str, BaseDistribution]:
        return {name: p.distribution for name, p in self.params.items()}

    def is_discrete(self) -> bool:
        """True when every swept key has finitely many values (a grid is possible)."""
        try:
            self.grid()
        except ConfigError:
            return False
        return True

    def grid(self) -> dict[str, list[Any]]:
        return {name: p.grid_values() for name, p in self.params.items()}

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values())

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The job's overrides: the fixed ones, then one per swept key."""
        return [*self.fixed, *(p.override(params[name]) for name, p in self.params.items())]

    def describe(self) -> dict[str, str]:
        """Parameter name -> a readable, stable description of its distribution."""
        return {name: _describe(p.distribution) for name, p in sorted(self.params.items())}


def _describe(d: BaseDistribution) -> str:
    return optuna.distributions.distribution_to_json(d)


_PARSER: Any = None


def _parser() -> Any:
    global _PARSER
    if _PARSER is None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        _PARSER = OverridesParser.create()
    return _PARSER


def _parse(text: str) -> Any:
    from hydra.errors import HydraException

    try:
        return _parser().parse_override(text)
    except HydraException as exc:
        raise ConfigError(f"cannot parse sweep override {text!r}: {exc}") from None


def format_value(value: Any) -> str:
    """``value`` written in Hydra's override grammar so that it parses back to itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if not isinstance(value, str):
        raise ConfigError(f"cannot write {value!r} ({type(value).__name__}) as an override")
    if value and _roundtrips(value, value):
        return value
    quoted = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if not _roundtrips(quoted, value):
        raise ConfigError(f"cannot write the string {value!r} as an override value")
    return quoted


def _roundtrips(text: str, value: str) -> bool:
    try:
        parsed = _parser().parse_override(f"k={text}")
    except Exception:
        return False
    if parsed.is_sweep_override():
        return False
    out = parsed.value()
    return isinstance(out, str) and out == value


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

    override = _parse(text)
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
            key = _parse(text).get_key_element()
            swept.pop(key.lstrip("+~"), None)
            fixed[key] = text
        else:
            fixed = {k: v for k, v in fixed.items() if k.lstrip("+~") != param.name}
            swept[param.name] = param
    return SearchSpace(params=swept, fixed=tuple(fixed.values()))


# --------------------------------------------------------------------------------------------
# Samplers and pruners


def auto_sampler(
    *, search_space: Mapping[str, Sequence[Any]] | None, seed: int | None = 0
) -> optuna.samplers.BaseSampler:
    """A grid sampler over ``search_space`` (grid values per key), or TPE when it is None."""
    if search_space is not None:
        return optuna.samplers.GridSampler(dict(search_space), seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def resolve_sampler_target(conf: Mapping[str, Any], space: SearchSpace) -> str:
    """The sampler class ``conf`` stands for (``auto`` resolved against ``space``)."""
    target = str(conf.get("_target_"))
    if target == AUTO_SAMPLER:
        return GRID_SAMPLER if space.is_discrete() else TPE_SAMPLER
    return target


def derive_seed(seed: int, *, worker: int, n_existing: int) -> int:
    """The seed of one worker: ``seed`` itself for the first worker of a new study.

    Other workers, and runs that resume a study, get seeds derived from ``seed``, so they do not
    replay the random draws that earlier trials already made.
    """
    if worker == 0 and n_existing == 0:
        return seed
    digest = hashlib.sha256(f"{seed}:{worker}:{n_existing}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def build_sampler(
    conf: Mapping[str, Any], space: SearchSpace, *, worker: int = 0, n_existing: int = 0
) -> optuna.samplers.BaseSampler:
    """Instantiate the sampler node (``hydra.sweeper.sampler``) for ``space``."""
    from hydra.utils import instantiate

    conf = dict(conf)
    target = resolve_sampler_target(conf, space)
    if target != conf.get("_target_"):
        conf = {"_target_": target, "seed": conf.get("seed")}
    seed = conf.get("seed")
    if seed is not None and target not in _SEED_SHARED:
        conf["seed"] = derive_seed(int(seed), worker=worker, n_existing=n_existing)
    extra: dict[str, Any] = {}
    if target == GRID_SAMPLER:
        extra["search_space"] = space.grid()
    try:
        with _quiet_optuna():
            return instantiate(conf, _convert_="all", **extra)
    except Exception as exc:
        raise ConfigError(f"hydra.sweeper.sampler ({target}) cannot be created: {exc}") from None


def build_pruner(conf: Mapping[str, Any] | None) -> optuna.pruners.BasePruner:
    """Instantiate a pruner node (``hydra.sweeper.pruner``); None means no pruning."""
    from hydra.utils import instantiate

    if not conf:
        return optuna.pruners.NopPruner()
    try:
        with _quiet_optuna():
            return instantiate(dict(conf), _convert_="all")
    except Exception as exc:
        raise ConfigError(
            f"hydra.sweeper.pruner ({conf.get('_target_')}) cannot be created: {exc}"
        ) from None


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Silence Optuna's notices about experimental features this module uses on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        warnings.filterwarnings("ignore", message=".*is experimental")
        yield


# --------------------------------------------------------------------------------------------
# Storage


def normalize_storage(storage: str) -> str:
    """``storage`` made usable from any working directory (absolute paths, a driver that exists).

    A value without ``://`` is a file path for Optuna's journal storage. A relative SQLite path
    becomes absolute and its folder is created; ``postgresql://`` uses psycopg (3) when psycopg2
    is not installed.
    """
    if not isinstance(storage, str) or not storage.strip():
        raise ConfigError("hydra.sweeper.storage must be a storage URL or a journal file path")
    storage = storage.strip()
    if "://" not in storage:
        path = Path(storage).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return str(path)
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(storage)
    except ArgumentError as exc:
        raise ConfigError(f"hydra.sweeper.storage {storage!r} is not a valid URL: {exc}") from None
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            raise ConfigError(
                "hydra.sweeper.storage: an in-memory SQLite database cannot be reopened by the "
                "jobs; use a file such as sqlite:///outputs/optuna.db"
            )
        path = Path(database).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        url = url.set(database=str(path))
    elif url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+" + _postgres_driver())
    return url.render_as_string(hide_password=False)


def _postgres_driver() -> str:
    import importlib.util

    if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg"):
        return "psycopg"
    return "psycopg2"


def display_storage(storage: str) -> str:
    """``storage`` with any password replaced by ``***`` (for consoles and logs)."""
    if "://" not in storage:
        return storage
    from sqlalchemy.engine import make_url

    return make_url(storage).render_as_string(hide_password=True)


def dashboard_command(storage: str) -> str:
    """The optuna-dashboard command line that opens ``storage``.

    A password is left out of the URL (libpq then reads ``PGPASSWORD``); a shell comment says so.
    """
    if "://" not in storage:
        return f"optuna-dashboard {shlex.quote(storage)}"
    from sqlalchemy.engine import URL, make_url

    url = make_url(storage)
    bare = URL.create(
        url.drivername,
        username=url.username,
        host=url.host,
        port=url.port,
        database=url.database,
        query=url.query,
    )
    command = f"optuna-dashboard {shlex.quote(bare.render_as_string(hide_password=False))}"
    if url.password:
        command += "  # password left out: export PGPASSWORD=... first"
    return command


def open_storage(
    storage: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = None,
) -> BaseStorage:
    """An Optuna storage for a normalized ``storage`` string (see :func:`normalize_storage`).

    With ``heartbeat_interval``, running trials record heartbeats and trials whose heartbeat is
    older than ``grace_period`` are failed and queued again (up to ``max_retry`` times).
    """
    callback = None
    if heartbeat_interval is not None:
        with _quiet_optuna():
            callback = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    if "://" not in storage:
        from optuna.storages.journal import JournalFileBackend

        with _quiet_optuna():
            return HeartbeatJournalStorage(
                JournalFileBackend(storage),
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                stale_trial_callback=callback,
            )
    engine_kwargs: dict[str, Any] = {}
    if storage.startswith("sqlite"):
        # Several processes write one file: wait for its lock rather than fail at once.
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    last: Exception | None = None
    for attempt in range(4):
        try:
            with _quiet_optuna():
                rdb = optuna.storages.RDBStorage(
                    storage,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=callback,
                )
            if storage.startswith("sqlite"):
                from sqlalchemy import event

                event.listen(rdb.engine, "connect", _sqlite_pragmas)
                rdb.engine.dispose()  # reconnect with the pragmas
            return rdb
        except ImportError as exc:
            raise ConfigError(f"hydra.sweeper.storage {display_storage(storage)}: {exc}") from None
        except Exception as exc:  # two processes creating the tables at once, a busy server
            last = exc
            time.sleep(0.5 * (attempt + 1))
    raise SweepError(f"cannot open the study storage {display_storage(storage)}: {last}")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Write-ahead log: workers, jobs and optuna-dashboard read while one writes, and a commit
    does not wait for the disk (a crash loses at most the last commits, never the file)."""
    import sqlite3

    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.OperationalError as exc:  # another process holds a lock; keep its mode
        log.debug("SQLite pragmas not applied: %s", exc)
    finally:
        cursor.close()


def _journal_heartbeat_base() -> type:
    # Optuna documents BaseHeartbeat as the class a storage backend implements for heartbeats.
    from optuna.storages._heartbeat import BaseHeartbeat

    return BaseHeartbeat


class HeartbeatJournalStorage(optuna.storages.JournalStorage, _journal_heartbeat_base()):  # type: ignore[misc]
    """Optuna's journal storage with heartbeats (Optuna has them for RDB storages only).

    A heartbeat is the wall-clock time in the trial's system attribute ``urbansound:heartbeat``;
    workers on several machines therefore need roughly synchronised clocks.
    """

    def __init__(
        self,
        backend: Any,
        *,
        heartbeat_interval: int | None,
        grace_period: int | None,
        stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None,
    ) -> None:
        super().__init__(backend)
        self._heartbeat_interval = heartbeat_interval
        self._grace_period = grace_period
        self._stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        assert self._heartbeat_interval is not None
        grace = self._grace_period or 2 * self._heartbeat_interval
        now = time.time()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = t.system_attrs.get(HEARTBEAT_ATTR)
            if beat is None and t.datetime_start is not None:
                beat = t.datetime_start.timestamp()
            if beat is not None and now - float(beat) > grace:
                stale.append(self.get_trial_id_from_study_id_trial_number(study_id, t.number))
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._stale_trial_callback


class _Heartbeat:
    """Records heartbeats of one running trial from a background thread."""

    def __init__(self, storage: BaseStorage, trial_id: int, interval: int | None) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Heartbeat:
        if self._interval is None:
            return self
        self._storage.record_heartbeat(self._trial_id)  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._run, name="urbansound-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._interval is not None
        while not self._stop.wait(self._interval):
            try:
                self._storage.record_heartbeat(self._trial_id)  # type: ignore[attr-defined]
            except Exception as exc:  # a storage hiccup; the next beat may get through
                log.warning("heartbeat of trial id %d not recorded: %s", self._trial_id, exc)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


# --------------------------------------------------------------------------------------------
# Sweep settings


@dataclass(frozen=True)
class SweepSettings:
    """Validated ``hydra.sweeper.*`` for one sweep (see ``hydra_plugins.urbansound_sweeper``)."""

    study_name: str
    storage: str
    space: SearchSpace
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    n_trials: int
    direction: str = "maximize"
    metric_name: str = "value"
    n_jobs: int = 1
    max_failure_rate: float = 0.5
    retry_failed: bool = False
    heartbeat_interval: int | None = 20
    grace_period: int | None = None
    max_retry: int | None = 3

    @property
    def max_failures(self) -> int:
        """The number of FAIL trials the study tolerates before the sweep stops."""
        return math.floor(self.max_failure_rate * self.n_trials + 1e-9)


def _opt_int(value: Any, key: str, *, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"hydra.sweeper.{key} must be an integer >= {minimum} or null, got {value!r}"
        )
    return value


def derive_study_name(
    space: SearchSpace, task_overrides: Sequence[str], *, base: str | None = None
) -> str:
    """A stable study name for a sweep.

    Without ``base`` (no ``study_name`` configured) it is ``<swept keys>-<hash>`` over the search
    space and the result-changing task overrides; with ``base`` (a sweep file's ``study_name``) it
    is ``base`` alone, or ``base-<hash>`` when the command line changes the space or the task.
    """
    relevant = sorted(o for o in task_overrides if not _is_operational(o))
    if base is not None:
        if not relevant:
            return base
        payload: dict[str, Any] = {"overrides": relevant}
    else:
        payload = {"space": space.describe(), "overrides": relevant}
    digest = hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]
    if base is not None:
        return f"{base}-{digest}"
    names = "+".join(sorted(space.params)) or "sweep"
    return f"{names[:60]}-{digest}"


def _is_operational(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    if key.startswith("hydra.sweeper.params"):
        return False  # the search space itself
    return any(key == k.rstrip(".") or key.startswith(k) for k in OPERATIONAL_KEYS if k)


def sweep_settings(
    conf: Mapping[str, Any],
    *,
    arguments: Sequence[str] = (),
    hydra_overrides: Sequence[str] = (),
) -> SweepSettings:
    """Validate the sweeper's config node plus the command line into :class:`SweepSettings`.

    Parameters
    ----------
    conf:
        ``hydra.sweeper`` as a plain mapping.
    arguments:
        The command line's task overrides (sweeps such as ``n_mfcc=20,40,60`` and fixed values).
    hydra_overrides:
        The command line's ``hydra.*`` overrides (``hydra.sweeper.study_name=x`` is taken
        verbatim; ``hydra.sweeper.params.*`` changes the derived study name).
    """
    space = build_search_space(conf.get("params"), arguments)
    nodes = {}
    for key, default in (("sampler", AUTO_SAMPLER), ("pruner", NOP_PRUNER)):
        node = conf.get(key) or {"_target_": default}
        if not isinstance(node, Mapping) or not isinstance(node.get("_target_"), str):
            raise ConfigError(
                f"hydra.sweeper.{key} must be a config node with a _target_, got {node!r}: "
                f"choose one with hydra/sweeper/{key}=<name> (a slash, not a dot)"
            )
        nodes[key] = dict(node)
    sampler, pruner = nodes["sampler"], nodes["pruner"]

    direction = conf.get("direction", "maximize")
    if direction not in ("maximize", "minimize"):
        raise ConfigError(
            f"hydra.sweeper.direction must be maximize or minimize, got {direction!r}"
        )

    target = resolve_sampler_target(sampler, space)
    n_trials = _opt_int(conf.get("n_trials"), "n_trials", minimum=1)
    if target == GRID_SAMPLER:
        size = space.grid_size()  # ConfigError names a continuous key
        if n_trials is None or n_trials > size:
            if n_trials is not None:
                log.info("n_trials %d > %d grid points: running the grid once", n_trials, size)
            n_trials = size
    elif n_trials is None:
        raise ConfigError(
            f"hydra.sweeper.n_trials is required with {target.rsplit('.', 1)[-1]} "
            "(a grid runs every point; a search needs a budget): add hydra.sweeper.n_trials=20"
        )

    n_jobs = _opt_int(conf.get("n_jobs", 1), "n_jobs", minimum=1) or 1
    rate = conf.get("max_failure_rate", 0.5)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise ConfigError(f"hydra.sweeper.max_failure_rate must be in [0, 1], got {rate!r}")
    interval = _opt_int(conf.get("heartbeat_interval"), "heartbeat_interval", minimum=1)
    grace = _opt_int(conf.get("grace_period"), "grace_period", minimum=1)
    if interval is not None and grace is not None and grace <= interval:
        raise ConfigError(
            f"hydra.sweeper.grace_period ({grace}) must be longer than heartbeat_interval "
            f"({interval}), or a live trial would be taken for a dead one"
        )

    storage = normalize_storage(str(conf.get("storage") or "sqlite:///outputs/optuna.db"))
    explicit_name = any(o.startswith("hydra.sweeper.study_name=") for o in hydra_overrides)
    name = conf.get("study_name")
    if not explicit_name:
        space_overrides = [o for o in hydra_overrides if o.startswith("hydra.sweeper.params")]
        changes = [*arguments, *space_overrides]
        name = derive_study_name(space, changes, base=name)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"hydra.sweeper.study_name must be a non-empty string, got {name!r}")
    metric = conf.get("metric_name") or "value"
    return SweepSettings(
        study_name=name,
        storage=storage,
        space=space,
        sampler=sampler,
        pruner=pruner,
        n_trials=n_trials,
        direction=direction,
        metric_name=str(metric),
        n_jobs=n_jobs,
        max_failure_rate=float(rate),
        retry_failed=bool(conf.get("retry_failed", False)),
        heartbeat_interval=interval,
        grace_period=grace,
        max_retry=_opt_int(conf.get("max_retry"), "max_retry", minimum=0),
    )


# --------------------------------------------------------------------------------------------
# Running a sweep


@dataclass
class JobOutcome:
    """What the launcher reports for one job."""

    value: Any = None
    error: BaseException | None = None
    output_dir: str | None = None


# launch(overrides, job_num) -> JobOutcome; runs one job (the plugin wraps Hydra's launcher).
Launch = Callable[[list[str], int], JobOutcome]


@dataclass(frozen=True)
class Progress:
    """Where a study stands with respect to ``n_trials``."""

    complete: int
    pruned: int
    failed: int
    running: list[int]
    waiting: int

    @property
    def counted(self) -> int:
        """Trials that count toward ``n_trials`` (finished, failed, or running now)."""
        return self.complete + self.pruned + self.failed + len(self.running)

    def describe(self, n_trials: int) -> str:
        """A progress line: ``[#####.....] 5/10 trials (4 complete, 1 pruned, 0 failed)``."""
        done = self.complete + self.pruned + self.failed
        width = 20
        filled = min(width, round(width * done / n_trials)) if n_trials else width
        bar = "#" * filled + "." * (width - filled)
        running = f", {len(self.running)} running" if self.running else ""
        return (
            f"[{bar}] {done}/{n_trials} trials ({self.complete} complete, {self.pruned} pruned, "
            f"{self.failed} failed{running})"
        )


def _superseded(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of trials that were queued again (a retry replaces them)."""
    out: set[int] = set()
    for t in trials:
        out.update(t.system_attrs.get("retry_history", []))
    return out


def study_progress(trials: Sequence[FrozenTrial], *, gone: set[int] | None = None) -> Progress:
    """Count a study's trials the way the sweeper does (retried and excess trials left out).

    ``gone``: numbers of retried trials (default: found among ``trials``).
    """
    gone = _superseded(trials) if gone is None else gone
    live = [t for t in trials if t.number not in gone and not t.system_attrs.get(EXCESS_ATTR)]
    return Progress(
        complete=sum(t.state == TrialState.COMPLETE for t in live),
        pruned=sum(t.state == TrialState.PRUNED for t in live),
        failed=sum(t.state == TrialState.FAIL for t in live),
        running=[t.number for t in live if t.state == TrialState.RUNNING],
        waiting=sum(t.state == TrialState.WAITING for t in live),
    )


def _open(settings: SweepSettings, *, worker: int) -> tuple[BaseStorage, Any]:
    storage = open_storage(
        settings.storage,
        heartbeat_interval=settings.heartbeat_interval,
        grace_period=settings.grace_period,
        max_retry=settings.max_retry,
    )
    try:
        n_existing = len(
            storage.get_all_trials(storage.get_study_id_from_name(settings.study_name), False)
        )
    except KeyError:
        n_existing = 0
    with _quiet_optuna():
        study = optuna.create_study(
            storage=storage,
            study_name=settings.study_name,
            direction=settings.direction,
            sampler=build_sampler(
                settings.sampler, settings.space, worker=worker, n_existing=n_existing
            ),
            pruner=build_pruner(settings.pruner),
            load_if_exists=True,
        )
    if study.direction.name.lower() != settings.direction:
        raise ConfigError(
            f"study {settings.study_name!r} exists with direction "
            f"{study.direction.name.lower()}; hydra.sweeper.direction is {settings.direction}"
        )
    return storage, study


def _fail_stale(study: Any) -> None:
    with _quiet_optuna():
        optuna.storages.fail_stale_trials(study)


def _requeue(study: Any, trial: FrozenTrial, max_retry: int | None) -> None:
    with _quiet_optuna():
        RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, trial)


def prepare_study(settings: SweepSettings) -> tuple[BaseStorage, Any]:
    """Create or reopen the study, fail stale trials and record the sweep's description."""
    storage, study = _open(settings, worker=0)
    _fail_stale(study)
    with _quiet_optuna():
        study.set_metric_names([settings.metric_name])
    study.set_user_attr("search_space", settings.space.describe())
    study.set_user_attr("fixed_overrides", list(settings.space.fixed))
    if settings.retry_failed:
        trials = study.get_trials(deepcopy=False)
        gone = _superseded(trials)
        for t in trials:
            if (
                t.state == TrialState.FAIL
                and t.number not in gone
                and not t.system_attrs.get(EXCESS_ATTR)
            ):
                log.info("trial %d failed in an earlier run: queued again", t.number)
                _requeue(study, t, None)
    return storage, study


def run_worker(settings: SweepSettings, launch: Launch, *, worker: int = 0) -> Progress:
    """Ask, launch and tell trials until the study holds ``n_trials`` (or too many failed).

    Returns the study's progress when this worker stops. Waits for trials other workers are
    running (they may die and be queued again) when heartbeats are on.
    """
    storage, study = _open(settings, worker=worker)
    study_id = storage.get_study_id_from_name(settings.study_name)
    waiting_logged: list[int] = []
    while True:
        _fail_stale(study)
        progress = study_progress(study.get_trials(deepcopy=False))
        if progress.failed > settings.max_failures:
            log.error(
                "%d trials failed (more than max_failure_rate %.2f x n_trials %d): "
                "no new trials are started",
                progress.failed,
                settings.max_failure_rate,
                settings.n_trials,
            )
            return progress
        if progress.counted >= settings.n_trials:
            if not progress.running:
                return progress
            if settings.heartbeat_interval is None:
                log.warning(
                    "trials %s are still RUNNING (another worker, or a killed sweep: without "
                    "hydra.sweeper.heartbeat_interval they are never run again)",
                    progress.running,
                )
                return progress
            if progress.running != waiting_logged:
                log.info(
                    "waiting for running trials %s (other workers, or a killed sweep whose "
                    "heartbeat has not expired yet)",
                    progress.running,
                )
                waiting_logged = progress.running
            time.sleep(min(settings.heartbeat_interval, 5))
            continue
        log.info("sweep %s: %s", settings.study_name, progress.describe(settings.n_trials))
        _run_trial(settings, storage, study, study_id, launch)


def _run_trial(
    settings: SweepSettings, storage: BaseStorage, study: Any, study_id: int, launch: Launch
) -> None:
    with _quiet_optuna():
        trial = study.ask(fixed_distributions=settings.space.distributions())
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    with _Heartbeat(storage, trial_id, settings.heartbeat_interval):
        frozen = storage.get_trial(trial_id)
        queued = "retry_history" in frozen.system_attrs or "fixed_params" in frozen.system_attrs
        if not queued and _is_excess(storage, study_id, trial.number, settings.n_trials):
            storage.set_trial_system_attr(trial_id, EXCESS_ATTR, True)
            trial.set_user_attr("error", "not run: other workers reached n_trials first")
            _tell_state(study, trial, state=TrialState.FAIL)
            return
        if queued and frozen.user_attrs.get("error"):
            trial.set_user_attr("error", None)  # copied from the trial this one re-runs
        storage.set_trial_system_attr(trial_id, PRUNER_ATTR, settings.pruner)
        job_overrides = settings.space.overrides(trial.params)
        trial.set_user_attr("overrides", job_overrides)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        overrides = [
            *job_overrides,
            f"trial.study_name={format_value(settings.study_name)}",
            f"trial.storage={format_value(settings.storage)}",
            f"trial.number={trial.number}",
        ]
        log.info("trial %d: %s", trial.number, " ".join(job_overrides) or "(no overrides)")
        t0 = time.monotonic()
        try:
            outcome = launch(overrides, trial.number)
        except KeyboardInterrupt:
            trial.set_user_attr("error", "interrupted (KeyboardInterrupt); queued again")
            _tell_state(study, trial, state=TrialState.FAIL)
            _requeue(study, storage.get_trial(trial_id), settings.max_retry)
            raise
        except SystemExit as exc:  # a task that calls sys.exit fails its trial, not the sweep
            outcome = JobOutcome(error=exc)
    _tell(study, trial, outcome, storage=storage, trial_id=trial_id, seconds=time.monotonic() - t0)


def _is_excess(storage: BaseStorage, study_id: int, number: int, n_trials: int) -> bool:
    """True when trials numbered below ``number`` already fill ``n_trials`` (a lost race)."""
    trials = storage.get_all_trials(study_id, deepcopy=False)
    earlier = [t for t in trials if t.number < number]
    return study_progress(earlier, gone=_superseded(trials)).counted >= n_trials


def _tell(
    study: Any,
    trial: Any,
    outcome: JobOutcome,
    *,
    storage: BaseStorage,
    trial_id: int,
    seconds: float,
) -> None:
    state = storage.get_trial(trial_id).state
    if state != TrialState.RUNNING:
        # Another worker took this trial for dead (no heartbeat for grace_period seconds: a
        # starved or suspended process) and queued a copy; that copy's result is the one kept.
        log.warning(
            "trial %d is already %s (its heartbeat stopped for too long); its result is dropped",
            trial.number,
            state.name,
        )
        return
    if outcome.output_dir:
        trial.set_user_attr("run_dir", outcome.output_dir)
    error = outcome.error
    if error is None:
        try:
            value = float(outcome.value)
            if math.isnan(value):
                raise ValueError
        except (TypeError, ValueError):
            error = ValueError(f"the job returned {outcome.value!r}, not a number")
        else:
            _tell_state(study, trial, value=value)
            log.info("trial %d COMPLETE: %.4f (%.1f s)", trial.number, value, seconds)
            return
    if isinstance(error, TrialPruned | optuna.TrialPruned):
        _tell_state(study, trial, state=TrialState.PRUNED)
        log.info("trial %d PRUNED: %s (%.1f s)", trial.number, error, seconds)
        return
    message = f"{type(error).__name__}: {error}"[:ERROR_MAX_CHARS]
    trial.set_user_attr("error", message)
    if outcome.output_dir and Path(outcome.output_dir).is_dir():
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        (Path(outcome.output_dir) / "error.txt").write_text(text)
    _tell_state(study, trial, state=TrialState.FAIL)
    log.warning(
        "trial %d FAIL: %s (%.1f s)", trial.number, message, seconds, exc_info=_exc_info(error)
    )


def _exc_info(error: BaseException) -> Any:
    if isinstance(error, UrbansoundError | SystemExit):
        return None  # the message says it all
    return (type(error), error, error.__traceback__)


def _tell_state(
    study: Any, trial: Any, *, value: float | None = None, state: TrialState | None = None
) -> None:
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as exc:
        # GridSampler calls study.stop() after the last grid point, which ask-and-tell code
        # cannot honour; the trial is stored before that (Optuna's tell writes it in `finally`).
        if "Study.stop" not in str(exc):
            raise


def _worker_process(
    settings: SweepSettings, launch: Launch, worker: int, parent: int
) -> None:  # pragma: no cover - runs in a forked child; covered through subprocess tests
    def watchdog() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(3)  # the sweep's main process is gone (kill -9): stop like it did

    threading.Thread(target=watchdog, name="urbansound-watchdog", daemon=True).start()
    code = 0
    try:
        run_worker(settings, launch, worker=worker)
    except KeyboardInterrupt:
        code = 130
    except Exception:
        log.exception("sweep worker %d stopped", worker)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)  # skip the parent's atexit handlers, inherited through fork


def run_workers(settings: SweepSettings, launch: Launch) -> None:
    """Run ``settings.n_jobs`` workers: in this process for one, else in forked processes.

    Forking keeps Hydra's state (config, launcher, task function) without pickling it; each
    worker opens its own storage connection.
    """
    if settings.n_jobs == 1:
        run_worker(settings, launch, worker=0)
        return
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(
            target=_worker_process,
            args=(settings, launch, i, os.getpid()),
            name=f"urbansound-sweep-worker-{i}",
        )
        for i in range(settings.n_jobs)
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:  # the terminal sent SIGINT to every worker too; let them re-queue
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
        raise
    bad = [(p.name, p.exitcode) for p in procs if p.exitcode != 0]
    if bad:
        raise SweepError(f"sweep worker processes failed: {bad} (see the log above)")


def _release(storage: BaseStorage) -> None:
    """Close a storage's connections before forking (children open their own)."""
    if isinstance(storage, optuna.storages.RDBStorage):
        storage.remove_session()
        storage.engine.dispose()


# --------------------------------------------------------------------------------------------
# Summary


@dataclass
class SweepSummary:
    """The end of a sweep: the study's trials and where they were written."""

    study_name: str
    storage: str
    table: str
    progress: Progress
    n_trials: int
    best: dict[str, Any] | None
    csv_path: Path | None = None
    best_path: Path | None = None
    dashboard: str = ""
    failed_too_often: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)


def trial_rows(trials: Sequence[FrozenTrial]) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, duration, params, run_dir, error."""
    gone = _superseded(trials)
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        duration = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        state = t.state.name
        if t.number in gone:
            state += " (retried)"
        elif t.system_attrs.get(EXCESS_ATTR):
            state += " (not run)"
        rows.append(
            {
                "trial": t.number,
                "state": state,
                "value": t.value,
                "duration_s": None if duration is None else round(duration, 1),
                **{f"params.{k}": v for k, v in t.params.items()},
                "run_dir": t.user_attrs.get("run_dir", ""),
                "error": t.user_attrs.get("error") or "",
            }
        )
    return rows


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The printed trial table (trial, state, params, value, duration)."""
    if not rows:
        return "(no trials)"
    param_cols = sorted({k for r in rows for k in r if k.startswith("params.")})
    cols = ["trial", "state", *param_cols, "value", "duration_s"]
    header = ["trial", "state", *(c.removeprefix("params.") for c in param_cols), "value", "s"]
    cells = [header]
    for r in rows:
        line = []
        for c in cols:
            v = r.get(c)
            if v is None:
                line.append("-")
            elif c == "value":
                line.append(f"{v:.4f}")
            else:
                line.append(str(v))
        cells.append(line)
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    lines = ("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells)
    return "\n".join(lines)


def summarize(settings: SweepSettings, sweep_dir: Path | None) -> SweepSummary:
    """Read the study back, write ``trials.csv`` and ``best_params.yaml`` into ``sweep_dir``."""
    storage = open_storage(settings.storage)
    study = optuna.load_study(study_name=settings.study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    rows = trial_rows(trials)
    progress = study_progress(trials)
    best: dict[str, Any] | None = None
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        b = study.best_trial
        best = {
            "study_name": settings.study_name,
            "storage": display_storage(settings.storage),
            "direction": settings.direction,
            "metric": settings.metric_name,
            "best_trial": b.number,
            "best_value": b.value,
            "params": dict(b.params),
            "overrides": list(b.user_attrs.get("overrides", [])),
            "run_dir": b.user_attrs.get("run_dir"),
        }
    summary = SweepSummary(
        study_name=settings.study_name,
        storage=settings.storage,
        table=format_table(rows),
        progress=progress,
        n_trials=settings.n_trials,
        best=best,
        dashboard=dashboard_command(settings.storage),
        failed_too_often=progress.failed > settings.max_failures,
        rows=rows,
    )
    if sweep_dir is not None:
        import pandas as pd
        import yaml

        sweep_dir.mkdir(parents=True, exist_ok=True)
        summary.csv_path = sweep_dir / "trials.csv"
        pd.DataFrame(rows).to_csv(summary.csv_path, index=False)
        summary.best_path = sweep_dir / "best_params.yaml"
        summary.best_path.write_text(yaml.safe_dump(best, sort_keys=False))
    return summary


def run_sweep(settings: SweepSettings, launch: Launch, *, sweep_dir: Path | None) -> SweepSummary:
    """Run a whole sweep and summarize it (``failed_too_often`` says whether it gave up)."""
    storage, study = prepare_study(settings)
    progress = study_progress(study.get_trials(deepcopy=False))
    log.info(
        "study %s in %s: %d trials counted (%d complete, %d pruned, %d failed, %d running); "
        "n_trials %d, %d worker(s), sampler %s, pruner %s",
        settings.study_name,
        display_storage(settings.storage),
        progress.counted,
        progress.complete,
        progress.pruned,
        progress.failed,
        len(progress.running),
        settings.n_trials,
        settings.n_jobs,
        resolve_sampler_target(settings.sampler, settings.space).rsplit(".", 1)[-1],
        str(settings.pruner.get("_target_")).rsplit(".", 1)[-1],
    )
    _release(storage)
    del study
    run_workers(settings, launch)
    return summarize(settings, sweep_dir)


# --------------------------------------------------------------------------------------------
# Job side: the trial reaches the job through storage


_JOB_STORAGES: dict[str, BaseStorage] = {}


def _job_storage(url: str) -> BaseStorage:
    if url not in _JOB_STORAGES:
        _JOB_STORAGES[url] = open_storage(url)
    return _JOB_STORAGES[url]


def _trial_id(trial: TrialSettings) -> tuple[BaseStorage, int]:
    assert trial.storage is not None and trial.study_name is not None and trial.number is not None
    storage = _job_storage(trial.storage)
    try:
        study_id = storage.get_study_id_from_name(trial.study_name)
        return storage, storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    except KeyError:
        raise ConfigError(
            f"trial.number={trial.number} of study {trial.study_name!r} is not in "
            f"{display_storage(trial.storage)}: trial.* is set by the urbansound sweeper, "
            "leave it unset"
        ) from None


def epoch_reporter(trial: TrialSettings) -> Callable[[Any], None] | None:
    """An epoch callback that reports to the job's Optuna trial and prunes it.

    Returns None outside a sweep (``trial.number`` unset). The callback reports
    ``metrics.mean_test_accuracy`` with ``metrics.epoch`` as the step and raises
    :class:`~urbansound.errors.TrialPruned` when the sweep's pruner says so.
    """
    if trial.number is None or trial.study_name is None or trial.storage is None:
        return None
    storage, trial_id = _trial_id(trial)
    frozen = storage.get_trial(trial_id)
    pruner = build_pruner(frozen.system_attrs.get(PRUNER_ATTR))
    with _quiet_optuna():
        study = optuna.load_study(
            study_name=trial.study_name,
            storage=storage,
            pruner=pruner,
            sampler=optuna.samplers.RandomSampler(seed=0),  # the job suggests nothing
        )
        live = optuna.trial.Trial(study, trial_id)

    def report(metrics: Any) -> None:
        value, step = float(metrics.mean_test_accuracy), int(metrics.epoch)
        live.report(value, step)
        if live.should_prune():
            raise TrialPruned(step, value)

    return report


def set_trial_attrs(trial: TrialSettings, **attrs: Any) -> None:
    """Store user attributes (run_dir, overrides, comet_experiment_key, ...) on the job's trial.

    A no-op outside a sweep. Values are stored as JSON (paths as strings); a storage error is
    logged, never raised: a link must not cost the trial.
    """
    if trial.number is None or trial.study_name is None or trial.storage is None:
        return
    try:
        storage, trial_id = _trial_id(trial)
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id, key, _jsonable(value))
    except Exception as exc:
        log.warning("could not store %s on trial %s: %s", sorted(attrs), trial.number, exc)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def grid_points(space: SearchSpace) -> list[dict[str, Any]]:
    """Every combination of a discrete search space (for tests and for planning a grid)."""
    grid = space.grid()
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]
