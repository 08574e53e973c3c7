"""``python -m urbansound.fit [overrides]``: train one configuration into a model file.

The Hydra task is :func:`urbansound.experiment.fit.task`.
"""

from urbansound.experiment.fit import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
