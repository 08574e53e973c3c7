"""Features of clips: decoding, hand-made features, pretrained embeddings, their cache.

- :mod:`~urbansound.features.extraction`: the one entry point for every ``features.kind``
  (:func:`~urbansound.features.extraction.extract_features`,
  :func:`~urbansound.features.extraction.feature_names`).
- :mod:`~urbansound.features.featureset`: what an extraction returns
  (:class:`~urbansound.features.featureset.FeatureSet`).
- :mod:`~urbansound.features.audio`: decoding and resampling, equal to ``librosa.load``.
- :mod:`~urbansound.features.dsp`: the librosa-equal signal processing (log-mel, MFCC, deltas)
  and pooling over time or windows.
- :mod:`~urbansound.features.handmade`: the hand-made kinds (``mfcc``, ``logmel``): the cached
  log-mel stage and what is computed from it on load.
- :mod:`~urbansound.features.embeddings`: frozen networks (BirdNET V2.4, a user's ONNX file)
  whose window embeddings, cached per clip and pooled, are the features of the embedding kinds.
- :mod:`~urbansound.features.cache`: the on-disk cache shared by both (entry format, keys,
  atomic writes, checked reads).
"""
