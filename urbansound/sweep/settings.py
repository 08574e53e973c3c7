"""``hydra.sweeper.*`` validated into :class:`SweepSettings`; Optuna samplers and pruners.

The sweeper's keys, their types and defaults are written once, in the plugin's dataclass
``UrbansoundSweeperConf`` (``hydra_plugins/urbansound_sweeper/config.py``); the Sweeper hands
that node over whole and :func:`sweep_settings` checks only what a type cannot say (ranges,
combinations).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from urbansound.config.overrides import override_key
from urbansound.errors import ConfigError
from urbansound.sweep._compat import quiet_optuna
from urbansound.sweep.grid import BranchGridSampler, grid_n_trials
from urbansound.sweep.space import SearchSpace, build_search_space, derive_study_name
from urbansound.sweep.storage import PASSWORD_ENV_KEY, normalize_storage
from urbansound.sweep.urls import check_password_env

log = logging.getLogger(__name__)

GRID_SAMPLER = "optuna.samplers.GridSampler"
TPE_SAMPLER = "optuna.samplers.TPESampler"
#: The ``_target_`` of ``hydra/sweeper/sampler=auto``: a name, not a class. It stands for
#: :data:`GRID_SAMPLER` on a discrete space and :data:`TPE_SAMPLER` otherwise
#: (:func:`resolve_sampler_target`); derived study names hash it, so it stays as written.
AUTO_SAMPLER = "urbansound.sweep.auto_sampler"
NOP_PRUNER = "optuna.pruners.NopPruner"
# Samplers whose draws are indexed by trial number: every worker and every resumed run must use
# the same seed, or two of them would map one grid id / sequence index to different points.
_SEED_SHARED = frozenset({GRID_SAMPLER, "optuna.samplers.QMCSampler"})


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
    if target == GRID_SAMPLER and space.is_conditional:
        return BranchGridSampler(space.branch_grid(), seed=conf.get("seed"))
    if target == GRID_SAMPLER:
        extra["search_space"] = space.grid()
    try:
        with quiet_optuna():
            return instantiate(conf, _convert_="all", **extra)
    except Exception as exc:
        raise ConfigError(
            f"hydra.sweeper.sampler ({target}) cannot be created: {_root_cause(exc)}"
        ) from None


def build_pruner(conf: Mapping[str, Any] | None) -> optuna.pruners.BasePruner:
    """Instantiate a pruner node (``hydra.sweeper.pruner``); None means no pruning."""
    from hydra.utils import instantiate

    if not conf:
        return optuna.pruners.NopPruner()
    try:
        with quiet_optuna():
            return instantiate(dict(conf), _convert_="all")
    except Exception as exc:
        raise ConfigError(
            f"hydra.sweeper.pruner ({conf.get('_target_')}) cannot be created: {_root_cause(exc)}"
        ) from None


def _root_cause(exc: BaseException) -> str:
    """``Type: message`` of the innermost cause (Hydra wraps the constructor's error in a
    multi-line InstantiationException), on one line."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class SweepSettings:
    """Validated ``hydra.sweeper.*`` for one sweep (see ``hydra_plugins.urbansound_sweeper``)."""

    study_name: str
    storage: str
    space: SearchSpace
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    n_trials: int
    direction: str
    metric_name: str
    n_jobs: int
    max_failure_rate: float
    retry_failed: bool
    heartbeat_interval: int | None
    grace_period: int | None
    max_retry: int | None
    # True when the study name was written by the user (sweep file or command line).
    named: bool = False
    # Trials asked at once and handed to the launcher in one launch() call (its parallelism).
    batch_size: int = 1
    # hydra/launcher option name ("basic", "joblib", "submitit_local", ...), for messages.
    launcher: str = "basic"
    # The environment variable holding the storage's password (its name), or None.
    password_env: str | None = None

    @property
    def max_failures(self) -> int:
        """The number of FAIL trials the study tolerates before the sweep stops."""
        return math.floor(self.max_failure_rate * self.n_trials + 1e-9)

    @property
    def grace(self) -> float | None:
        """Seconds without a heartbeat after which a RUNNING trial is taken for dead."""
        if self.heartbeat_interval is None:
            return None
        return self.grace_period or 2 * self.heartbeat_interval

    @property
    def is_grid(self) -> bool:
        """True when the sampler is Optuna's grid sampler (``auto`` on a discrete space too)."""
        return resolve_sampler_target(self.sampler, self.space) == GRID_SAMPLER

    def identity(self) -> dict[str, Any]:
        """What makes a study this sweep's: sampler and pruner (type and settings), direction."""
        sampler = dict(self.sampler)
        sampler["_target_"] = resolve_sampler_target(sampler, self.space)
        return {"sampler": sampler, "pruner": dict(self.pruner), "direction": self.direction}


def _opt_int(value: Any, key: str, *, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"hydra.sweeper.{key} must be an integer >= {minimum} or null, got {value!r}"
        )
    return value


def _node(conf: Mapping[str, Any], key: str) -> dict[str, Any]:
    node = conf[key]
    if not isinstance(node, Mapping) or not isinstance(node.get("_target_"), str):
        raise ConfigError(
            f"hydra.sweeper.{key} must be a config node with a _target_, got {node!r}: "
            f"choose one with hydra/sweeper/{key}=<name> (a slash, not a dot)"
        )
    return dict(node)


BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
# hydra/launcher option -> (launcher class, the key that says how many jobs it runs at once)
_LAUNCHERS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs"),
    # submitit's local executor starts every job of a call at once (no array_parallelism)
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher", ""),
    "submitit_slurm": (
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
        "array_parallelism",
    ),
}


def launcher_parallelism(conf: Mapping[str, Any] | None) -> tuple[str, int]:
    """The launcher's option name and how many jobs it runs at once.

    ``conf`` is ``hydra.launcher`` (None or Hydra's basic launcher: 1). joblib's ``n_jobs``
    follows joblib (``-1`` = every CPU, ``-2`` = all but one); submitit_slurm's
    ``array_parallelism`` is the most array tasks running at once; submitit_local starts every
    job at once (the CPU count). Another launcher with an integer ``n_jobs`` or
    ``array_parallelism`` key gets that many; otherwise 1.

    Raises
    ------
    ConfigError
        When the launcher's parallelism key is not a usable number.
    """
    target = str((conf or {}).get("_target_", BASIC_LAUNCHER))
    if target == BASIC_LAUNCHER:
        return "basic", 1
    name = next((n for n, (t, _) in _LAUNCHERS.items() if t == target), target)
    keys = [k for n, (t, k) in _LAUNCHERS.items() if t == target] or ["n_jobs", "array_parallelism"]
    if keys == [""]:
        return name, os.cpu_count() or 1
    assert conf is not None
    for key in keys:
        value = conf.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value == 0:
            raise ConfigError(
                f"hydra.launcher.{key} must be a non-zero integer for hydra/launcher={name}, "
                f"got {value!r}"
            )
        if value < 0:  # joblib: -1 = every CPU, -2 = all but one, ...
            value = max(1, (os.cpu_count() or 1) + 1 + value)
        return name, value
    return name, 1


def sweep_settings(
    conf: Mapping[str, Any],
    *,
    arguments: Sequence[str] = (),
    hydra_overrides: Sequence[str] = (),
    launcher: Mapping[str, Any] | None = None,
) -> SweepSettings:
    """Validate the sweeper's config node plus the command line into :class:`SweepSettings`.

    Parameters
    ----------
    conf:
        ``hydra.sweeper`` as a plain mapping with every key of ``UrbansoundSweeperConf`` (what
        Hydra passes the Sweeper; other keys, such as ``_target_``, are ignored).
    arguments:
        The command line's task overrides (sweeps such as ``n_mfcc=20,40,60`` and fixed values).
    hydra_overrides:
        The command line's ``hydra.*`` overrides (``hydra.sweeper.params.*`` changes the derived
        study name).
    launcher:
        ``hydra.launcher`` (None: Hydra's basic launcher). Its parallelism is the batch size;
        ``n_jobs`` > 1 (forked sweep workers) is for the basic launcher only.

    Raises
    ------
    ConfigError
        One line naming the ``hydra.sweeper`` key that is wrong.
    """
    space = build_search_space(conf["params"], arguments)
    sampler, pruner = _node(conf, "sampler"), _node(conf, "pruner")

    direction = conf["direction"]
    if direction not in ("maximize", "minimize"):
        raise ConfigError(
            f"hydra.sweeper.direction must be maximize or minimize, got {direction!r}"
        )

    target = resolve_sampler_target(sampler, space)
    n_trials = _opt_int(conf["n_trials"], "n_trials", minimum=1)
    if target == GRID_SAMPLER:
        n_trials = grid_n_trials(n_trials, space.grid_size())  # ConfigError: a continuous key
    elif n_trials is None:
        raise ConfigError(
            f"hydra.sweeper.n_trials is required with {target.rsplit('.', 1)[-1]} "
            "(a grid runs every point; a search needs a budget): add hydra.sweeper.n_trials=20"
        )

    # A sampler or pruner setting Optuna refuses (a negative seed or warm-up) is said here,
    # before the study is created under a name derived from those settings.
    build_sampler(sampler, space)
    build_pruner(pruner)

    n_jobs = _opt_int(conf["n_jobs"], "n_jobs", minimum=1)
    launcher_name, batch_size = launcher_parallelism(launcher)
    if n_jobs is not None and n_jobs > 1 and launcher_name != "basic":
        raise ConfigError(
            f"hydra.sweeper.n_jobs={n_jobs} forks sweep workers for Hydra's basic launcher only; "
            f"hydra/launcher={launcher_name} runs {batch_size} trial(s) at a time itself: set "
            "its parallelism (hydra.launcher.n_jobs for joblib, hydra.launcher.array_parallelism "
            "for submitit_slurm, or hydra.sweeper.batch_size) and leave hydra.sweeper.n_jobs at 1"
        )
    batch = _opt_int(conf["batch_size"], "batch_size", minimum=1)
    if batch is not None:
        if launcher_name == "basic":
            raise ConfigError(
                f"hydra.sweeper.batch_size={batch} is for a launcher that runs jobs at once "
                "(hydra/launcher=joblib, submitit_local, submitit_slurm); Hydra's basic launcher "
                "runs one at a time: use hydra.sweeper.n_jobs for forked workers"
            )
        batch_size = batch
    rate = conf["max_failure_rate"]
    if not 0 <= rate <= 1:
        raise ConfigError(f"hydra.sweeper.max_failure_rate must be in [0, 1], got {rate!r}")
    interval = _opt_int(conf["heartbeat_interval"], "heartbeat_interval", minimum=1)
    grace = _opt_int(conf["grace_period"], "grace_period", minimum=1)
    if interval is not None and grace is not None and grace <= interval:
        raise ConfigError(
            f"hydra.sweeper.grace_period ({grace}) must be longer than heartbeat_interval "
            f"({interval}), or a live trial would be taken for a dead one"
        )

    storage = normalize_storage(conf["storage"])
    password_env = conf["storage_password_env"]
    if password_env is not None:
        if "://" not in storage or storage.startswith("sqlite"):
            raise ConfigError(
                f"{PASSWORD_ENV_KEY}={password_env}: the storage {storage} has no password "
                "(a SQLite or journal file): leave it unset"
            )
        password_env = check_password_env(password_env, key=PASSWORD_ENV_KEY)
    name = conf["study_name"]
    named = name is not None
    if not named:
        space_overrides = [
            o for o in hydra_overrides if override_key(o).startswith("hydra.sweeper.params")
        ]
        identity = {"sampler": sampler, "pruner": pruner}
        name = derive_study_name(space, [*arguments, *space_overrides], identity=identity)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"hydra.sweeper.study_name must be a non-empty string, got {name!r}")
    return SweepSettings(
        study_name=name,
        storage=storage,
        space=space,
        sampler=sampler,
        pruner=pruner,
        n_trials=n_trials,
        direction=direction,
        metric_name=conf["metric_name"],
        n_jobs=n_jobs or 1,
        max_failure_rate=float(rate),
        retry_failed=conf["retry_failed"],
        heartbeat_interval=interval,
        grace_period=grace,
        max_retry=_opt_int(conf["max_retry"], "max_retry", minimum=0),
        named=named,
        batch_size=batch_size,
        launcher=launcher_name,
        password_env=password_env,
    )
