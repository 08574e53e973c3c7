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
  ``m{i}.skops``, and loaded only when skops finds no type outside its default trusted set and
  scikit-learn's own classes (no pickle: nothing that can run code).
- ``features``: every ``features.*`` setting :func:`urbansound.features.extraction.extract_features`
  needs (the environment's ``cache_dir``, ``n_jobs``, ``on_error`` and
  ``embedding.batch_size`` aside), ``feature_names`` and ``feature_stage``: the feature code's
  versions and the libraries that change features (the versions the feature cache keys its
  entries by). :func:`load_model` warns (:class:`FeatureVersionWarning`) when the running
  versions differ from the stored ones. An embedding kind adds ``model``: the network's name,
  its file's path and SHA-256, runtime and version, licence (BirdNET's CC BY-NC-SA 4.0), layer,
  embedding size and windows (:func:`urbansound.features.embeddings.stage.feature_model`);
  prediction uses the network only while its file has that SHA-256.
- ``class_names``, ``window_s`` (the training clips' length: predictions cut longer recordings
  into windows of it), ``training_data`` (dataset, root, clip count, folds, held-out fold,
  clips per class), ``evaluation`` (the accuracy of the fit on its test part), ``source`` (the
  run, sweep or study it came from and that configuration's CV figures), ``config`` (the
  resolved configuration), ``versions`` and ``created``.

Safetensors rather than ``torch.save``: the header is JSON and the payload raw arrays, so loading
runs no code whatever the file holds, and no torch is needed to read it. What a file may hold is
checked by :mod:`urbansound.inference.validation` before anything in it is used.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from urbansound.config.settings import AnyFeatureSettings
from urbansound.errors import UrbansoundError
from urbansound.inference.validation import (
    InvalidModelFile,
    UntrustedMember,
    check_members,
    check_metadata,
    header_metadata,
    load_estimator,
)
from urbansound.utils.files import atomic_write

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MODEL_FILE",
    "FeatureVersionWarning",
    "Member",
    "ModelFile",
    "ModelFileError",
    "feature_settings_dict",
    "feature_stage",
    "load_model",
    "save_model",
    "stage_differences",
]

FORMAT = "urbansound-model"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
_META_KEY = "urbansound"
#: ``features.*`` keys that say where and how to compute, not what: not stored.
_ENVIRONMENT_KEYS = ("cache_dir", "n_jobs", "on_error")
_EMBEDDING_ENVIRONMENT_KEYS = ("batch_size",)  # features.embedding.*: memory, not results


class ModelFileError(UrbansoundError):
    """A model file that cannot be read or used; the message names the file."""


class FeatureVersionWarning(UserWarning):
    """The model file's features were computed by other library or feature-code versions."""


# --------------------------------------------------------------------------------------------
# What the feature stage depends on


def feature_settings_dict(settings: AnyFeatureSettings) -> dict[str, Any]:
    """The ``features.*`` settings a model file stores (what is computed, not where)."""
    out = {f.name: getattr(settings, f.name) for f in fields(settings)}
    out = {k: v for k, v in out.items() if k not in _ENVIRONMENT_KEYS}
    if "embedding" in out:  # an embedding kind
        embedding = asdict(out["embedding"]).items()
        out["embedding"] = {k: v for k, v in embedding if k not in _EMBEDDING_ENVIRONMENT_KEYS}
    return out


def feature_stage() -> dict[str, Any]:
    """The running feature code's versions and the library versions that change features.

    ``{"stage_version", "result_version", "libraries": {name: version}}``: the versions the
    feature cache keys its entries by (:func:`urbansound.features.cache.library_versions`).
    """
    from urbansound.features.cache import library_versions
    from urbansound.features.handmade import RESULT_VERSION, STAGE_VERSION

    return {
        "stage_version": STAGE_VERSION,
        "result_version": RESULT_VERSION,
        "libraries": library_versions(),
    }


def stage_differences(stored: dict[str, Any], current: dict[str, Any] | None = None) -> list[str]:
    """What differs between a stored :func:`feature_stage` and the running one, one item each
    (``"librosa 0.10.2 (model) vs 0.11.0 (here)"``); empty when the features would be equal."""
    current = feature_stage() if current is None else current
    out = []
    for key in ("stage_version", "result_version"):
        if stored.get(key) != current.get(key):
            out.append(f"feature {key} {stored.get(key)} (model) vs {current.get(key)} (here)")
    have, want = stored.get("libraries") or {}, current.get("libraries") or {}
    for name in sorted(set(have) | set(want)):
        if have.get(name) != want.get(name):
            out.append(f"{name} {have.get(name)} (model) vs {want.get(name)} (here)")
    return out


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
        standardisation, so a model gives exactly the probabilities it gave in memory.
        """
        X = np.asarray(X, dtype=np.float32)
        if self.family != "mlp":
            proba = np.asarray(self.estimator.predict_proba(X), dtype=np.float32)
            out = np.zeros((len(X), n_classes), dtype=np.float32)
            out[:, np.asarray(self.estimator.classes_, dtype=np.int64)] = proba
            return out
        import torch

        from urbansound.training.mlp import StackedMLP

        if self.mean is not None and self.std is not None:
            X = ((X - self.mean) / self.std).astype(np.float32)
        params = [
            (torch.from_numpy(np.array(w)), torch.from_numpy(np.array(b))) for w, b in self.params
        ]
        net = StackedMLP([params], dropout=0.0, activation=self.activation, device="cpu")
        # Single-threaded ops, as the trainer evaluates on the CPU (training.lockstep): a product
        # split over several threads changed the last bit of a few probabilities.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                logits = net.forward(torch.from_numpy(np.ascontiguousarray(X))[None])
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

        return settings_from_config(
            {"features": dict(self.metadata["features"]["settings"])}
        ).features

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
        ``(n, n_features)``; raises :class:`ModelFileError` when the width is not the model's."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ModelFileError(
                f"features of shape {X.shape} do not fit the model ({self.n_features} features)"
            )
        n_classes = len(self.class_names)
        if len(self.members) == 1:
            return self.members[0].predict_proba(X, n_classes)
        total = np.zeros((len(X), n_classes), dtype=np.float64)
        for m in self.members:
            total += m.predict_proba(X, n_classes)
        return (total / len(self.members)).astype(np.float32)


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

            blob = skops.io.dumps(m.estimator)
            try:  # refuse now what load_model would refuse, before any file is written
                load_estimator(blob)
            except (UntrustedMember, InvalidModelFile) as exc:
                raise ModelFileError(f"cannot store member {i} ({m.family}): it {exc}") from None
            tensors[f"m{i}.skops"] = np.frombuffer(blob, dtype=np.uint8).copy()
        described.append(entry)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata, "members": described}
    text = json.dumps(meta, default=_json_default, sort_keys=False)
    return atomic_write(path, save(tensors, metadata={"format": FORMAT, _META_KEY: text}))


def _json_default(value: Any) -> Any:
    from urbansound.utils.files import json_default

    if isinstance(value, tuple):
        return list(value)
    return json_default(value)


def load_model(path: str | Path, *, check_versions: bool = True) -> ModelFile:
    """Read a model file written by :func:`save_model`.

    With ``check_versions`` a :class:`FeatureVersionWarning` names every feature-code or library
    version that differs from the file's (features of new audio could then differ from the
    training features).

    Raises
    ------
    ModelFileError
        The file is missing, is not a safetensors file of this format, is of a newer format
        version, lacks a tensor its metadata names, or holds a scikit-learn member with types
        outside skops' trusted set.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"no such model file: {path}") from None
    except IsADirectoryError:
        found = path / MODEL_FILE
        if found.is_file():
            return load_model(found, check_versions=check_versions)
        raise ModelFileError(f"{path} is a directory without a {MODEL_FILE}") from None
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    try:
        tensors = load(raw)
        header = header_metadata(raw)
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(
            f"{path} is not a model file (not safetensors: {exc}); give the model.safetensors "
            "that `python -m urbansound.fit` wrote"
        ) from None
    if header.get("format") != FORMAT or _META_KEY not in header:
        raise ModelFileError(
            f"{path} is a safetensors file but no urbansound model (no {_META_KEY!r} metadata)"
        )
    try:
        meta = json.loads(header[_META_KEY])
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
    try:
        check_metadata(meta)
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
