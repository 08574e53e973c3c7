"""``urbansound [overrides]`` (or ``python -m urbansound.run``): one cross-validated experiment,
or a sweep with ``-m`` or ``sweep=<name>``.

The Hydra task is :func:`urbansound.experiment.run.task`; ``--help`` prints the template of
``urbansound/conf/config.yaml`` (:mod:`urbansound.config.help`).
"""

from typing import Any

from urbansound.config.help import prepare_hydra_command
from urbansound.experiment.run import main as run_main

__all__ = ["COMMAND", "main"]

#: The console script.
COMMAND = "urbansound"


def main() -> Any:
    """The ``urbansound`` command: Hydra parses ``sys.argv``; returns the job's return value
    (Hydra exits with status 2 on a user error, 130 on Ctrl-C)."""
    prepare_hydra_command(COMMAND)
    return run_main()


if __name__ == "__main__":
    main()
