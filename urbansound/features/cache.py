"""The on-disk feature cache: entry format, keys, writing and reading entries.

The extractions (:mod:`urbansound.features.handmade` for ``mfcc``/``logmel``,
:mod:`urbansound.features.embeddings.extraction` for the embedding kinds) decide what is cached (a
clip's stage, a whole feature matrix) and which settings an entry depends on (their stage and
result specs); this module holds how: the clips' identities, the key of an entry, where it lives,
its container format, the atomic write with its failure policy, the checked read, and the removal
of stale temporary files.

Layout (``features.cache_dir``; safe to share between processes and machines)
-----------------------------------------------------------------------------
- ``logmel/<kk>/<key>.bin``: one clip's stage, float32 ``(n_mels, n_frames)``. ``key`` is the
  SHA-256 of the stage parameters (``sr``, ``n_fft``, ``hop_length``, ``win_length``, ``window``,
  ``n_mels``, ``fmin``, ``fmax``; ``None`` resolved to its value), the versions of librosa, soxr,
  soundfile, libsndfile, numpy and scipy, the stage version of
  :mod:`urbansound.features.extraction`, and the clip's identity: absolute path, size and
  modification time (ns). ``kk`` is the key's first two hex digits. ``top_db``, ``kind``,
  ``n_mfcc``, ``lifter``, ``deltas`` and ``pooling`` are not in the key: a sweep over them never
  decodes audio again.
- ``embeddings/<kk>/<key>.bin``: one clip's window embeddings, float32 ``(n_windows, dim)``,
  keyed by the network (its file's SHA-256, the layer read, the runtime and its version), the
  sample rate, window and hop in samples, the versions of soxr, soundfile, libsndfile and numpy
  (the decoding), the embedding stage version and the clip's identity. The model file's path is
  not in the key: machines that install it in different places share entries. Pooling and
  ``concat_mfcc`` are not in it: a sweep over them never runs the network again.
- ``features/<key>.bin``: the whole feature matrix of one call (every clip's identity, in order,
  plus every feature setting), written when no clip was skipped. Re-running the same experiment
  (a sweep over model or training settings) reads one file instead of one per clip.
- ``tmp/``: files being written. Each entry is written there and renamed into place
  (``os.replace``, atomic), so readers see a whole entry or none; files in ``tmp/`` older than an
  hour (left by a killed process) are removed at the next extraction.

When the cache cannot be written (the extraction writes a byte in ``tmp/`` before it starts, so
a read-only mount or a file in the way is found at once, even by root), or a write fails with a
full disk or a permission error, the extraction stops with one
:class:`~urbansound.errors.OutputError` line naming the path and ``features.cache_dir``: the
half-written entry is removed, the whole ones stay valid. A path blocked for one entry only (a
directory where the entry file should be, a file where its folder should be) is a warning, once
per extraction, and that entry is computed without being cached.

An entry is a small container for one 2-D float32 array: a fixed 64-byte header (8-byte magic,
the 32-byte key, CRC-32 of the payload, rows, columns, padding) and the raw array. A read checks
all of them, that the file's size is exactly header + array and that the array has the shape
the caller needs (``n_mels`` rows and at least one frame; ``(clips, features)`` for a whole
matrix), so a truncated, overwritten or foreign file is detected, logged, recomputed and
replaced, never returned. A FIFO or device where an entry should be is opened without blocking,
treated as absent and replaced by the entry. A read is one
``open``, ``fstat`` and ``readv`` into a preallocated buffer that becomes the array (no copy),
and the ``top_db`` floor is then applied in that buffer: reading the stages back is most of the
cost of a sweep over ``n_mfcc``. (This format rather than ``joblib.dump``: it carries a checksum
and loads 5-6x faster; the fixed header rather than a JSON one parses in a microsecond.)
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import stat
import struct
import tempfile
import time
import uuid
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from urbansound.errors import ConfigError, OutputError
from urbansound.features.audio import audio_error
from urbansound.utils.files import output_error

logger = logging.getLogger(__name__)

_TMP_MAX_AGE_S = 3600.0
MAGIC = b"USFEAT2\n"
# An entry's header: magic, key, CRC-32 of the payload, rows, columns; padded to 64 bytes so that
# the float32 payload after it stays aligned in the buffer it is read into.
HEAD = struct.Struct("<8s32sIII12x")


class CorruptEntry(Exception):
    """A file where an entry should be that is not a whole, valid entry for its key."""


# --------------------------------------------------------------------------------------------
# Keys


def library_versions() -> dict[str, str]:
    """Versions of the libraries a stage depends on (part of every key: an upgrade recomputes)."""
    import librosa
    import scipy
    import soundfile
    import soxr

    return {
        "librosa": librosa.__version__,
        "soxr": soxr.__version__,
        "soundfile": soundfile.__version__,
        "libsndfile": soundfile.__libsndfile_version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }


def digest(spec: dict) -> bytes:
    """SHA-256 (32 bytes) of a JSON-able ``spec``, independent of its key order."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).digest()


def clip_key(prefix: bytes, ident: tuple[str, int, int]) -> bytes:
    """Key of one clip's stage: ``prefix`` (the stage spec's digest) and the clip's identity,
    ``(absolute path, size, mtime_ns)``."""
    path, size, mtime_ns = ident
    return hashlib.sha256(prefix + f"\0{path}\0{size}\0{mtime_ns}".encode()).digest()


def stage_path(root: str, key: bytes, folder: str = "logmel") -> str:
    """Path of the per-clip entry ``key`` under the cache ``root``: ``<folder>/<kk>/<key>.bin``
    (``logmel`` for the hand-made stage, ``embeddings`` for window embeddings)."""
    h = key.hex()
    return os.path.join(root, folder, h[:2], f"{h}.bin")  # str: pathlib costs on cached loads


#: A clip's place in the input and its identity: ``(index, absolute path, size, mtime_ns)``.
ClipItem = tuple[int, str, int, int]


def cache_root(cache_dir: str) -> Path:
    """The absolute cache folder of ``features.cache_dir`` (``~`` expanded).

    Raises
    ------
    ConfigError
        ``cache_dir`` is empty or blank (``Path("")`` is the working directory: the cache's
        folders would be spread there).
    """
    if not str(cache_dir).strip():
        raise ConfigError(
            f"features.cache_dir={cache_dir!r} is empty; give the feature cache a folder "
            "of its own (default outputs/cache/features)"
        )
    return Path(cache_dir).expanduser().absolute()


def clip_items(paths: Sequence[str | Path]) -> tuple[list[ClipItem], dict[int, str]]:
    """Each path's identity, or why it cannot be a clip.

    Returns ``(items, errors)``: a :data:`ClipItem` for each regular file, in input order, and
    for the others their index -> the :class:`~urbansound.errors.AudioError` message (no such
    file, not a regular file, unreadable).
    """
    errors: dict[int, str] = {}
    items: list[ClipItem] = []
    for i, p in enumerate(paths):
        path = os.path.abspath(os.fspath(p))
        try:
            st = os.stat(path)
        except FileNotFoundError:
            errors[i] = str(audio_error(path, "no such file"))
            continue
        except OSError as exc:
            errors[i] = str(audio_error(path, exc.strerror or str(exc)))
            continue
        if not stat.S_ISREG(st.st_mode):
            errors[i] = str(audio_error(path, "not a regular file"))
            continue
        items.append((i, path, st.st_size, st.st_mtime_ns))
    return items, errors


def matrix_key(spec: dict, items: Sequence[ClipItem]) -> bytes:
    """Key of a whole feature matrix: the digest of its settings ``spec`` and every clip's
    identity, in order."""
    h = hashlib.sha256(digest(spec))
    for _, path, size, mtime_ns in items:
        h.update(f"\0{path}\0{size}\0{mtime_ns}".encode())
    return h.digest()


def matrix_path(root: str | Path, key: bytes) -> str:
    """Path of the whole-matrix entry ``key`` under the cache ``root``: ``features/<key>.bin``."""
    return os.path.join(root, "features", f"{key.hex()}.bin")


def read_matrix(root: str | Path, key: bytes, *, rows: int, cols: int) -> np.ndarray | None:
    """The whole feature matrix cached under ``key``, or None when absent, corrupt (logged) or
    holding a non-finite value (logged; written before non-finite features were refused)."""
    path = matrix_path(root, key)
    try:
        hit = read_entry(path, key, rows=rows, cols=cols)
    except CorruptEntry as exc:
        logger.warning("ignoring corrupt feature cache entry %s: %s", path, exc)
        return None
    if hit is not None and not np.isfinite(hit).all():
        logger.warning("ignoring feature cache entry %s: it holds non-finite values", path)
        return None
    return hit


# --------------------------------------------------------------------------------------------
# Entries


def write_entry(path: Path, key: bytes, array: np.ndarray, *, tmp_dir: Path) -> None:
    """Write a 2-D float32 ``array`` under ``key`` to ``path`` atomically: into ``tmp_dir``, then
    a rename."""
    payload = memoryview(np.ascontiguousarray(array, dtype=np.float32)).cast("B")
    rows, cols = array.shape
    header = HEAD.pack(MAGIC, key, zlib.crc32(payload), rows, cols)
    tmp = tmp_dir / f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    for folder in (tmp_dir, path.parent):
        if not os.path.isdir(folder):  # a stat; mkdir(exist_ok=True) costs an exception each time
            folder.mkdir(parents=True, exist_ok=True)
    if os.path.isdir(path):  # os.replace would only say "Is a directory", without the path
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# An entry's own path blocked (a directory where it should be, a file where its folder should be):
# the cache as a whole still works, so the extraction warns once and goes on without that entry.
BLOCKED = (errno.EISDIR, errno.ENOTDIR, errno.EEXIST)


def cache_error(path: str | Path, exc: OSError, cache_dir: str) -> OutputError:
    """The one-line error for a cache write that stops the extraction, naming the setting."""
    return OutputError(f"{output_error(path, exc)} (features.cache_dir={cache_dir})")


def store(
    path: str,
    key: bytes,
    array: np.ndarray,
    *,
    root: str,
    cache_dir: str,
    blocked: list[str] | None = None,
) -> None:
    """:func:`write_entry` under the cache ``root``, with the cache's failure policy.

    A path blocked for this entry only (see ``BLOCKED``) is appended to ``blocked`` (one list per
    extraction), logged when it is the first there, and the entry is not cached; anything else
    (read-only or full disk, permission denied) raises :class:`OutputError` naming the path and
    ``cache_dir``: the cache cannot work, so the run stops rather than recompute everything
    silently on every run.
    """
    try:
        write_entry(Path(path), key, array, tmp_dir=Path(root, "tmp"))
    except OSError as exc:
        if exc.errno not in BLOCKED and not os.path.isdir(path):
            raise cache_error(path, exc, cache_dir) from exc
        if blocked is not None:
            blocked.append(path)  # list.append: atomic under the GIL
            if len(blocked) > 1:
                return
        logger.warning(
            "%s; this entry is not cached (features.cache_dir=%s; warned once per extraction)",
            output_error(path, exc),
            cache_dir,
        )


def read_entry(
    path: str | Path, key: bytes, *, rows: int | None = None, cols: int | None = None
) -> np.ndarray | None:
    """The array an entry written by :func:`write_entry` holds (writable, the caller's own);
    None when absent (or something other than a file is in the way).

    ``rows`` / ``cols``: the shape the caller needs (None: any); an entry of another shape, or an
    empty one, is corrupt, so that a well-formed entry of the wrong shape (a foreign or hand-made
    file under the right name) is recomputed rather than failing in the caller's arithmetic.

    The hot path of a sweep over the on-load settings (one call per clip): the whole file is read
    with one ``readv`` into one preallocated buffer, which becomes the array without a copy.

    Raises
    ------
    CorruptEntry
        The file exists but is not a whole, valid entry for ``key``.
    """
    try:
        # O_NONBLOCK: a FIFO where the entry should be would block the open forever (waiting for
        # a writer); regular files ignore the flag.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:  # no such entry can exist: the write says why
            return None
        raise CorruptEntry(f"unreadable ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None  # a directory, FIFO or device in the way: absent (writing replaces it
            # or, for a directory, says so once)
        size = st.st_size
        if size < HEAD.size:
            raise CorruptEntry("shorter than its header")
        buf = np.empty(size, dtype=np.uint8)
        got = os.readv(fd, [buf])
        while got < size:  # a short read (signal, network file system)
            more = os.readv(fd, [buf[got:]])
            if not more:
                raise CorruptEntry("shorter than its size (truncated while read?)")
            got += more
    except OSError as exc:
        raise CorruptEntry(f"unreadable ({exc.strerror})") from None
    finally:
        os.close(fd)
    magic, stored_key, crc, n_rows, n_cols = HEAD.unpack_from(buf)
    if magic != MAGIC:
        raise CorruptEntry("not a feature cache entry")
    if stored_key != key:
        raise CorruptEntry("written for another key")
    payload = buf[HEAD.size :]
    if payload.size != n_rows * n_cols * 4:
        raise CorruptEntry("wrong length (truncated?)")
    if zlib.crc32(payload) != crc:
        raise CorruptEntry("checksum mismatch")
    if n_rows * n_cols == 0 or rows not in (None, n_rows) or cols not in (None, n_cols):
        want = f"({'any' if rows is None else rows}, {'any' if cols is None else cols})"
        raise CorruptEntry(f"holds a ({n_rows}, {n_cols}) array, not {want}")
    return payload.view(np.float32).reshape(n_rows, n_cols)


def remove_stale_tmp(root: Path) -> None:
    """Remove files in ``root/tmp`` older than an hour (left by a killed writer)."""
    tmp = root / "tmp"
    if not tmp.is_dir():
        return
    cutoff = time.time() - _TMP_MAX_AGE_S
    for entry in os.scandir(tmp):
        try:
            if entry.name.endswith(".tmp") and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
        except OSError:  # another process removed or renamed it first
            pass


# --------------------------------------------------------------------------------------------
# Before an extraction


def check_writable(tmp_dir: Path, cache_dir: str) -> None:
    """Create ``tmp_dir`` and write a byte in it, or raise :class:`OutputError` naming the path.

    A real write rather than ``os.access``: root passes every permission check, and neither sees
    a read-only mount or a full disk.
    """
    try:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=tmp_dir)
        try:
            os.write(fd, b"\0")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise cache_error(exc.filename or tmp_dir, exc, cache_dir) from exc
