"""``python -m urbansound.fit [overrides]``: train one configuration into a model file.

The task is :func:`urbansound.experiment.fit.main`.
"""

from urbansound.experiment.fit import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
