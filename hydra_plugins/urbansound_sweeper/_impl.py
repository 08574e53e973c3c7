"""What the urbansound Sweeper does with Hydra: compose jobs, launch them, print the summary.

The sweep itself (study, workers, trials) is ``urbansound.sweep``; this module is its Hydra side,
the only part of the sweeper that knows Hydra's launcher, its job returns and its composition.
Hydra's plugin scan skips it (its name starts with ``_``); it imports ``urbansound.sweep`` inside
the methods that run a sweep. A user error (a bad search space, storage or override) is raised
as an :class:`~urbansound.errors.UrbansoundError` for the entry point to print as one line.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf

if TYPE_CHECKING:
    from collections.abc import Sequence

    from urbansound.sweep.launch import Job, JobOutcome
    from urbansound.sweep.settings import SweepSettings
    from urbansound.sweep.summary import SweepSummary


class UrbansoundSweeperImpl(Sweeper):
    """The work of :class:`~hydra_plugins.urbansound_sweeper.urbansound_sweeper.UrbansoundSweeper`.

    ``conf`` is ``hydra.sweeper`` as Hydra passed it: every key of ``UrbansoundSweeperConf``
    (none is listed here; :func:`urbansound.sweep.settings.sweep_settings` reads and checks them).
    """

    def __init__(self, conf: Mapping[str, Any]) -> None:
        self.conf: dict[str, Any] = {key: _plain(value) for key, value in conf.items()}
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None
        self.check: Any = None

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        """Keep Hydra's config and context, choose the job check, and create the launcher.

        urbansound's own tasks get their config validated before any trial (another
        application's task is only composed); a launcher other than Hydra's basic one runs the
        task wrapped in :class:`~urbansound.sweep.job.RecordingTask`.
        """
        self.config = config
        self.hydra_context = hydra_context
        # urbansound's own tasks (urbansound.run) validate their config: so does the sweep
        # before any trial; another application's task is only composed.
        self.check = _check_job if _is_urbansound_task(task_function) else None
        if not _basic_launcher(config):
            # A batch's jobs record their outcomes on their trials: when one job's process dies
            # the launcher returns nothing for the whole batch, and the others are read back.
            from urbansound.sweep.job import RecordingTask

            task_function = RecordingTask(task_function, self.conf.get("storage_password_env"))
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> SweepSummary:
        """Run the study for ``arguments`` (the command line's task overrides); print a summary.

        Returns the summary. Ctrl-C queues the running trials again and exits with status 130
        and one line saying so.

        Raises
        ------
        UrbansoundError
            A user error (a bad search space, storage or override, a storage URL holding a
            password, a sweep directory of another study), before any trial runs; the storage
            URL's check comes before anything is written.
        SweepError
            When more than ``max_failure_rate x n_trials`` trials failed (after the summary).
        """
        from urbansound.sweep.conditional import resolve_settings
        from urbansound.sweep.ownership import Owner, check_sweep_dir
        from urbansound.sweep.runner import run_sweep
        from urbansound.sweep.settings import sweep_settings
        from urbansound.sweep.storage import SweepError

        assert self.config is not None
        settings = sweep_settings(
            self.conf,
            arguments=list(arguments),
            hydra_overrides=[str(o) for o in self.config.hydra.overrides.hydra],
            launcher=_plain(self.config.hydra.launcher),
        )
        # Resolving the sweep dir here fixes its ${now:...} for every job and every worker.
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        # Composes every branch of the space before any trial exists, and checks each value as
        # the job will (one line naming the key).
        settings = resolve_settings(settings, partial(self._compose, settings), self.check)
        # A directory of another study stops the sweep before anything of it is overwritten.
        check_sweep_dir(sweep_dir, Owner(settings.storage, settings.study_name))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # as Hydra's sweepers do
        try:
            summary = run_sweep(
                settings,
                self._launch,
                sweep_dir=sweep_dir,
                launch_batch=None if _basic_launcher(self.config) else self._launch_batch,
            )
        except KeyboardInterrupt:  # one line, on stderr only (a log record would be a second)
            print(
                "error: interrupted: the running trials are queued again; run the same command "
                "to resume",
                file=sys.stderr,
            )
            sys.exit(130)
        self._print(summary)
        running = summary.progress.running
        if running:  # never silent: their grid points or budget are not this sweep's to run
            numbers = ", ".join(f"#{n}" for n in running)
            why = (
                "with hydra.sweeper.heartbeat_interval=null nothing tells a trial of a killed "
                "sweep from one another process is running: if none is, run the same command "
                "with a heartbeat_interval (e.g. hydra.sweeper.heartbeat_interval=20) to fail "
                "them after the grace period and run them again"
                if settings.heartbeat_interval is None
                else "another process is running them (or, if it was killed, the same command "
                "fails them after hydra.sweeper.grace_period and runs them again)"
            )
            message = f"study {summary.study_name}: trial(s) {numbers} still RUNNING: {why}"
            print(f"warning: {message}", file=sys.stderr)  # once: no log record besides
        if summary.failed_too_often:
            raise SweepError(
                f"study {summary.study_name}: {summary.progress.failed} trials failed, more than "
                f"max_failure_rate {settings.max_failure_rate} x n_trials {settings.n_trials}; "
                "their errors are in trials.csv and in each job directory's error.txt"
            )
        return summary

    def _compose(self, settings: SweepSettings, overrides: list[str]) -> DictConfig:
        """The config a job with ``overrides`` gets (Hydra's composition, as the launcher's)."""
        from urbansound.config.overrides import format_value

        assert self.config is not None and self.hydra_context is not None
        return self.hydra_context.config_loader.load_sweep_config(
            self.config,
            [
                *overrides,
                f"trial.study_name={format_value(settings.study_name)}",
                f"trial.storage={format_value(settings.storage)}",
                "trial.number=0",
            ],
        )

    def _launch(self, overrides: list[str], job_num: int) -> JobOutcome:
        """Run one job through Hydra's launcher (a :data:`urbansound.sweep.launch.Launch`)."""
        from urbansound.sweep.launch import JobOutcome

        assert self.config is not None
        try:
            (ret,) = self.launcher.launch([overrides], initial_job_idx=job_num)
        except Exception as exc:  # the job's config does not compose (a bad option)
            exc.composition = True  # type: ignore[attr-defined]
            return JobOutcome(error=exc, output_dir=self._job_dir(job_num))
        return _outcome(ret)

    def _launch_batch(self, jobs: Sequence[Job]) -> list[JobOutcome]:
        """Run ``jobs`` in one ``launch()`` call of a launcher with its own parallelism.

        Each job's config is composed here first, so that one that does not compose fails its
        trial alone (inside a joblib or submitit job it would raise for the whole batch). Job
        directories stay numbered by trial when the batch's trial numbers are not consecutive
        (a queued retry, another machine's trials in between). When the launcher raises (a
        job's process died) every job of the call is returned ``lost``.
        """
        from urbansound.sweep.launch import JobOutcome

        assert self.config is not None
        outcomes: dict[int, JobOutcome] = {}
        ready: list[int] = []
        for i, job in enumerate(jobs):
            try:
                self.validate_batch_is_legal([job.overrides])
            except Exception as exc:
                exc.composition = True  # type: ignore[attr-defined]
                outcomes[i] = JobOutcome(error=exc, output_dir=self._job_dir(job.number))
            else:
                ready.append(i)
        if ready:
            first = jobs[ready[0]].number
            batch = [
                self._numbered(jobs[i].overrides, jobs[i].number, first + k)
                for k, i in enumerate(ready)
            ]
            try:
                rets = list(self.launcher.launch(batch, initial_job_idx=first))
                if len(rets) != len(ready):
                    raise RuntimeError(f"the launcher returned {len(rets)} of {len(ready)} jobs")
            except Exception as exc:
                for i in ready:
                    dir_ = self._job_dir(jobs[i].number)
                    outcomes[i] = JobOutcome(error=exc, output_dir=dir_, lost=True)
            else:
                for i, ret in zip(ready, rets, strict=True):
                    outcomes[i] = _outcome(ret)
        return [outcomes[i] for i in range(len(jobs))]

    def _numbered(self, overrides: list[str], number: int, job_num: int) -> list[str]:
        """``overrides`` plus, when Hydra's job number is not the trial number, the subdir."""
        assert self.config is not None
        if number == job_num:
            return overrides
        subdir = OmegaConf.to_container(self.config.hydra.sweep, resolve=False).get("subdir")
        if not isinstance(subdir, str) or "${hydra.job.num}" not in subdir:
            return overrides
        return [*overrides, f"hydra.sweep.subdir={subdir.replace('${hydra.job.num}', str(number))}"]

    def _job_dir(self, job_num: int) -> str | None:
        """The directory job ``job_num`` would have had (with Hydra's default subdir)."""
        assert self.config is not None
        subdir = OmegaConf.to_container(self.config.hydra.sweep, resolve=False).get("subdir")
        if subdir != "${hydra.job.num}":
            return None
        return str(Path(str(self.config.hydra.sweep.dir)) / str(job_num))

    @staticmethod
    def _print(summary: SweepSummary) -> None:
        p = summary.progress
        print(
            f"\nstudy {summary.study_name}: {p.complete} complete, {p.pruned} pruned, "
            f"{p.failed} failed (n_trials {summary.n_trials})"
        )
        print(summary.table)
        if summary.no_best:
            print(f"best: none, {summary.no_best}")
        if summary.best is not None:
            best = summary.best
            print(
                f"best: trial {best['best_trial']}, {best['metric']} {best['best_value']:.4f}: "
                + " ".join(best["overrides"])
            )
        if summary.csv_path is not None:
            print(f"trials: {summary.csv_path}")
        if summary.best_path is not None:
            print(f"best parameters: {summary.best_path}")
        print(f"dashboard: {summary.dashboard}")


def _outcome(ret: JobReturn) -> JobOutcome:
    """A finished Hydra job as a :class:`~urbansound.sweep.launch.JobOutcome`."""
    from urbansound.sweep._compat import job_exception
    from urbansound.sweep.launch import JobOutcome

    output_dir = None
    if ret.hydra_cfg is not None:
        output_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir")
    if ret.status == JobStatus.COMPLETED:
        return JobOutcome(value=ret.return_value, output_dir=output_dir)
    return JobOutcome(error=job_exception(ret), output_dir=output_dir)


def _is_urbansound_task(task_function: Any) -> bool:
    """True for a task function of the urbansound package (``python -m urbansound.run`` runs
    it as ``__main__``, so its file, not its module name, says so)."""
    import inspect

    import urbansound

    try:
        path = Path(inspect.getfile(inspect.unwrap(task_function))).resolve()
    except (TypeError, OSError):
        return False
    return path.is_relative_to(Path(urbansound.__file__).resolve().parent)


def _check_job(config: DictConfig) -> None:
    """Validate a composed job config as ``urbansound.run`` does (``urbansound.fit``'s extra
    ``fit`` node aside); raises ConfigError naming the key."""
    from urbansound.config.checks import settings_from_config

    plain = OmegaConf.to_container(config, resolve=False)
    assert isinstance(plain, dict)
    plain.pop("fit", None)
    settings_from_config(plain)


def _basic_launcher(config: DictConfig) -> bool:
    """True when ``hydra/launcher`` is Hydra's basic (in-process, one job at a time) launcher."""
    from urbansound.sweep.settings import BASIC_LAUNCHER

    return OmegaConf.select(config, "hydra.launcher._target_") in (None, BASIC_LAUNCHER)


def _plain(node: Any) -> Any:
    """A config node (or None) as plain Python containers."""
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node
