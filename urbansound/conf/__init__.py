"""The Hydra config tree of urbansound, read by Hydra as ``pkg://urbansound.conf``.

One folder per config group (``data``, ``features``, ``model``, ``train``, ``cv``, ``tracking``,
and ``sweep`` for the named sweeps), each file extending its group's structured-config schema.
Importing it registers those schemas in Hydra's ConfigStore (:mod:`urbansound.config.app`).
"""

import urbansound.config.app  # noqa: F401  (registers the schemas in Hydra's ConfigStore)
