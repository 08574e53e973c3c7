"""``urbansound-predict MODEL AUDIO...`` (or ``python -m urbansound.predict``): classify files,
folders and long recordings with a model file.

The command is :func:`urbansound.inference.cli.main`; it returns the exit status.
"""

import sys

from urbansound.inference.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
