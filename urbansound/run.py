"""``urbansound [overrides]`` (or ``python -m urbansound.run``): one cross-validated experiment,
or a sweep with ``-m`` or ``sweep=<name>``.

The Hydra task is :func:`urbansound.experiment.run.task`; ``--help`` prints the template of
``urbansound/conf/config.yaml`` (:mod:`urbansound.config.help`).
"""

from urbansound.config.help import prepare_hydra_command
from urbansound.experiment.run import main as run_main

__all__ = ["COMMAND", "main"]

#: The console script.
COMMAND = "urbansound"


def main() -> None:
    """The ``urbansound`` command: Hydra parses ``sys.argv`` and runs the task (or the sweep);
    returns nothing (exit status 0). A user's error exits with status 2 and one ``error:``
    line, Ctrl-C with status 130 (:func:`urbansound.config.app.hydra_main`)."""
    prepare_hydra_command(COMMAND)
    run_main()


if __name__ == "__main__":
    main()
