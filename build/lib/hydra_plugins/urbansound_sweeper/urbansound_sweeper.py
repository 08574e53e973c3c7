"""The Hydra Sweeper of urbansound: every multirun is an Optuna study (see ``urbansound.sweep``).

Thin on purpose: Hydra imports this module when it scans for plugins at start-up, so Optuna and
the sweep logic are imported only once a sweep actually starts.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from urbansound.sweep import JobOutcome, SweepSettings, SweepSummary

log = logging.getLogger(__name__)


class UrbansoundSweeper(Sweeper):
    """Runs a sweep as an Optuna study; its config is ``hydra.sweeper`` (``config.py``)."""

    def __init__(self, **conf: Any) -> None:
        # The keys are read back from the composed config in sweep(); the constructor only
        # accepts them (Hydra instantiates the plugin with every key of hydra.sweeper).
        self.conf = conf
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> SweepSummary:
        """Run the study for ``arguments`` (the command line's task overrides); print a summary.

        User errors (a bad search space, storage or override) print one line and exit with
        status 2, as a single run does.
        """
        from urbansound import sweep
        from urbansound.errors import UrbansoundError

        assert self.config is not None
        conf = OmegaConf.to_container(self.config.hydra.sweeper, resolve=True)
        assert isinstance(conf, dict)
        hydra_overrides = [str(o) for o in self.config.hydra.overrides.hydra]
        try:
            settings = sweep.sweep_settings(
                conf, arguments=list(arguments), hydra_overrides=hydra_overrides
            )
            # Resolving the sweep dir here fixes its ${now:...} for every job and every worker.
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            self._validate(settings)
            sweep_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # as Hydra's sweepers do
            summary = sweep.run_sweep(settings, self._launch, sweep_dir=sweep_dir)
        except UrbansoundError as exc:
            log.error("%s", exc)
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        self._print(summary)
        if summary.failed_too_often:
            message = (
                f"study {summary.study_name}: {summary.progress.failed} trials failed, more than "
                f"max_failure_rate {settings.max_failure_rate} x n_trials {settings.n_trials}; "
                "their errors are in trials.csv and in each job directory's error.txt"
            )
            log.error("%s", message)
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
        return summary

    def _validate(self, settings: SweepSettings) -> None:
        """Compose one job's config before any trial exists, so a bad key fails fast."""
        from urbansound import sweep
        from urbansound.errors import ConfigError

        sample = {name: _first_value(p) for name, p in settings.space.params.items()}
        overrides = [
            *settings.space.overrides(sample),
            f"trial.study_name={sweep.format_value(settings.study_name)}",
            f"trial.storage={sweep.format_value(settings.storage)}",
            "trial.number=0",
        ]
        try:
            self.validate_batch_is_legal([overrides])
        except Exception as exc:
            raise ConfigError(f"the sweep's overrides do not compose: {exc}") from None

    def _launch(self, overrides: list[str], job_num: int) -> JobOutcome:
        from urbansound.sweep import JobOutcome

        (ret,) = self.launcher.launch([overrides], initial_job_idx=job_num)
        output_dir = None
        if ret.hydra_cfg is not None:
            output_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir")
        if ret.status == JobStatus.COMPLETED:
            return JobOutcome(value=ret.return_value, output_dir=output_dir)
        # The exception itself: the public return_value would re-raise it and print to stderr.
        return JobOutcome(error=ret._return_value, output_dir=output_dir)

    @staticmethod
    def _print(summary: SweepSummary) -> None:
        p = summary.progress
        print(
            f"\nstudy {summary.study_name}: {p.complete} complete, {p.pruned} pruned, "
            f"{p.failed} failed (n_trials {summary.n_trials})"
        )
        print(summary.table)
        if summary.best is not None:
            best = summary.best
            print(
                f"best: trial {best['best_trial']}, {best['metric']} {best['best_value']:.4f}: "
                + " ".join(best["overrides"])
            )
        if summary.csv_path is not None:
            print(f"trials: {summary.csv_path}\nbest parameters: {summary.best_path}")
        print(f"dashboard: {summary.dashboard}")


def _first_value(param: Any) -> Any:
    dist = param.distribution
    if hasattr(dist, "choices"):
        return dist.choices[0]
    return dist.low
