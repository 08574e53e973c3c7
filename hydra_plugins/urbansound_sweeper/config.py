"""Structured configs of the urbansound Optuna sweeper, registered in Hydra's ConfigStore.

``hydra/sweeper=urbansound`` selects the sweeper (``conf/config.yaml`` makes it the default);
``hydra/sweeper/sampler=<name>`` and ``hydra/sweeper/pruner=<name>`` select Optuna's sampler and
pruner, whose keyword arguments are then plain keys (``hydra.sweeper.sampler.seed=3``). Sweep
files in ``urbansound/conf/sweep/`` pick them with ``override /hydra/sweeper/sampler: tpe`` in their
defaults.

Only dataclasses live here: Hydra imports this module at start-up (its plugin scan), so nothing
here imports Optuna. Samplers and pruners are built from these nodes by ``urbansound.sweep``
(``_recursive_`` is off so that Hydra hands them over as configs, not objects). No
``from __future__ import annotations``: Hydra executes plugin modules outside ``sys.modules``,
where dataclasses cannot resolve string annotations.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# --------------------------------------------------------------------------------------------
# Samplers (group hydra/sweeper/sampler)


@dataclass
class AutoSamplerConf:
    """Grid search when every swept key is discrete (``n_mfcc=20,40,60``), otherwise TPE.

    Its ``_target_`` names no class: ``urbansound.sweep.settings`` resolves it (``AUTO_SAMPLER``)
    against the search space. Derived study names hash it, so it stays as written.
    """

    _target_: str = "urbansound.sweep.auto_sampler"
    seed: int | None = 0


@dataclass
class GridSamplerConf:
    """Every combination of the swept values; finished grid points are never run again."""

    _target_: str = "optuna.samplers.GridSampler"
    seed: int | None = 0


@dataclass
class TPESamplerConf:
    """Optuna's ``TPESampler``; each key is one of its keyword arguments."""

    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = 0
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool | None = None
    group: bool = False
    # Parallel workers see each other's running trials (Optuna's default since 5.0).
    constant_liar: bool = True


@dataclass
class GPSamplerConf:
    """Optuna's ``GPSampler`` (Gaussian process); each key is one of its keyword arguments."""

    _target_: str = "optuna.samplers.GPSampler"
    seed: int | None = 0
    n_startup_trials: int = 10
    deterministic_objective: bool = False


@dataclass
class CmaEsSamplerConf:
    """Optuna's ``CmaEsSampler``; each key is one of its keyword arguments."""

    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: int | None = 0
    n_startup_trials: int = 1
    sigma0: float | None = None
    restart_strategy: str | None = None
    popsize: int | None = None
    consider_pruned_trials: bool = False
    use_separable_cma: bool = False
    with_margin: bool = False


@dataclass
class RandomSamplerConf:
    """Optuna's ``RandomSampler``."""

    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = 0


@dataclass
class QMCSamplerConf:
    """Optuna's ``QMCSampler`` (quasi-Monte Carlo); each key is one of its keyword arguments."""

    _target_: str = "optuna.samplers.QMCSampler"
    seed: int | None = 0
    qmc_type: str = "sobol"
    scramble: bool = True


# --------------------------------------------------------------------------------------------
# Pruners (group hydra/sweeper/pruner). The job reports mean CV accuracy once per epoch (step).


@dataclass
class NopPrunerConf:
    """No pruning; the per-epoch curve is still reported (dashboard)."""

    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConf:
    """Optuna's ``MedianPruner``: stops a trial below the median of earlier trials at that epoch."""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 5
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class PercentilePrunerConf:
    """Optuna's ``PercentilePruner``: stops a trial below a percentile of earlier trials."""

    _target_: str = "optuna.pruners.PercentilePruner"
    percentile: float = 25.0
    n_startup_trials: int = 5
    n_warmup_steps: int = 5
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class HyperbandPrunerConf:
    """Optuna's ``HyperbandPruner`` (epochs are the resource)."""

    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 5
    max_resource: Any = "auto"
    reduction_factor: int = 3


@dataclass
class WilcoxonPrunerConf:
    """Paired test of this trial's per-epoch accuracies against the best trial's."""

    _target_: str = "optuna.pruners.WilcoxonPruner"
    p_threshold: float = 0.1
    n_startup_steps: int = 5


# --------------------------------------------------------------------------------------------
# The sweeper (group hydra/sweeper, name urbansound)


@dataclass
class UrbansoundSweeperConf:
    """``hydra.sweeper.*``: the one place its keys, types and defaults are written.

    The Sweeper receives them all (``UrbansoundSweeper(**keys)``) and hands them over whole to
    ``urbansound.sweep.settings.sweep_settings``, which checks what a type cannot say.
    """

    _target_: str = "hydra_plugins.urbansound_sweeper.urbansound_sweeper.UrbansoundSweeper"
    # Hydra would otherwise instantiate the sampler and pruner nodes into objects itself.
    _recursive_: bool = False
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "auto"}, {"pruner": "none"}])
    sampler: Any = MISSING
    pruner: Any = MISSING
    # Optuna storage: an SQLAlchemy URL, or a file path for Optuna's journal file storage. A URL
    # with a password is refused (it would be written into every job's files): PostgreSQL reads
    # PGPASSWORD or ~/.pgpass, or name below the environment variable that holds it.
    storage: str = "sqlite:///outputs/optuna.db"
    # The environment variable holding the storage's password (its name, never its value): the
    # sweeper, its jobs, the report and fit read it; null = the client's own (PGPASSWORD, ...).
    storage_password_env: str | None = None
    # null: derived from the search space and the task overrides (the same command reopens it).
    study_name: str | None = None
    direction: str = "maximize"
    # Shown as the objective's name in optuna-dashboard.
    metric_name: str = "mean_cv_accuracy"
    # Trials the study should hold when the sweep ends (finished ones from earlier runs count);
    # null = the grid's size with a grid sampler.
    n_trials: int | None = None
    # Trials at a time, each in its own forked worker process (Hydra's basic launcher only).
    n_jobs: int = 1
    # Trials asked at once and handed to a parallel launcher in one launch() call; null = the
    # launcher's own parallelism (joblib's n_jobs, submitit_slurm's array_parallelism,
    # submitit_local: the CPU count).
    batch_size: int | None = None
    # The sweep stops once more than max_failure_rate * n_trials trials have failed.
    max_failure_rate: float = 0.5
    # Run trials that failed in earlier sweeps of this study again (once each).
    retry_failed: bool = False
    # Seconds between heartbeats of a running trial (null = off); a trial without a heartbeat
    # for grace_period seconds (null = 2 x heartbeat_interval) is failed and queued again, up
    # to max_retry times.
    heartbeat_interval: int | None = 20
    grace_period: int | None = None
    max_retry: int | None = 3
    # Search space: key -> override grammar (choice, range, interval, tag(log, ...), int(...)).
    params: dict[str, Any] | None = None


_cs = ConfigStore.instance()
_cs.store(
    group="hydra/sweeper", name="urbansound", node=UrbansoundSweeperConf, provider="urbansound"
)
for _name, _node in {
    "auto": AutoSamplerConf,
    "grid": GridSamplerConf,
    "tpe": TPESamplerConf,
    "gp": GPSamplerConf,
    "cmaes": CmaEsSamplerConf,
    "random": RandomSamplerConf,
    "qmc": QMCSamplerConf,
}.items():
    _cs.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="urbansound")
for _name, _node in {
    "none": NopPrunerConf,
    "median": MedianPrunerConf,
    "percentile": PercentilePrunerConf,
    "hyperband": HyperbandPrunerConf,
    "wilcoxon": WilcoxonPrunerConf,
}.items():
    _cs.store(group="hydra/sweeper/pruner", name=_name, node=_node, provider="urbansound")
