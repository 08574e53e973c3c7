"""How the sweeper hands jobs to Hydra's launcher, and what comes back: the plugin's side.

The Sweeper (``hydra_plugins/urbansound_sweeper``) wraps its Hydra launcher in a :data:`Launch`
(one job per call: Hydra's basic launcher) or a :data:`LaunchBatch` (a batch in one
``launch()`` call: a launcher with its own parallelism); the trials' life
(:mod:`urbansound.sweep.lifecycle`) calls them and tells each trial its :class:`JobOutcome`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class JobOutcome:
    """What the launcher reports for one job."""

    value: Any = None
    error: BaseException | None = None
    output_dir: str | None = None
    # True when the launcher lost the job (its process died): no outcome came back.
    lost: bool = False


@dataclass(frozen=True)
class Job:
    """One job of a launcher batch: its overrides and its job number (the trial number)."""

    overrides: list[str]
    number: int


#: launch(overrides, job_num) -> JobOutcome: runs one job (the plugin wraps Hydra's launcher).
Launch = Callable[[list[str], int], JobOutcome]
#: launch_batch(jobs) -> one JobOutcome per job, in order: runs them in one launch() call.
LaunchBatch = Callable[[Sequence[Job]], list[JobOutcome]]


def one_at_a_time(launch: Launch) -> LaunchBatch:
    """``launch`` as a :data:`LaunchBatch` (Hydra's basic launcher: one job after the other).

    A task that calls ``sys.exit`` fails its trial, not the sweep.
    """

    def launch_batch(jobs: Sequence[Job]) -> list[JobOutcome]:
        outcomes = []
        for job in jobs:
            try:
                outcomes.append(launch(job.overrides, job.number))
            except SystemExit as exc:
                outcomes.append(JobOutcome(error=exc))
        return outcomes

    return launch_batch
