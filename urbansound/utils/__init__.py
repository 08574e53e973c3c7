"""Helpers every layer may use, below the configuration: nothing here knows a dataset or a model.

- :mod:`~urbansound.utils.files`: atomic file writes (a reader never sees half a file), JSON of
  result values, one-line errors for writes that fail.
- :mod:`~urbansound.utils.progress`: progress bars on a terminal and periodic lines in a log
  (the one home of tqdm).
- :mod:`~urbansound.utils.redaction`: passwords hidden in storage URLs before anything shows them.
"""
