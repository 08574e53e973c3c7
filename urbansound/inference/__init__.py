"""A fitted model's file, and predictions with it on new audio.

- :mod:`~urbansound.inference.modelfile`: the model file (safetensors arrays, JSON metadata with a
  checksum, scikit-learn members stored with skops): :func:`~urbansound.inference.modelfile.
  save_model`, :func:`~urbansound.inference.modelfile.load_model`, the ensemble's probabilities;
- :mod:`~urbansound.inference.stage`: the feature settings a model file stores and the versions
  its features depend on;
- :mod:`~urbansound.inference.validation`: what a model file may hold, checked before anything in
  it is used (member types, checksum, metadata ranges, tensors, member shapes and weights);
- :mod:`~urbansound.inference.allowlist`: the explicit allowlist of types a scikit-learn member
  may hold;
- :mod:`~urbansound.inference.fitted`: a loaded scikit-learn member's trees, neighbour index and
  support vectors, checked before its compiled code follows their indices;
- :mod:`~urbansound.inference.predict`: files and long recordings cut into windows, classified,
  merged into timelines;
- :mod:`~urbansound.inference.cli`: the ``python -m urbansound.predict`` command (inputs, CSV and
  JSON output).
"""
