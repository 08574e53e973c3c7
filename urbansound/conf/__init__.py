"""The Hydra config tree of urbansound, read by Hydra as ``pkg://urbansound.conf``.

One folder per config group (``data``, ``features``, ``model``, ``train``, ``cv``, ``tracking``,
and ``sweep`` for the named sweeps), each file extending its group's structured-config schema,
registered in Hydra's ConfigStore by :func:`urbansound.config.app.register_configs`.
"""
