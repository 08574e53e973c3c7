"""The Hydra config tree of urbansound, read by Hydra as ``pkg://urbansound.conf``.

In the repository it is the top-level ``conf/`` directory; setuptools installs it as the package
``urbansound.conf`` (``[tool.setuptools.package-dir]`` in pyproject.toml). Importing it registers
the structured-config schemas that the group files extend (:mod:`urbansound.hydra_app`).
"""

import urbansound.hydra_app  # noqa: F401  (registers the schemas in Hydra's ConfigStore)
