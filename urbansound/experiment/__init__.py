"""One experiment and one final fit: the pipeline they share, their run directory, their tasks.

- :mod:`~urbansound.experiment.pipeline`: settings -> the dataset's clips, features, labels and
  folds (:class:`~urbansound.experiment.pipeline.PreparedData`), shared by run and fit;
- :mod:`~urbansound.experiment.rundir`: the one writer and reader of a run directory
  (``config.yaml``, ``results.json``, ``folds.csv``, ``predictions.npz``, ``fit.json``);
- :mod:`~urbansound.experiment.run`: a cross-validated run and its Hydra task
  (``python -m urbansound.run``);
- :mod:`~urbansound.experiment.callbacks`: the Hydra callbacks after a run or a sweep (dataset
  figures, the Comet upload command);
- :mod:`~urbansound.experiment.fit`: a final fit into a model file and its Hydra task
  (``python -m urbansound.fit``);
- :mod:`~urbansound.experiment.fit_source`: the ``fit`` node and the run, sweep or study a fit's
  configuration comes from;
- :mod:`~urbansound.experiment.fit_config`: that configuration with the command line's overrides,
  and the source's model family for Hydra's composition;
- :mod:`~urbansound.experiment.plots`: matplotlib figures of a run and of a dataset.
"""
