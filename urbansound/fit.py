"""``urbansound-fit [overrides]`` (or ``python -m urbansound.fit``): train one configuration
(a sweep's trial, a run's, or the command line's) into a model file.

The Hydra task is :func:`urbansound.experiment.fit.task`; ``--help`` prints the template of
``urbansound/conf/fit.yaml`` (:mod:`urbansound.config.help`).
"""

from typing import Any

from urbansound.config.help import prepare_hydra_command
from urbansound.experiment.fit import main as fit_main

__all__ = ["COMMAND", "main"]

#: The console script.
COMMAND = "urbansound-fit"


def main() -> Any:
    """The ``urbansound-fit`` command: Hydra parses ``sys.argv`` (exit status 2 on a user error,
    130 on Ctrl-C)."""
    prepare_hydra_command(COMMAND)
    return fit_main()


if __name__ == "__main__":
    main()
