"""The model file: everything a prediction needs, and nothing executable.

A fitted model (:mod:`urbansound.fit`) is one ``model.safetensors`` file in the fit's run
directory. Its tensors are plain arrays; its header's metadata (``__metadata__["urbansound"]``, a
JSON text) says how to use them:

- ``members``: the models whose class probabilities are averaged (one per ``fit.seeds`` value).
  An ``mlp`` member's tensors are ``m{i}.kernel{l}`` ``(fan_in, fan_out)`` float32 (Keras
  layout), ``m{i}.bias{l}`` ``(fan_out,)`` float32 and, when it standardises its inputs,
  ``m{i}.mean`` / ``m{i}.std`` ``(n_features,)`` float64 (fitted on its training data; the input
  is ``((X - mean) / std)`` cast to float32, as the trainer does). A scikit-learn member (another
  model family) is its fitted ``Pipeline`` written with ``skops.io`` into the uint8 tensor
  ``m{i}.skops``, and loaded only when every type it names is on urbansound's allowlist
  (:mod:`urbansound.inference.allowlist`: scikit-learn's classifiers, the steps in front of them,
  the types of their fitted state, plain data; nothing callable). No pickle: nothing that can run
  code, open a file or start a thread.
- ``features``: the ``features.*`` settings of training (not ``cache_dir``, ``n_jobs``,
  ``on_error``, ``embedding.batch_size``), ``feature_names`` and ``stage``, the code and library
  versions that change features (:mod:`urbansound.inference.stage`; :func:`load_model` warns,
  :class:`FeatureVersionWarning`, where they differ); an embedding kind adds ``model``, its
  network's name, file path and SHA-256, runtime, licence, size and windows
  (:func:`urbansound.features.embeddings.stage.feature_model`), used only while that SHA-256 holds.
- ``class_names``, ``window_s`` (the training clips' length: predictions cut longer recordings
  into windows of it), ``training_data`` (dataset, root, clip count, folds, held-out fold,
  clips per class), ``evaluation`` (the accuracy of the fit on its test part), ``source`` (the
  run, sweep or study it came from and that configuration's CV figures), ``config`` (the
  resolved configuration), ``versions`` and ``created``.

The header's ``__metadata__`` also holds ``sha256``: :func:`content_digest` of the metadata and
every tensor, written by :func:`save_model` and checked by :func:`load_model`, so that one
changed byte (a weight, a class name) is found instead of changing predictions silently. A file
without one (written before urbansound 0.2) loads with one :class:`UnverifiedModelWarning`. The
checksum finds damage, not intent: anyone can recompute it, so a scikit-learn member's types are
checked first, whatever the checksum says.

Safetensors rather than ``torch.save``: the header is JSON and the payload raw arrays, so loading
runs no code whatever the file holds, and no torch is needed to read it. What a file may hold is
checked by :mod:`urbansound.inference.validation` before anything in it is used. The model path
must be a regular file (or a fit's run directory holding one): a FIFO, a device or a socket is
refused without being opened.
"""

from __future__ import annotations

import json
import os
import stat
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from urbansound.config.settings import AnyFeatureSettings
from urbansound.errors import UrbansoundError
from urbansound.inference.stage import stage_differences
from urbansound.inference.validation import (
    InvalidModelFile,
    UntrustedMember,
    check_member_types,
    check_members,
    check_metadata,
    check_tensors,
    content_digest,
    header_metadata,
    load_estimator,
)
from urbansound.utils.files import atomic_write, not_a_regular_file

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MODEL_FILE",
    "FeatureVersionWarning",
    "Member",
    "ModelFile",
    "ModelFileError",
    "ModelFileWarning",
    "UnverifiedModelWarning",
    "load_model",
    "save_model",
]

FORMAT = "urbansound-model"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
_META_KEY = "urbansound"
_DIGEST_KEY = "sha256"


class ModelFileError(UrbansoundError):
    """A model file that cannot be read or used; the message names the file."""


class ModelFileWarning(UserWarning):
    """Something about a model file that does not stop it from being used (predict prints it)."""


class FeatureVersionWarning(ModelFileWarning):
    """The model file's features were computed by other library or feature-code versions."""


class UnverifiedModelWarning(ModelFileWarning):
    """The model file holds no checksum (an earlier urbansound wrote it): damage goes unseen."""


# --------------------------------------------------------------------------------------------
# Members


@dataclass
class Member:
    """One model of the ensemble.

    ``family`` ``"mlp"``: ``params`` are ``(kernel (fan_in, fan_out), bias (fan_out,))`` float32
    per layer and ``activation`` the hidden layers' activation; ``mean``/``std`` the
    standardiser ``(n_features,)`` float64 or ``None``. Any other family: ``estimator`` is a
    fitted scikit-learn estimator with ``predict_proba`` whose ``classes_`` are class ids.
    ``seed`` and ``fold`` name the training run (``train.seed`` and the split label that derived
    its random streams).
    """

    seed: int
    fold: int | str
    family: str = "mlp"
    params: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    activation: str = "relu"
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    estimator: Any = None

    def predict_proba(self, X: np.ndarray, n_classes: int) -> np.ndarray:
        """Class probabilities ``(n, n_classes)`` float32 of features ``X`` ``(n, n_features)``.

        The MLP is evaluated by the trainer's own code (:class:`urbansound.training.mlp.StackedMLP`,
        one model, on the CPU, single-threaded as the trainer), after the trainer's
        standardisation, from an input torch allocated as the trainer's test rows are: the same
        rows in the same order give bitwise the probabilities of a trainer evaluating this one
        model on the same machine; other batches agree within
        :data:`urbansound.inference.predict.AGREEMENT_TOLERANCE` (``docs/fit-predict.md``). A
        scikit-learn member's ``predict_proba`` is placed in the columns of its ``classes_``;
        raises :class:`ModelFileError` when it breaks the training's output contract
        (:func:`urbansound.training.contract.output_breach`).
        """
        X = np.asarray(X, dtype=np.float32)
        if self.family != "mlp":
            from urbansound.training.contract import output_breach

            proba = self.estimator.predict_proba(X)
            classes = getattr(self.estimator, "classes_", None)
            breach = output_breach(proba, classes, n_rows=len(X), n_classes=n_classes)
            if breach is not None:  # the training's output contract, kept by every member
                raise ModelFileError(f"member {self.family}: {breach}")
            out = np.zeros((len(X), n_classes), dtype=np.float32)
            out[:, np.asarray(classes, dtype=np.int64)] = np.asarray(proba, dtype=np.float32)
            return out
        from urbansound.utils.memory import require_memory_for

        # an address-space limit too small for torch: one line, not an abort in its loader
        require_memory_for(("torch",), doing="loading torch", spare=64 * 2**20)
        import torch

        from urbansound.training.mlp import StackedMLP

        if self.mean is not None and self.std is not None:
            X = ((X - self.mean) / self.std).astype(np.float32)
        params = [
            (torch.from_numpy(np.array(w)), torch.from_numpy(np.array(b))) for w, b in self.params
        ]
        net = StackedMLP([params], dropout=0.0, activation=self.activation, device="cpu")
        # The trainer's test rows are a tensor torch allocated (index_select), and MKL may round
        # a product differently for another alignment: copy the rows into one, not a view of
        # numpy's memory. Single-threaded ops, as the trainer evaluates on the CPU
        # (training.lockstep): a product split over several threads changed the last bit of a
        # few probabilities.
        rows = torch.empty((1, *X.shape), dtype=torch.float32)
        rows[0].copy_(torch.from_numpy(np.ascontiguousarray(X)))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                logits = net.forward(rows)
                probs = torch.log_softmax(logits, dim=-1).exp()
        finally:
            torch.set_num_threads(threads)
        return probs[0].numpy().copy()


# --------------------------------------------------------------------------------------------
# The file


@dataclass
class ModelFile:
    """A loaded model file: its members and its metadata (see the module docstring)."""

    members: list[Member]
    metadata: dict[str, Any]
    path: Path | None = None

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata["class_names"])

    @property
    def features(self) -> AnyFeatureSettings:
        """The feature settings of training (``cache_dir``/``n_jobs``/``on_error`` at defaults);
        the kind's settings class (``FeatureSettings`` or ``EmbeddingFeatureSettings``)."""
        from urbansound.config.checks import settings_from_config

        settings = dict(self.metadata["features"]["settings"])
        return settings_from_config({"features": settings}).features

    @property
    def feature_model(self) -> dict[str, Any] | None:
        """An embedding kind's network as recorded at training (name, file path and SHA-256,
        runtime, licence, size, windows); None for the hand-made kinds."""
        return self.metadata["features"].get("model")

    @property
    def window_s(self) -> float:
        """The training clips' length in seconds: the window of long recordings."""
        return float(self.metadata["window_s"])

    @property
    def n_features(self) -> int:
        return int(self.metadata["features"]["n_features"])

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """The members' mean class probabilities ``(n, n_classes)`` float32 for features ``X``
        ``(n, n_features)``; raises :class:`ModelFileError` when the width is not the model's or
        a row's probabilities are not finite (naming the file)."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ModelFileError(
                f"features of shape {X.shape} do not fit the model ({self.n_features} features)"
            )
        n_classes = len(self.class_names)
        try:
            if len(self.members) == 1:
                probs = self.members[0].predict_proba(X, n_classes)
            else:
                total = np.zeros((len(X), n_classes), dtype=np.float64)
                for m in self.members:
                    total += m.predict_proba(X, n_classes)
                probs = (total / len(self.members)).astype(np.float32)
        except ModelFileError as exc:
            raise ModelFileError(f"{self.path}: {exc}; {_DAMAGED}") from None
        bad = np.flatnonzero(~np.isfinite(probs).all(axis=1))
        if len(bad):  # never a row of NaN labelled as the first class
            raise ModelFileError(
                f"{self.path}: the model gives probabilities that are not finite for {len(bad)} "
                f"of {len(X)} rows (first: row {bad[0]}); {_DAMAGED}"
            )
        return probs


def save_model(path: str | Path, members: Sequence[Member], metadata: dict[str, Any]) -> Path:
    """Write ``members`` and ``metadata`` as one safetensors file, atomically.

    ``metadata`` is JSON-able (see the module docstring for what a fit puts there); each
    member's description (``family``, ``seed``, ``fold``, ``activation``, ``n_layers``,
    ``standardize``) is added under ``members``. Raises
    :class:`~urbansound.errors.OutputError` when the file cannot be written.
    """
    from safetensors.numpy import save

    tensors: dict[str, np.ndarray] = {}
    described = []
    for i, m in enumerate(members):
        entry: dict[str, Any] = {"family": m.family, "seed": int(m.seed), "fold": m.fold}
        if m.family == "mlp":
            for layer, (w, b) in enumerate(m.params):
                tensors[f"m{i}.kernel{layer}"] = np.ascontiguousarray(w, dtype=np.float32)
                tensors[f"m{i}.bias{layer}"] = np.ascontiguousarray(b, dtype=np.float32)
            entry |= {"activation": m.activation, "n_layers": len(m.params)}
            entry["standardize"] = m.mean is not None
            if m.mean is not None:
                tensors[f"m{i}.mean"] = np.ascontiguousarray(m.mean, dtype=np.float64)
                tensors[f"m{i}.std"] = np.ascontiguousarray(m.std, dtype=np.float64)
        else:
            import skops.io

            try:
                blob = skops.io.dumps(m.estimator)
            except Exception as exc:  # skops cannot store some types at all (a lock, a generator)
                raise ModelFileError(
                    f"cannot store member {i} ({m.family}): skops cannot write it "
                    f"({type(exc).__name__}: {exc})"
                ) from None
            try:  # refuse now what load_model would refuse, before any file is written
                load_estimator(blob)
            except (UntrustedMember, InvalidModelFile) as exc:
                raise ModelFileError(f"cannot store member {i} ({m.family}): it {exc}") from None
            tensors[f"m{i}.skops"] = np.frombuffer(blob, dtype=np.uint8).copy()
        described.append(entry)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata, "members": described}
    text = json.dumps(meta, default=_json_default, sort_keys=False)
    header = {"format": FORMAT, _META_KEY: text, _DIGEST_KEY: content_digest(text, tensors)}
    return atomic_write(path, save(tensors, metadata=header))


def _json_default(value: Any) -> Any:
    from urbansound.utils.files import json_default

    if isinstance(value, tuple):
        return list(value)
    return json_default(value)


def load_model(path: str | Path, *, check_versions: bool = True) -> ModelFile:
    """Read a model file written by :func:`save_model` (or the fit's run directory holding one).

    The checks run in the order :mod:`urbansound.inference.validation` gives: the file is a
    regular file, its header is this format, every scikit-learn member's types are trusted,
    the checksum matches (a file without one: :class:`UnverifiedModelWarning`), the metadata's
    values are in range, the tensors are the members', and the members are well formed. With
    ``check_versions`` a :class:`FeatureVersionWarning` names every feature-code or library
    version that differs from the file's (features of new audio could then differ from the
    training features).

    Raises
    ------
    ModelFileError
        One line naming the file and what is wrong: missing, not a regular file (a FIFO, a
        device, a socket: not opened), not a safetensors file of this format, of a newer format
        version, a scikit-learn member with a type off the allowlist (named), a checksum that
        does not match, or a value out of range (named, with the value).
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = _model_path(Path(path))
    raw = _read_regular_file(path)
    try:
        header = header_metadata(raw)
        tensors = load(raw)
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(
            f"{path} is not a model file (not safetensors: {exc}); give the model.safetensors "
            "that `python -m urbansound.fit` wrote"
        ) from None
    if header.get("format") != FORMAT or _META_KEY not in header:
        raise ModelFileError(
            f"{path} is a safetensors file but no urbansound model (no {_META_KEY!r} metadata)"
        )
    meta = _metadata(path, header[_META_KEY])
    for name in sorted(t for t in tensors if t.endswith(".skops")):  # types before checksum
        try:
            check_member_types(tensors[name].tobytes())
        except UntrustedMember as exc:
            raise ModelFileError(f"{path}: {_member_label(meta, name)} {exc}") from None
        except InvalidModelFile as exc:
            raise ModelFileError(f"{path}: {_member_label(meta, name)} {exc}; {_DAMAGED}") from None
    _verify(path, header, tensors)
    try:
        check_metadata(meta)
        check_tensors(tensors, meta)
        members = [_member(i, entry, tensors, path) for i, entry in enumerate(meta["members"])]
        model = ModelFile(members=members, metadata=meta, path=path)
        check_members(members, n_features=model.n_features, n_classes=len(model.class_names))
    except InvalidModelFile as exc:
        raise ModelFileError(f"{path}: {exc}; {_DAMAGED}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # a value of another type
        raise ModelFileError(
            f"{path}: unexpected metadata ({type(exc).__name__}: {exc}); {_DAMAGED}"
        ) from None
    if check_versions:
        differences = stage_differences(meta["features"].get("stage") or {})
        if differences:
            warnings.warn(
                f"model file {path} was made with other feature versions ("
                + "; ".join(differences)
                + "): features of new audio may differ from the training features",
                FeatureVersionWarning,
                stacklevel=2,
            )
    return model


def _member_label(meta: Mapping[str, Any], tensor: str) -> str:
    """``member 0 (svm)`` for the tensor ``m0.skops`` (its family when the metadata says it)."""
    index = tensor.split(".")[0][1:]
    members = meta.get("members")
    ok = isinstance(members, list) and index.isdigit() and int(index) < len(members)
    entry = members[int(index)] if ok else None
    family = entry.get("family") if isinstance(entry, dict) else None
    return f"member {index} ({family})" if isinstance(family, str) else f"member {index}"


def _model_path(path: Path) -> Path:
    """``path``, or the model file of the run directory ``path``; a missing file or anything
    but a regular file (a FIFO, a device, a socket, a broken link) is refused unopened."""
    reason = not_a_regular_file(path)
    if reason == "no such file":
        raise ModelFileError(f"no such model file: {path}")
    if reason is not None and path.is_dir():
        if not_a_regular_file(path / MODEL_FILE) is None:
            return path / MODEL_FILE
        raise ModelFileError(f"{path} is a directory without a {MODEL_FILE}")
    if reason is not None:
        raise ModelFileError(
            f"{path}: {reason}; give the model.safetensors that `python -m urbansound.fit` wrote"
        )
    return path


def _read_regular_file(path: Path) -> bytes:
    """The bytes of ``path``: the open does not block, and the file's type is checked again on
    the open file (in case it was replaced by a FIFO or a device since :func:`_model_path`)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ModelFileError(f"{path}: not a regular file; give the model.safetensors")
        try:
            return fh.read()
        except OSError as exc:
            raise ModelFileError(f"cannot read model file {path}: {exc.strerror or exc}") from None


def _metadata(path: Path, text: str) -> dict[str, Any]:
    """The ``urbansound`` metadata (a JSON object) of a format version this urbansound reads."""
    try:
        meta = json.loads(text)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: its {_META_KEY!r} metadata is not a JSON object; {_DAMAGED}")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(
            f"{path}: model format version {version!r} is not one this urbansound reads "
            f"(1 to {FORMAT_VERSION}); {_DAMAGED}"
        )
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has model format version {version}; this urbansound "
            f"reads up to {FORMAT_VERSION}: upgrade urbansound"
        )
    return meta


def _verify(path: Path, header: Mapping[str, str], tensors: Mapping[str, np.ndarray]) -> None:
    """Compare the stored checksum with the contents; warn once when there is none."""
    stored = header.get(_DIGEST_KEY)
    if stored is None:
        warnings.warn(
            f"model file {path} holds no checksum (written by an earlier urbansound): damage to "
            "it cannot be detected; fit it again to add one",
            UnverifiedModelWarning,
            stacklevel=3,
        )
        return
    if stored != content_digest(header[_META_KEY], tensors):
        raise ModelFileError(
            f"{path}: its contents do not match its SHA-256 checksum (a byte changed after "
            f"`python -m urbansound.fit` wrote it); {_DAMAGED}"
        )


_DAMAGED = (
    "the file is damaged or was not written by `python -m urbansound.fit`: fit the model again"
)


def _member(i: int, entry: dict[str, Any], tensors: dict[str, np.ndarray], path: Path) -> Member:
    def tensor(name: str) -> np.ndarray:
        key = f"m{i}.{name}"
        if key not in tensors:
            raise InvalidModelFile(f"tensor {key} is missing")
        return tensors[key]

    family = str(entry.get("family", "mlp"))
    seed, fold = int(entry.get("seed", 0)), entry.get("fold")
    if family != "mlp":
        blob = tensor("skops").tobytes()
        try:
            estimator = load_estimator(blob)
        except UntrustedMember as exc:
            raise ModelFileError(f"{path}: member {i} ({family}) {exc}") from None
        except InvalidModelFile as exc:
            raise InvalidModelFile(f"member {i} ({family}) {exc}") from None
        return Member(seed=seed, fold=fold, family=family, estimator=estimator)
    n_layers = int(entry["n_layers"])
    params = [(tensor(f"kernel{j}"), tensor(f"bias{j}")) for j in range(n_layers)]
    standardize = bool(entry.get("standardize"))
    return Member(
        seed=seed,
        fold=fold,
        family=family,
        params=params,
        activation=str(entry.get("activation", "relu")),
        mean=tensor("mean") if standardize else None,
        std=tensor("std") if standardize else None,
    )
