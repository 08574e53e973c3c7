"""The grid rules (urbansound.sweep.grid) on a real SQLite storage, trials made as workers make
them: which point a trial draws, which trials hold a point, when a fresh trial yields."""

from __future__ import annotations

import threading
from pathlib import Path

import optuna
from optuna.trial import TrialState

from urbansound.sweep.grid import BranchGridSampler, grid_n_trials, point_taken, yield_reason
from urbansound.sweep.lifecycle import requeue
from urbansound.sweep.trials import EXCESS_ATTR

DIST = optuna.distributions.CategoricalDistribution([0, 1, 2, 3])
HELD = "not run: another worker took this grid point first"
FULL = "not run: other workers reached n_trials first"


class Trials:
    """A study in a SQLite file whose trials are created by hand, as racing workers leave them."""

    def __init__(self, tmp_path: Path, name: str) -> None:
        self.storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'g.db'}")
        self.name = name
        self.study_id = optuna.create_study(storage=self.storage, study_name=name)._study_id

    def add(self, grid_id=None, x=None, fixed=None, state=None) -> int:
        """A new trial: queued (``fixed``), given a grid point, parameters, a final state."""
        tid = self.storage.create_new_trial(self.study_id)
        if fixed is not None:
            self.storage.set_trial_system_attr(tid, "fixed_params", fixed)
        if grid_id is not None:
            self.storage.set_trial_system_attr(tid, "grid_id", grid_id)
        if x is not None:
            self.storage.set_trial_param(tid, "x", DIST.to_internal_repr(x), DIST)
        if state is not None:
            self.storage.set_trial_state_values(
                tid, state, [0.5] if state.name == "COMPLETE" else None
            )
        return tid

    def taken(self, tid: int, wait: float = 0.0) -> bool:
        return point_taken(self.storage, self.study_id, self.storage.get_trial(tid), wait=wait)

    def reason(self, tid: int, *, n_trials: int, is_grid: bool = True) -> str | None:
        frozen = self.storage.get_trial(tid)
        return yield_reason(
            self.storage, self.study_id, frozen, n_trials=n_trials, is_grid=is_grid, wait=0.0
        )


def test_a_fresh_grid_trial_yields_to_any_trial_holding_its_point_even_one_being_asked(tmp_path):
    """Two workers that ask at once may both draw the last free grid point (the CI failure
    [0, 2, 2, 3]): the later trial must see the earlier one's point even before that trial
    has parameters, and wait for one still inside ``ask`` rather than guess."""
    g = Trials(tmp_path, "g")
    inside_ask = g.add()  # trial 0: created, its sampler has not chosen yet
    drawn = g.add(grid_id=2)  # trial 1: the same point drawn, parameters not set yet
    later = g.add(grid_id=2, x=2)  # trial 2: asked, checking
    # trial 1 holds the point by its grid id alone; trial 0 is not waited for then
    assert g.taken(later)
    # trial 1 is the earliest holder: it does not yield to trial 2
    g.storage.set_trial_param(drawn, "x", DIST.to_internal_repr(2), DIST)
    assert not g.taken(drawn)
    # trial 1 must wait for trial 0: its point is decided while the check waits
    threading.Timer(0.5, g.storage.set_trial_system_attr, (inside_ask, "grid_id", 2)).start()
    assert g.taken(drawn, wait=30.0)

    # an earlier trial that never gets a point (its process died in ask) holds none
    h = Trials(tmp_path, "h")
    h.add()
    assert not h.taken(h.add(grid_id=1, x=1), wait=0.3)

    # a queued trial holds its point from creation (fixed_params), before any grid id
    q = Trials(tmp_path, "q")
    q.add(fixed={"x": 3})
    assert q.taken(q.add(grid_id=3, x=3))

    # a dead trial's point is held while it is FAIL and then by its retry, whose number is
    # higher than a fresh trial's that drew the point meanwhile (the retry runs regardless)
    r = Trials(tmp_path, "r")
    dead, fresh = r.add(grid_id=1, x=1), r.add(grid_id=1, x=1)
    r.storage.set_trial_state_values(dead, TrialState.FAIL)
    assert r.taken(fresh)
    requeue(optuna.load_study(study_name="r", storage=r.storage), r.storage.get_trial(dead), None)
    assert r.taken(fresh)  # trial 2: WAITING, x=1, supersedes trial 0

    # a trial that yielded without running (urbansound:excess) holds no point
    e = Trials(tmp_path, "e")
    not_run, drawn = e.add(grid_id=2, x=2), e.add(grid_id=2, x=2)
    e.storage.set_trial_system_attr(not_run, EXCESS_ATTR, True)
    e.storage.set_trial_state_values(not_run, TrialState.FAIL)
    assert not e.taken(drawn)


def test_a_fresh_trial_yields_when_the_study_is_full_or_its_point_is_held(tmp_path):
    t = Trials(tmp_path, "y")
    t.add(x=0, state=TrialState.COMPLETE)
    t.add(x=1, state=TrialState.FAIL)  # a failed point counts and is not drawn again
    fresh = t.add(grid_id=2, x=2)
    assert t.reason(fresh, n_trials=3) is None
    assert t.reason(fresh, n_trials=2) == FULL  # trials 0 and 1 fill the study: a lost race
    twice = t.add(grid_id=1, x=1)
    assert t.reason(twice, n_trials=4) == HELD
    # a search (not a grid) may draw a value again: only n_trials makes it yield
    assert t.reason(twice, n_trials=4, is_grid=False) is None
    # a queued trial (a retry, enqueue_trial) always runs: it was counted when it was queued
    queued = t.add(fixed={"x": 1}, x=1)
    assert t.reason(queued, n_trials=1) is None


def test_a_grid_runs_once() -> None:
    assert grid_n_trials(None, 6) == 6
    assert grid_n_trials(10, 6) == 6
    assert grid_n_trials(4, 6) == 4


def test_workers_asking_at_once_draw_different_points(tmp_path) -> None:
    """Every trial is RUNNING and without a point when the sampler sees it (n_jobs workers
    asking at the start of a sweep): each draws another point, and every worker and resumed run
    (the same seed) maps trial k to the same point."""
    points = [{"m": m, "x": x} for m in ("a", "b") for x in (0, 1)] + [{"m": "c"}]

    def draw(name: str, n: int) -> tuple[Trials, list[int], list[int]]:
        sampler = BranchGridSampler(points, seed=0)
        t = Trials(tmp_path, name)
        study = optuna.load_study(study_name=name, storage=t.storage, sampler=sampler)
        ids = [t.add() for _ in range(n)]
        for tid in ids:
            sampler.before_trial(study, t.storage.get_trial(tid))
        return t, ids, [t.storage.get_trial(tid).system_attrs["grid_id"] for tid in ids]

    t, ids, drawn = draw("at_once", len(points))
    assert sorted(drawn) == list(range(len(points)))
    assert draw("again", len(points))[2] == drawn
    # a finished point is not drawn again, even while every other one is still running
    t.storage.set_trial_state_values(ids[0], TrialState.COMPLETE, [0.0])
    sampler = BranchGridSampler(points, seed=0)
    study = optuna.load_study(study_name="at_once", storage=t.storage, sampler=sampler)
    late = t.add()
    sampler.before_trial(study, t.storage.get_trial(late))
    assert t.storage.get_trial(late).system_attrs["grid_id"] != drawn[0]
    # a queued trial keeps its own point
    queued = t.add(fixed={"m": "c"})
    sampler.before_trial(study, t.storage.get_trial(queued))
    assert "grid_id" not in t.storage.get_trial(queued).system_attrs
