"""A user's own ONNX network (``features=onnx``): any pretrained model without our code changing.

The file (``features.embedding.path``) takes one float32 input ``[batch, samples]`` -- mono
audio at ``features.embedding.sample_rate`` Hz, ``window_s`` seconds per row -- and gives one
output ``[batch, dim]``: the embedding of each row. The batch dimension should be dynamic (a
fixed batch of 1 works with ``features.embedding.batch_size=1``). ``input`` and ``output`` name
the tensors (null: the model's only input and output); ``window_s`` null takes the model's fixed
input length. The model runs on onnxruntime's CPU provider, one session per worker thread, one
intra-op thread each (``onnxruntime`` releases the GIL while it runs).

The model file's SHA-256 keys the cache and is recorded in results and model files with the
file's path; :mod:`urbansound.inference` uses the file only while its hash matches. Its licence
is the user's to know: it is recorded as not stated.

Export a PyTorch model with ``torch.onnx.export(model, torch.zeros(1, n), "m.onnx",
input_names=["audio"], output_names=["embedding"], dynamic_axes={"audio": {0: "batch"},
"embedding": {0: "batch"}})`` (opset 17; torch's default exporter needs onnxscript).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np

from urbansound.errors import ConfigError
from urbansound.features.embeddings.model import EmbeddingModel, ModelIdentity, file_sha256

LICENCE = "not stated (a user's own model)"
INSTALL_HINT = "install the onnx extra (pip install -e '.[onnx]', which installs onnxruntime)"


def _dims(shape: list[Any]) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else "batch" for d in shape) + "]"


class OnnxModel(EmbeddingModel):
    """A user's ONNX file as an :class:`EmbeddingModel` (module docstring).

    Building one opens a session (to check the file's input and output and learn ``dim``),
    which becomes the session of the building thread.

    Raises
    ------
    ConfigError
        onnxruntime is not installed; the file is missing, unreadable or not an ONNX model; the
        input or output named does not exist (or, unnamed, is not the only one), is not float32
        of rank 2, or has a fixed length that disagrees with ``window_s``. The message names
        the ``features.embedding.*`` key.
    """

    def __init__(
        self,
        *,
        path: str | Path,
        sample_rate: int,
        window_s: float | None = None,
        input: str | None = None,
        output: str | None = None,
        batch_size: int = 8,
    ) -> None:
        super().__init__(batch_size=batch_size)
        if importlib.util.find_spec("onnxruntime") is None:
            raise ConfigError(f"features=onnx needs the package onnxruntime: {INSTALL_HINT}")
        where = f"features.embedding.path={path}"
        self.path = Path(path).expanduser().absolute()
        if not self.path.is_file():
            raise ConfigError(f"{where}: no such file; give the path of your .onnx model")
        try:
            sha256 = file_sha256(self.path)
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read it ({exc.strerror})") from None
        self.sample_rate = int(sample_rate)
        session = self.open_session()
        self.input = self._pick(session.get_inputs(), input, "input")
        self.output = self._pick(session.get_outputs(), output, "output")
        in_shape, out_shape = self.input.shape, self.output.shape
        fixed = in_shape[1] if len(in_shape) == 2 and isinstance(in_shape[1], int) else None
        self.window_samples = self._window(fixed, window_s, where)
        self.dim = out_shape[1] if isinstance(out_shape[1], int) else 0
        self.use_session(session)
        if not self.dim:  # a dynamic embedding size: one silent window tells it
            probe = self.run_session(session, np.zeros((1, self.window_samples), np.float32))
            self.dim = int(np.asarray(probe).shape[-1])
        self.identity = ModelIdentity(
            name=f"onnx:{self.path.name}",
            sha256=sha256,
            runtime="onnxruntime",
            runtime_version=importlib.metadata.version("onnxruntime"),
            licence=LICENCE,
            path=str(self.path),
            layer=self.output.name,
        )

    def _pick(self, nodes: list[Any], name: str | None, what: str) -> Any:
        """The input or output named ``name`` (None: the only one), float32 of rank 2."""
        names = ", ".join(n.name for n in nodes)
        key = f"features.embedding.{what}"
        if name is None:
            if len(nodes) != 1:
                raise ConfigError(
                    f"{key}=null: {self.path} has {len(nodes)} {what}s ({names}); "
                    f"name the one to use with {key}=NAME"
                )
            node = nodes[0]
        else:
            node = next((n for n in nodes if n.name == name), None)
            if node is None:
                raise ConfigError(
                    f"{key}={name}: {self.path} has no {what} of that name; its {what}s: {names}"
                )
        if node.type != "tensor(float)" or len(node.shape) != 2:
            raise ConfigError(
                f"{key}: {self.path}'s {what} {node.name} is {node.type} {_dims(node.shape)}; "
                "an embedding model takes float32 [batch, samples] and gives float32 "
                "[batch, dim]"
            )
        return node

    def _window(self, fixed: int | None, window_s: float | None, where: str) -> int:
        """The window in samples: the model's fixed input length, or ``window_s``."""
        if window_s is None:
            if fixed is None:
                raise ConfigError(
                    f"{where}: its input {self.input.name} takes any number of samples; set "
                    "features.embedding.window_s to the seconds per window it was trained on"
                )
            return fixed
        samples = round(window_s * self.sample_rate)
        if samples < 1 or not math.isfinite(window_s):
            raise ConfigError(f"features.embedding.window_s={window_s} is less than one sample")
        if fixed is not None and fixed != samples:
            raise ConfigError(
                f"features.embedding.window_s={window_s} is {samples} samples at "
                f"{self.sample_rate} Hz, but {self.path}'s input {self.input.name} takes "
                f"{fixed}: set window_s={fixed / self.sample_rate:g} or null"
            )
        return samples

    def open_session(self) -> Any:
        """An onnxruntime CPU session over the file, one intra-op and one inter-op thread."""
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its warnings are not the user's business
        try:
            return onnxruntime.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            reason = " ".join(str(exc).split())[:300]
            raise ConfigError(
                f"features.embedding.path={self.path}: onnxruntime cannot load it ({reason})"
            ) from None

    def run_session(self, session: Any, windows: np.ndarray) -> np.ndarray:
        """One batch through the thread's session."""
        (out,) = session.run([self.output.name], {self.input.name: windows})
        return out
