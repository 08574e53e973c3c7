"""Helpers every layer may use, below the configuration: nothing here knows a dataset or a model.

- :mod:`~urbansound.utils.files`: file writes (atomic for regular files; links followed,
  devices and FIFOs written in place), what a path to read is, JSON of result values, one-line
  errors for writes that fail.
- :mod:`~urbansound.utils.memory`: an address-space limit (``ulimit -v``) checked before heavy
  libraries load, and the exceptions that mean memory ran out, each one line.
- :mod:`~urbansound.utils.progress`: progress bars on a terminal and periodic lines in a log
  (the one home of tqdm).
- :mod:`~urbansound.utils.redaction`: passwords hidden in storage URLs before anything shows them.
"""
