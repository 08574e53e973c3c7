"""Grid rules: every point of a grid runs once, with any number of workers and machines.

Workers share nothing but the storage, and two of them may ask at the same moment. So:

1. **Drawing.** A plain grid is Optuna's ``GridSampler``; a conditional one (the union of its
   branches' grids) is :class:`BranchGridSampler`, where trial *k* takes the *k*-th point of
   the seeded order when it is free, else the free point its number picks, so that workers
   asking at once draw different points.
2. **Holding.** A point is held by a finished trial (COMPLETE, PRUNED, or FAIL: a failed point
   counts toward ``n_trials`` and is queued again, not drawn again), by a queued trial (a retry
   of any number: its copy runs whatever its number) and by an earlier fresh trial that is
   running. Retried and not-run (:data:`~urbansound.sweep.trials.EXCESS_ATTR`) trials hold
   nothing (:func:`point_taken`).
3. **Yielding.** A fresh trial (not queued) does not run, and does not count, when the trials
   numbered before it already fill ``n_trials`` (a race at the end of any search, grid or not)
   or when, in a grid, another trial holds its point (:func:`yield_reason`).
4. **Size.** A grid runs once: ``n_trials`` is at most its number of points
   (:func:`grid_n_trials`).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from urbansound.errors import ConfigError
from urbansound.sweep._compat import set_trial_system_attr
from urbansound.sweep.trials import EXCESS_ATTR, is_queued, study_progress, superseded

log = logging.getLogger(__name__)

# How long a grid trial waits for an earlier trial still inside ``study.ask`` (not yet given
# its grid point) before it counts that trial as holding no point (its process died there).
GRID_POINT_WAIT_SECONDS = 30.0


def grid_n_trials(n_trials: int | None, size: int) -> int:
    """The trials a grid of ``size`` points runs: ``n_trials`` capped at ``size`` (None: all)."""
    if n_trials is None:
        return size
    if n_trials > size:
        log.info("n_trials %d > %d grid points: running the grid once", n_trials, size)
        return size
    return n_trials


class BranchGridSampler(optuna.samplers.BaseSampler):
    """Optuna's grid sampler for a conditional space: one trial per point of the branches' union.

    Each trial gets a point (in a seeded order) that no finished or running trial has, picked
    by its number so that workers asking at once get different points. Points are identified by
    their index in ``points`` (:meth:`~urbansound.sweep.space.SearchSpace.branch_grid`), stored
    as the trial's ``grid_id`` system attribute like Optuna's ``GridSampler`` does. A trial
    queued with fixed parameters (a retry) keeps them.
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
        """Give a fresh trial its point (its ``grid_id``); a queued or pointed one keeps its own."""
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
        # later of two that do yields without running: yield_reason).
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


def point_taken(
    storage: BaseStorage,
    study_id: int,
    trial: FrozenTrial,
    *,
    wait: float = GRID_POINT_WAIT_SECONDS,
) -> bool:
    """True when another trial holds ``trial``'s grid point (``trial`` is a fresh one).

    Which trials hold a point: see the module docstring. A live trial's point is known from
    its queued parameters (``fixed_params``), its parameters, or its ``grid_id`` (the sampler
    sets it before any parameter, so it is known while the trial is still being asked). An
    earlier trial that has none yet is inside ``study.ask``: the check waits for it (up to
    ``wait`` seconds) rather than guess, since two workers that ask at the same moment may both
    draw the last free point.
    """
    deadline = time.monotonic() + wait
    while True:
        trials = storage.get_all_trials(study_id, deepcopy=False)
        gone = superseded(trials)
        unknown = False
        for t in trials:
            if t.number == trial.number or t.number in gone or t.system_attrs.get(EXCESS_ATTR):
                continue
            if t.state.is_finished():
                if t.params == trial.params:
                    return True
                continue
            if is_queued(t) or t.number < trial.number:
                same = _same_point(t, trial)
                if same:
                    return True
                unknown = unknown or same is None
        if not unknown or time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _same_point(other: FrozenTrial, trial: FrozenTrial) -> bool | None:
    """Whether a live ``other`` trial has ``trial``'s grid point; None while it has none yet."""
    fixed = other.system_attrs.get("fixed_params")
    if fixed is not None:
        return dict(fixed) == trial.params
    if other.params and set(other.params) == set(trial.params):
        return other.params == trial.params
    gid = other.system_attrs.get("grid_id")
    if gid is None:
        return None
    return gid == trial.system_attrs.get("grid_id")


def is_excess(storage: BaseStorage, study_id: int, number: int, n_trials: int) -> bool:
    """True when trials numbered below ``number`` already fill ``n_trials`` (a lost race)."""
    trials = storage.get_all_trials(study_id, deepcopy=False)
    earlier = [t for t in trials if t.number < number]
    return study_progress(earlier, gone=superseded(trials)).counted >= n_trials


def yield_reason(
    storage: BaseStorage,
    study_id: int,
    trial: FrozenTrial,
    *,
    n_trials: int,
    is_grid: bool,
    wait: float = GRID_POINT_WAIT_SECONDS,
) -> str | None:
    """Why an asked trial (with its parameters) must not run, or None when it runs.

    A queued trial always runs. A fresh one yields when the trials before it fill ``n_trials``
    (:func:`is_excess`) or, with a grid sampler, when another trial holds its point
    (:func:`point_taken`). The reason is the ``error`` text the trial is told FAIL with.
    """
    if is_queued(trial):
        return None
    if is_excess(storage, study_id, trial.number, n_trials):
        return "not run: other workers reached n_trials first"
    if is_grid and point_taken(storage, study_id, trial, wait=wait):
        return "not run: another worker took this grid point first"
    return None
