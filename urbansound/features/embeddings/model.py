"""The interface of a frozen embedding network: fixed-length windows in, one vector per window out.

A network is one class deriving from :class:`EmbeddingModel` (:class:`~urbansound.features.
embeddings.birdnet.BirdNET`, :class:`~urbansound.features.embeddings.onnx_model.OnnxModel`); the
windows, the cache, the pooling and every classifier are the same for all of them
(:mod:`urbansound.features.embeddings.extraction`). A class states:

- ``sample_rate`` (Hz): the rate clips are decoded at for it
  (:func:`urbansound.features.audio.load_audio`, librosa-equal);
- ``window_samples``: the samples of one window, ``W``;
- ``dim``: the size of one embedding;
- ``identity`` (:class:`ModelIdentity`): what the embeddings depend on -- the model file's
  SHA-256, the runtime and its version, the layer read -- and the model's licence, recorded in
  every result and model file made with it;
- :meth:`EmbeddingModel.embed`: float32 ``[batch, W]`` -> float32 ``[batch, dim]``.

A subclass implements two methods: :meth:`EmbeddingModel.open_session` (one runtime object: a
LiteRT interpreter, an onnxruntime session) and :meth:`EmbeddingModel.run_session` (one batch
through it). :meth:`EmbeddingModel.embed` keeps one session per calling thread (created on the
thread's first call), so the extraction's worker threads each have their own; LiteRT's
``invoke`` and onnxruntime's ``run`` release the GIL, so threads compute in parallel.

Windows (:func:`frame_windows`): window ``i`` starts at sample ``i * hop``; a clip of ``n``
samples has ``1 + ceil(max(n - W, 0) / hop)`` windows, and each window that runs past the end
(the last one, or a clip shorter than ``W``) is zero-padded to ``W``. With ``hop = W`` a 4 s clip
and 3 s windows gives ``[0, 3)`` and ``[3, 6)`` (padded).
"""

from __future__ import annotations

import abc
import functools
import hashlib
import math
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Bytes read at a time while hashing a model file.
_HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class ModelIdentity:
    """What a network's embeddings depend on, and its licence.

    Attributes
    ----------
    name:
        A short name of the network and the layer read (``BirdNET V2.4``, ``onnx``).
    sha256:
        Hex SHA-256 of the model file as read from disk.
    runtime, runtime_version:
        The inference runtime (its distribution name, ``ai-edge-litert``, ``onnxruntime``) and
        its installed version.
    licence:
        The model's licence, as its distributor states it (``CC BY-NC-SA 4.0``), or what is
        known of it.
    path:
        The model file's absolute path.
    layer:
        The tensor the embedding is read from.
    """

    name: str
    sha256: str
    runtime: str
    runtime_version: str
    licence: str
    path: str
    layer: str

    def to_dict(self) -> dict[str, str]:
        """A JSON-ready copy (the ``feature_model`` field of ``results.json`` and model files)."""
        return asdict(self)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of the file at ``path``, computed once per process for each (path, size,
    modification time): a sweep's trials in one process hash a 50 MB model once (~0.1 s).

    Raises
    ------
    OSError
        The file cannot be read.
    """
    path = os.path.abspath(os.fspath(path))
    st = os.stat(path)
    return _sha256(path, st.st_size, st.st_mtime_ns)


def n_windows(n_samples: int, *, window: int, hop: int) -> int:
    """How many windows a clip of ``n_samples`` has: ``1 + ceil(max(n_samples - window, 0) /
    hop)`` (one for a clip up to one window long)."""
    return 1 + math.ceil(max(n_samples - window, 0) / hop)


def frame_windows(
    y: np.ndarray, *, window: int, hop: int, first: int = 0, count: int | None = None
) -> np.ndarray:
    """Cut mono samples into the network's windows, each zero-padded to ``window`` samples.

    Parameters
    ----------
    y:
        ``(n,)`` float32 samples at the network's rate.
    window, hop:
        Window length and the step between window starts, in samples (both >= 1).
    first, count:
        Only windows ``first`` to ``first + count - 1`` (``count`` None: to the last one), so
        that a long recording need not be held as windows all at once.

    Returns
    -------
    numpy.ndarray
        ``(count, window)`` float32, C-contiguous (``count`` defaults to
        ``n_windows(n, window=window, hop=hop) - first``): row ``j`` is window ``i = first + j``,
        ``y[i * hop : i * hop + window]`` followed by zeros where ``y`` has ended.
    """
    if window < 1 or hop < 1:
        raise ValueError(f"window ({window}) and hop ({hop}) must be at least one sample")
    y = np.asarray(y, dtype=np.float32)
    total = n_windows(y.shape[0], window=window, hop=hop)
    count = total - first if count is None else count
    if first < 0 or count < 0 or first + count > total:
        raise ValueError(f"windows {first}..{first + count - 1} of {total}")
    out = np.zeros((count, window), dtype=np.float32)
    for j in range(count):
        start = (first + j) * hop
        piece = y[start : start + window]
        out[j, : piece.shape[0]] = piece
    return out


class EmbeddingModel(abc.ABC):
    """A frozen network mapping fixed-length windows to vectors (module docstring).

    Subclasses set ``sample_rate``, ``window_samples``, ``dim`` and ``identity`` in their
    constructor (cheaply: the extraction builds the model to key its cache even when every clip
    is cached, and a session is opened only at the first :meth:`embed` of each thread) and
    implement :meth:`open_session` and :meth:`run_session`.

    ``batch_size``: windows per runtime call; :meth:`embed` splits larger inputs. Results are the
    same for every batch size (the tests check bitwise equality); memory grows with it.
    """

    sample_rate: int
    window_samples: int
    dim: int
    identity: ModelIdentity

    def __init__(self, *, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self._local = threading.local()

    @abc.abstractmethod
    def open_session(self) -> Any:
        """A new runtime object able to run batches (one per thread; never shared)."""

    @abc.abstractmethod
    def run_session(self, session: Any, windows: np.ndarray) -> np.ndarray:
        """Run one batch, ``(b, window_samples)`` float32 C-contiguous with ``1 <= b <=
        batch_size``, through ``session``; returns ``(b, dim)`` (any float dtype)."""

    def use_session(self, session: Any) -> None:
        """Make ``session`` the calling thread's (one a constructor opened to check the file)."""
        self._local.session = session

    def session(self) -> Any:
        """The calling thread's runtime session, opened at its first call."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self.open_session()
        return session

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """Embed windows: ``(batch, window_samples)`` float32 -> ``(batch, dim)`` float32.

        Thread-safe (one session per thread). Batches larger than ``batch_size`` are run in
        slices of ``batch_size``; the result does not depend on how they are sliced.

        Raises
        ------
        ValueError
            ``windows`` is not 2-D with ``window_samples`` columns, or the network returned
            an array of another shape than ``(batch, dim)``.
        """
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        if windows.ndim != 2 or windows.shape[1] != self.window_samples:
            raise ValueError(
                f"{self.identity.name} embeds windows of shape (batch, {self.window_samples}), "
                f"got {windows.shape}"
            )
        session = self.session()
        out = np.empty((windows.shape[0], self.dim), dtype=np.float32)
        for start in range(0, windows.shape[0], self.batch_size):
            stop = min(start + self.batch_size, windows.shape[0])
            got = np.asarray(self.run_session(session, windows[start:stop]))
            if got.shape != (stop - start, self.dim):
                raise ValueError(
                    f"{self.identity.name} returned embeddings of shape {got.shape} for "
                    f"{stop - start} windows; expected ({stop - start}, {self.dim})"
                )
            out[start:stop] = got
        return out
