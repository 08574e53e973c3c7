"""Hydra sweeper plugin of urbansound (``hydra/sweeper=urbansound``, the project's default).

Hydra loads sweepers only from the ``hydra_plugins`` namespace package; the logic is in
``urbansound.sweep``.
"""
