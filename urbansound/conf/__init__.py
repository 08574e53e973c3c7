"""The Hydra config tree of urbansound, read by Hydra as ``pkg://urbansound.conf``.

A package of YAML files, no code: ``config.yaml`` (the primary config of ``urbansound.run``),
``fit.yaml`` (that of ``urbansound.fit``) and one folder per config group (``data``, ``features``,
``model``, ``train``, ``cv``, ``tracking``, and ``sweep`` for the named sweeps). Each group file
extends its group's structured-config schema (:mod:`urbansound.config.schema`), which
:mod:`urbansound.config.app` stores in Hydra's ConfigStore before Hydra composes.
"""
