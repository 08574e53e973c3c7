"""``urbansound-fit [overrides]`` (or ``python -m urbansound.fit``): train one configuration
(a sweep's trial, a run's, or the command line's) into a model file.

The Hydra task is :func:`urbansound.experiment.fit.task`; ``--help`` prints the template of
``urbansound/conf/fit.yaml`` (:mod:`urbansound.config.help`).
"""

from urbansound.config.help import prepare_hydra_command
from urbansound.experiment.fit import main as fit_main

__all__ = ["COMMAND", "main"]

#: The console script.
COMMAND = "urbansound-fit"


def main() -> None:
    """The ``urbansound-fit`` command: Hydra parses ``sys.argv`` and runs the task (or the sweep);
    returns nothing (exit status 0). A user's error exits with status 2 and one ``error:``
    line, Ctrl-C with status 130 (:func:`urbansound.config.app.hydra_main`)."""
    prepare_hydra_command(COMMAND)
    fit_main()


if __name__ == "__main__":
    main()
