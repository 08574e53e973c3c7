"""The Hydra Sweeper of urbansound: every multirun is an Optuna study (see ``urbansound.sweep``).

A shell, as Hydra's own optuna sweeper is: Hydra imports this module when it scans for plugins
at start-up, so the work is in :mod:`._impl` (a module the scan skips), and Optuna and the sweep
logic are imported only once a sweep actually starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

if TYPE_CHECKING:
    from urbansound.sweep.summary import SweepSummary


class UrbansoundSweeper(Sweeper):
    """Runs a sweep as an Optuna study; its config is ``hydra.sweeper`` (``config.py``).

    Hydra instantiates it with every key of ``UrbansoundSweeperConf``, typed and defaulted by
    that dataclass (the one place the keys and defaults are written); ``sampler`` and ``pruner``
    arrive as config nodes (``_recursive_`` is off).
    """

    def __init__(self, **conf: Any) -> None:
        from ._impl import UrbansoundSweeperImpl

        self.sweeper = UrbansoundSweeperImpl(conf)

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        """Hydra's set-up before :meth:`sweep`, handed to the implementation."""
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> SweepSummary:
        """Run the study for ``arguments`` (the command line's task overrides); see
        :meth:`._impl.UrbansoundSweeperImpl.sweep`."""
        return self.sweeper.sweep(arguments)
