"""``python -m urbansound.run [overrides]``: one cross-validated experiment, or a sweep with ``-m``.

The console script ``urbansound`` is the same command. The Hydra task is
:func:`urbansound.experiment.run.task`.
"""

from urbansound.experiment.run import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
