"""``python -m urbansound.predict MODEL AUDIO...``: classify files, folders and long recordings.

The command is :func:`urbansound.inference.predict.main`.
"""

import sys

from urbansound.inference.predict import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
