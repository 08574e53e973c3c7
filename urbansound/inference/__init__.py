"""A fitted model's file, and predictions with it on new audio.

- :mod:`~urbansound.inference.modelfile`: the model file (safetensors arrays, JSON metadata,
  scikit-learn members stored with skops): :func:`~urbansound.inference.modelfile.save_model`,
  :func:`~urbansound.inference.modelfile.load_model`, the ensemble's probabilities;
- :mod:`~urbansound.inference.validation`: what a model file may hold, checked before anything in
  it is used (metadata, member shapes, the types a scikit-learn member may hold);
- :mod:`~urbansound.inference.predict`: files and long recordings cut into windows, classified,
  merged into timelines;
- :mod:`~urbansound.inference.cli`: the ``python -m urbansound.predict`` command (inputs, CSV and
  JSON output).
"""
