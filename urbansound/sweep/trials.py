"""What the sweeper writes on a trial, and how a study's trials are counted.

The sweeper marks trials with system attributes (names below); Optuna's own marks are read as
they are (``retry_history`` and ``failed_trial`` of a queued retry, ``fixed_params`` of
``enqueue_trial``, ``grid_id`` of a grid sampler). Counting rules, shown everywhere the same way
(the worker loop, the summary, the trial table): a trial that was queued again is replaced by
its copy, and a trial marked :data:`EXCESS_ATTR` (not run: other workers filled the study first,
another trial held its grid point, or it never got parameters) does not count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

#: The pruner node (``hydra.sweeper.pruner``) the job rebuilds to decide on pruning.
PRUNER_ATTR = "urbansound:pruner"
#: Set on a trial that was not run and does not count toward ``n_trials``.
EXCESS_ATTR = "urbansound:excess"
#: Wall-clock time (POSIX seconds) of the running trial's last heartbeat.
HEARTBEAT_ATTR = "urbansound:heartbeat"
#: What a launcher's job recorded before it returned (``{"value"}``, ``{"pruned"}``, ``{"error"}``).
OUTCOME_ATTR = "urbansound:job_outcome"


def is_queued(trial: FrozenTrial) -> bool:
    """True for a trial queued with its parameters: a retry, or ``study.enqueue_trial``."""
    return "retry_history" in trial.system_attrs or "fixed_params" in trial.system_attrs


def superseded(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of trials that were queued again (a retry replaces them)."""
    out: set[int] = set()
    for t in trials:
        out.update(t.system_attrs.get("retry_history", []))
    return out


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


def study_progress(trials: Sequence[FrozenTrial], *, gone: set[int] | None = None) -> Progress:
    """Count a study's trials the way the sweeper does (retried and excess trials left out).

    ``gone``: numbers of retried trials (default: found among ``trials``).
    """
    gone = superseded(trials) if gone is None else gone
    live = [t for t in trials if t.number not in gone and not t.system_attrs.get(EXCESS_ATTR)]
    return Progress(
        complete=sum(t.state == TrialState.COMPLETE for t in live),
        pruned=sum(t.state == TrialState.PRUNED for t in live),
        failed=sum(t.state == TrialState.FAIL for t in live),
        running=[t.number for t in live if t.state == TrialState.RUNNING],
        waiting=sum(t.state == TrialState.WAITING for t in live),
    )
