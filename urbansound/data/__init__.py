"""The dataset: which one a run uses, its index and folds, the evaluation protocol, the demo corpus.

- :mod:`~urbansound.data.layout`: UrbanSound8K's layout as constants (class names, the metadata
  CSV's columns and path, the ten folds).
- :mod:`~urbansound.data.source`: which dataset a run uses (``data.root``, ``$URBANSOUND8K``,
  ``./data/UrbanSound8K``, else the demo corpus).
- :mod:`~urbansound.data.index`: reading and checking a dataset folder into a
  :class:`~urbansound.data.index.DatasetIndex` (present and missing clips, empty folds,
  recordings whose slices span folds).
- :mod:`~urbansound.data.cv`: the evaluation protocol, the dataset authors' fold rules quoted:
  train/test splits over the predefined folds, the held-out outer fold, the LEAKY random split.
- :mod:`~urbansound.data.demo`: the built-in demo corpus in UrbanSound8K's layout (its plan and
  files).
- :mod:`~urbansound.data.demo_sounds`: the synthesis of the demo corpus's sounds.
"""
