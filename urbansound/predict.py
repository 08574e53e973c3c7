"""``python -m urbansound.predict MODEL AUDIO...``: classify files, folders and long recordings.

The command is :func:`urbansound.inference.cli.main`.
"""

import sys

from urbansound.inference.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
