"""urbansound: an experiment sweep orchestrator for audio classification on UrbanSound8K.

One subpackage per pipeline stage, from the top layer to the bottom one:

- :mod:`urbansound.run`, :mod:`urbansound.fit`, :mod:`urbansound.predict`: the entry modules
  (``python -m urbansound.run|fit|predict``), thin shells over the tasks.
- :mod:`urbansound.report`: sweep reports (tables, figures, paired tests, protocols).
- :mod:`urbansound.experiment`: the pipeline from settings to a run directory; run and fit.
- :mod:`urbansound.inference`: the model file and ``predict``.
- :mod:`urbansound.sweep`: Optuna studies behind the Hydra sweeper (the only user of Optuna).
- :mod:`urbansound.tracking`: Comet experiments (the only user of comet_ml).
- :mod:`urbansound.training`: cross-validation of the MLP and the scikit-learn families, metrics,
  typed results.
- :mod:`urbansound.features`: decoding, DSP, extraction and the feature cache.
- :mod:`urbansound.data`: the dataset index, the evaluation protocol, the demo corpus.
- :mod:`urbansound.config`: typed settings, schemas and checks, Hydra registration; the YAML tree
  is :mod:`urbansound.conf`.
- :mod:`urbansound.utils`: atomic file writes, progress bars, redaction of secrets.
- :mod:`urbansound.errors`: the exception types a user can cause.
"""

__version__ = "0.1.0"
