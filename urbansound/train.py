"""Cross-validated training of the Keras-equivalent MLP, all folds in lockstep.

:func:`cross_validate` trains one model per :class:`Split` and evaluates every model on its test
part after every epoch, so a run yields a per-epoch cross-validation curve (for pruning and
tracking) as well as the final per-fold metrics.

All folds train together as one stacked model (:class:`urbansound.model.StackedMLP`): step ``s``
of an epoch runs batch ``s`` of every fold through batched matrix products, and one fused Adam
update moves every fold's weights. Each fold is still exactly the model Keras would train on its
own:

- its own initialisation, shuffling and dropout, drawn from generators derived from
  ``(train.seed, fold)`` only (:func:`fold_seeds`), so a fold trains the same whether it trains
  alone or beside others;
- an epoch visits each of the fold's training clips exactly once, in batches of
  ``train.batch_size`` with a smaller last batch (``Model.fit(shuffle=True)``);
- folds with fewer batches sit out the last steps of an epoch: their weights, Adam moments and
  Adam step count are untouched (the folds are ordered by batch count, so the folds still training
  are always a leading slice of the stack);
- Adam follows Keras (``keras.optimizers.Adam``): ``epsilon`` is added to ``sqrt(v)`` before the
  bias correction, and ``weight_decay`` is Keras' decoupled decay (``w -= lr * wd * w``).

Features are standardised per fold with the mean and standard deviation of that fold's training
part only (``train.standardize``; the ``tutorial`` preset turns it off).
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from urbansound.config import ModelSettings, TrainSettings
from urbansound.errors import ConfigError, DataError
from urbansound.model import StackedMLP, init_params, layer_sizes

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Splits


@dataclass(frozen=True)
class Split:
    """One train/test partition of the rows of ``X``."""

    fold: int | str  # the test fold's number (1..10), or a label such as "random"
    train: np.ndarray  # int indices into X
    test: np.ndarray


def fold_splits(folds: np.ndarray, *, test_folds: Sequence[int] | None = None) -> list[Split]:
    """One :class:`Split` per fold that has clips: test = that fold, train = every other fold.

    This is the protocol the UrbanSound8K authors ask for: "Do not reshuffle the data! Use the
    predefined 10 folds and perform 10-fold (not 5-fold) cross validation" (Salamon et al.).

    Parameters
    ----------
    folds:
        The fold number of every row of ``X``.
    test_folds:
        Only these folds are held out (each still trains on all other folds); ``None`` = every
        fold present. A listed fold without clips raises :class:`~urbansound.errors.DataError`.
    """
    folds = np.asarray(folds)
    present = sorted(int(f) for f in np.unique(folds))
    if test_folds is None:
        wanted = present
    else:
        wanted = [int(f) for f in test_folds]
        absent = [f for f in wanted if f not in present]
        if absent:
            raise DataError(
                f"cv.folds lists fold(s) {absent} but no clip of the dataset is in them "
                f"(folds with clips: {present}); drop them from cv.folds"
            )
    if len(present) < 2:
        raise DataError(
            f"cross-validation needs clips in at least 2 folds, found folds {present}; "
            "add data or use cv=random_split"
        )
    splits = []
    for f in wanted:
        is_test = folds == f
        splits.append(Split(fold=f, train=np.flatnonzero(~is_test), test=np.flatnonzero(is_test)))
    return splits


def random_split(
    n: int, *, test_size: float, seed: int, stratify: np.ndarray | None = None
) -> list[Split]:
    """The tutorial's random train/test split (``fold="random"``): one :class:`Split`.

    LEAKY on UrbanSound8K: slices of one recording land on both sides, so its accuracy is far
    above what the fold protocol measures. It exists to reproduce the tutorial and is labelled as
    such wherever a result is reported. Equal to ``sklearn.model_selection.train_test_split(
    range(n), test_size=test_size, random_state=seed, stratify=stratify)``.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_size < 1.0:
        raise ConfigError(f"cv.test_size must be between 0 and 1, got {test_size}")
    if n < 2:
        raise DataError(f"a random split needs at least 2 clips, got {n}")
    try:
        train, test = train_test_split(
            np.arange(n), test_size=test_size, random_state=seed, stratify=stratify
        )
    except ValueError as exc:  # e.g. a class with one clip under stratification
        raise DataError(f"cannot split {n} clips with cv.test_size={test_size}: {exc}") from None
    return [Split(fold="random", train=np.sort(train), test=np.sort(test))]


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class EpochMetrics:
    """Every fold's metrics after one epoch (arrays are in split order)."""

    epoch: int  # 1-based
    folds: list[int | str]
    train_loss: np.ndarray  # (n_splits,) mean training loss over the epoch (dropout on)
    test_loss: np.ndarray  # (n_splits,) on each fold's test part (dropout off)
    test_accuracy: np.ndarray  # (n_splits,)

    @property
    def mean_test_accuracy(self) -> float:
        return float(np.mean(self.test_accuracy))

    @property
    def mean_train_loss(self) -> float:
        return float(np.mean(self.train_loss))

    @property
    def mean_test_loss(self) -> float:
        return float(np.mean(self.test_loss))

    def to_dict(self) -> dict:
        """JSON-ready: lists of floats plus ``mean_test_accuracy``."""
        return {
            "epoch": self.epoch,
            "folds": list(self.folds),
            "train_loss": [float(v) for v in self.train_loss],
            "test_loss": [float(v) for v in self.test_loss],
            "test_accuracy": [float(v) for v in self.test_accuracy],
            "mean_test_accuracy": self.mean_test_accuracy,
        }


EpochCallback = Callable[[EpochMetrics], None]


@dataclass
class FoldResult:
    """One fold's final metrics (after the last epoch) on its test part."""

    fold: int | str
    accuracy: float
    loss: float
    n_train: int
    n_test: int
    per_class_accuracy: list[float | None]  # None for a class absent from the test part
    confusion: list[list[int]]  # n_classes x n_classes, rows = true class


@dataclass
class CVResult:
    """All folds' final metrics, the per-epoch history, and the mean and std over folds."""

    folds: list[FoldResult]
    history: list[EpochMetrics] = field(default_factory=list)
    mean_accuracy: float = float("nan")
    std_accuracy: float = float("nan")  # over folds, ddof=0 (0.0 for one fold)

    def to_dict(self) -> dict:
        """JSON-ready dict: ``folds``, ``history``, ``mean_accuracy``, ``std_accuracy``."""
        return {
            "folds": [asdict(f) for f in self.folds],
            "history": [h.to_dict() for h in self.history],
            "mean_accuracy": float(self.mean_accuracy),
            "std_accuracy": float(self.std_accuracy),
        }


# --------------------------------------------------------------------------------------------
# Seeds and devices


@dataclass(frozen=True)
class FoldSeeds:
    """Seeds of one fold's three random streams, derived from ``(train.seed, fold)`` only."""

    init: int
    shuffle: int
    dropout: int


def _fold_key(fold: int | str) -> int:
    if isinstance(fold, str):
        return 2**32 + zlib.crc32(fold.encode())  # labels never collide with fold numbers
    return int(fold)


def fold_seeds(seed: int, fold: int | str) -> FoldSeeds:
    """The seeds of fold ``fold``'s initialisation, shuffling and dropout streams."""
    children = np.random.SeedSequence(int(seed), spawn_key=(_fold_key(fold),)).spawn(3)
    init, shuffle, dropout = (int(c.generate_state(1, np.uint64)[0] >> 1) for c in children)
    return FoldSeeds(init=init, shuffle=shuffle, dropout=dropout)


def fold_init_params(
    sizes: Sequence[int], *, seed: int, fold: int | str
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fold ``fold``'s initial weights (Keras layout, CPU): what its model starts from."""
    gen = torch.Generator().manual_seed(fold_seeds(seed, fold).init)
    return init_params(sizes, generator=gen)


class FoldRandom:
    """One fold's shuffling and dropout streams (seeded by :func:`fold_seeds`), on ``device``.

    The lockstep trainer draws from these exactly as a per-fold loop would, so a fold's batches
    and dropout masks depend only on ``(train.seed, fold)`` and its training-set size.
    """

    def __init__(self, seeds: FoldSeeds, *, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._shuffle = torch.Generator(device=self.device).manual_seed(seeds.shuffle)
        self._dropout = torch.Generator(device=self.device).manual_seed(seeds.dropout)

    def permutation(self, n: int) -> torch.Tensor:
        """The order of an epoch's ``n`` training clips (int64, on the device)."""
        return torch.randperm(n, generator=self._shuffle, device=self.device)

    def drop_masks(self, steps: int, batch: int, width: int, rate: float) -> torch.Tensor:
        """An epoch's dropout masks, ``(steps, batch, width)`` bool, True = dropped.

        ``width`` is the sum of the hidden widths (layer ``i`` uses its own slice of the last
        axis); rows beyond a smaller last batch are drawn and ignored.
        """
        u = torch.rand((steps, batch, width), generator=self._dropout, device=self.device)
        return u < rate


def resolve_device(name: str) -> torch.device:
    """``train.device``: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "train.device=cuda but torch sees no CUDA device (torch "
            f"{torch.__version__}); use train.device=auto or cpu"
        )
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"train.device must be one of auto, cpu, cuda; got {name!r}")
    return torch.device(name)


# --------------------------------------------------------------------------------------------
# Adam, Keras flavour, over stacked weights


class StackedAdam:
    """Keras' Adam for every model of a :class:`StackedMLP`, each with its own step count.

    Keras (``keras.optimizers.Adam``) updates ``m += (g - m)(1 - b1)``, ``v += (g^2 - v)(1 - b2)``,
    ``w -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)`` after the decoupled decay
    ``w -= lr wd w``. That equals torch's AdamW with ``eps / sqrt(1 - b2^t)`` in place of
    ``eps``, so models are updated with torch's fused kernel, one call per distinct step count.
    """

    def __init__(
        self,
        model: StackedMLP,
        *,
        lr: float,
        beta1: float,
        beta2: float,
        eps: float,
        weight_decay: float = 0.0,
        fused: bool | None = None,
    ) -> None:
        self.lr, self.beta1, self.beta2 = float(lr), float(beta1), float(beta2)
        self.eps, self.weight_decay = float(eps), float(weight_decay)
        self.params = model.parameters()
        self.grads = model.gradients()
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        n = model.n_models
        device = self.params[0].device
        self.t = np.zeros(n, dtype=np.int64)  # host copy: no device sync to read it
        self.steps = torch.zeros(n, dtype=torch.float32, device=device)
        if fused is None:
            fused = hasattr(torch, "_fused_adamw_") and device.type in ("cpu", "cuda")
        self.fused = bool(fused)
        # Per model: views of its slice of every stacked tensor (the fused kernel takes lists).
        self._views = [
            (
                [p[j] for p in self.params],
                [g[j] for g in self.grads],
                [m[j] for m in self.exp_avg],
                [v[j] for v in self.exp_avg_sq],
                [self.steps[j]] * len(self.params),
            )
            for j in range(n)
        ]
        self._groups: dict[tuple[int, ...], list[tuple[int, int]]] = {}

    def _runs(self, k: int) -> list[tuple[int, int]]:
        """Runs ``[a, b)`` of the first ``k`` models that share a step count."""
        t = self.t[:k]
        key = tuple(t.tolist())
        runs = self._groups.get(key)
        if runs is None:
            runs, a = [], 0
            for b in range(1, k + 1):
                if b == k or t[b] != t[a]:
                    runs.append((a, b))
                    a = b
            if len(self._groups) > 64:
                self._groups.clear()
            self._groups[key] = runs
        return runs

    def step(self, k: int) -> None:
        """Update the first ``k`` models with their gradients (the others are not touched)."""
        self.t[:k] += 1
        self.steps[:k] += 1
        if not self.fused:
            self._step_reference(k)
            return
        for a, b in self._runs(k):
            t = int(self.t[a])
            eps = self.eps / math.sqrt(1.0 - self.beta2**t)
            lists = [[x for j in range(a, b) for x in self._views[j][i]] for i in range(5)]
            torch._fused_adamw_(
                *lists[:4],
                [],
                lists[4],
                lr=self.lr,
                beta1=self.beta1,
                beta2=self.beta2,
                weight_decay=self.weight_decay,
                eps=eps,
                amsgrad=False,
                maximize=False,
            )

    def _step_reference(self, k: int) -> None:
        """The same update written out with tensor ops (for devices without the fused kernel)."""
        t = torch.as_tensor(self.t[:k], dtype=torch.float64)
        alpha = self.lr * torch.sqrt(1.0 - self.beta2**t) / (1.0 - self.beta1**t)
        alpha = alpha.to(dtype=torch.float32, device=self.params[0].device)
        for p, g, m, v in zip(self.params, self.grads, self.exp_avg, self.exp_avg_sq, strict=True):
            p, g, m, v = p[:k], g[:k], m[:k], v[:k]
            shape = (k,) + (1,) * (p.dim() - 1)
            if self.weight_decay:
                p.mul_(1.0 - self.lr * self.weight_decay)
            m.lerp_(g, 1.0 - self.beta1)
            v.mul_(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
            p.sub_(m / (v.sqrt() + self.eps) * alpha.view(shape))


# --------------------------------------------------------------------------------------------
# Training


def _check_inputs(
    X: np.ndarray, y: np.ndarray, splits: Sequence[Split], n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise DataError(
            f"features must be (n_clips, n_features) matching labels; got X {X.shape}, y {y.shape}"
        )
    if not np.isfinite(X).all():
        raise DataError(
            "features contain NaN or infinite values; delete the feature cache and retry"
        )
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(f"labels must lie in 0..{n_classes - 1}, got {y.min()}..{y.max()}")
    if not splits:
        raise DataError("no train/test split to evaluate (are there clips in the selected folds?)")
    for s in splits:
        if len(s.train) == 0 or len(s.test) == 0:
            raise DataError(
                f"fold {s.fold}: {len(s.train)} training and {len(s.test)} test clips; "
                "both parts need clips"
            )
        for part in (s.train, s.test):
            if part.min() < 0 or part.max() >= len(X):
                raise DataError(f"fold {s.fold}: indices outside 0..{len(X) - 1}")
    return X.astype(np.float32, copy=False), y.astype(np.int64, copy=False)


def _standardizer(X: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (ddof=0) of ``X[rows]``; a constant feature gets std 1 (as scikit-learn)."""
    part = X[rows].astype(np.float64)
    mean = part.mean(axis=0)
    std = part.std(axis=0)
    std[std < 10 * np.finfo(np.float64).eps] = 1.0
    return mean, std


def cross_validate(
    X: np.ndarray,
    y: np.ndarray,
    splits: Sequence[Split],
    *,
    n_classes: int,
    model: ModelSettings,
    train: TrainSettings,
    callbacks: Sequence[EpochCallback] = (),
    progress: bool = True,
) -> CVResult:
    """Train one MLP per split, all in lockstep, and evaluate each on its test part every epoch.

    Parameters
    ----------
    X, y:
        Features ``(n_clips, n_features)`` and class ids ``(n_clips,)``.
    splits:
        The partitions to train and test (:func:`fold_splits`, :func:`random_split`).
    n_classes:
        Number of classes (the output width; classes absent from the data are allowed).
    model, train:
        The ``model`` and ``train`` config groups.
    callbacks:
        Called with the :class:`EpochMetrics` of every epoch; an exception raised by one
        (:class:`~urbansound.errors.TrialPruned`) stops training and propagates.
    progress:
        Show a progress bar over epochs with the mean test accuracy.

    Returns
    -------
    CVResult
        Final per-fold metrics (after the last epoch), the per-epoch history, and the mean and
        standard deviation of the folds' accuracies.
    """
    X, y = _check_inputs(X, y, splits, n_classes)
    device = resolve_device(train.device)
    old_threads = torch.get_num_threads()
    if train.threads is not None:
        torch.set_num_threads(train.threads)
    try:
        return _cross_validate(
            X,
            y,
            list(splits),
            n_classes=n_classes,
            model=model,
            train=train,
            device=device,
            callbacks=callbacks,
            progress=progress,
        )
    finally:
        if train.threads is not None:
            torch.set_num_threads(old_threads)


def _cross_validate(
    X: np.ndarray,
    y: np.ndarray,
    splits: list[Split],
    *,
    n_classes: int,
    model: ModelSettings,
    train: TrainSettings,
    device: torch.device,
    callbacks: Sequence[EpochCallback],
    progress: bool,
) -> CVResult:
    n, d = X.shape
    bs = train.batch_size
    n_train = np.array([len(s.train) for s in splits])
    steps = -(-n_train // bs)  # ceil: the last batch of an epoch may be smaller
    # Models are stacked in order of decreasing batch count: the folds still training at any
    # step of an epoch are then a leading slice of the stack.
    order = np.argsort(-steps, kind="stable")
    n_models = len(splits)
    msplits = [splits[i] for i in order]
    msteps = steps[order]
    active = np.array([(msteps > s).sum() for s in range(int(msteps.max()))])
    sizes = layer_sizes(d, model.hidden, n_classes)
    logger.info(
        "training %d fold(s) in lockstep on %s: %d epochs, batch %d, %d-%s-%d MLP (%s)",
        n_models,
        device,
        train.epochs,
        bs,
        d,
        "-".join(str(h) for h in model.hidden),
        n_classes,
        model.activation,
    )

    # Per-model inputs, standardised with that model's training statistics.
    if train.standardize:
        stats = [_standardizer(X, s.train) for s in msplits]
        Xm = np.stack([((X - m) / s).astype(np.float32) for m, s in stats])
    else:
        Xm = X[None]
    X_all = torch.from_numpy(np.ascontiguousarray(Xm)).to(device).reshape(-1, d)
    row_offset = n if train.standardize else 0
    y_dev = torch.from_numpy(y).to(device)

    # Test parts, padded to a common length.
    n_test = np.array([len(s.test) for s in msplits])
    t_max = int(n_test.max())
    test_idx = np.zeros((n_models, t_max), dtype=np.int64)
    test_valid = np.zeros((n_models, t_max), dtype=bool)
    for j, s in enumerate(msplits):
        test_idx[j, : len(s.test)] = s.test + j * row_offset
        test_valid[j, : len(s.test)] = True
    test_idx_t = torch.from_numpy(test_idx).to(device)
    X_test = X_all.index_select(0, test_idx_t.view(-1)).view(n_models, t_max, d)
    y_test = y_dev.index_select(0, torch.from_numpy(test_idx % n).to(device).view(-1))
    y_test = y_test.view(n_models, t_max)
    valid_test = torch.from_numpy(test_valid).to(device)
    n_test_dev = torch.from_numpy(n_test.astype(np.float32)).to(device)

    # Model, optimiser, random streams.
    params = [fold_init_params(sizes, seed=train.seed, fold=s.fold) for s in msplits]
    net = StackedMLP(params, dropout=model.dropout, activation=model.activation, device=device)
    opt = StackedAdam(
        net,
        lr=train.lr,
        beta1=train.beta1,
        beta2=train.beta2,
        eps=train.eps,
        weight_decay=train.weight_decay,
    )
    streams = [FoldRandom(fold_seeds(train.seed, s.fold), device=device) for s in msplits]
    train_rows = [
        torch.from_numpy(s.train + j * row_offset).to(device) for j, s in enumerate(msplits)
    ]

    n_steps = int(msteps.max())
    hidden = list(model.hidden)
    width = sum(hidden)
    use_dropout = model.dropout > 0 and width > 0
    # Per-step sample weights: 1/batch size for real rows, 0 for padding.
    counts = np.clip(n_train[order][:, None] - np.arange(n_steps)[None] * bs, 0, bs)
    weight = np.zeros((n_models, n_steps, bs), dtype=np.float32)
    for j in range(n_models):
        for s in range(int(msteps[j])):
            weight[j, s, : counts[j, s]] = 1.0 / counts[j, s]
    weight_t = torch.from_numpy(weight).to(device)
    valid_t = weight_t > 0
    train_n_dev = torch.from_numpy(n_train[order].astype(np.float32)).to(device)
    folds_out = [s.fold for s in splits]
    inverse = np.argsort(order)

    history: list[EpochMetrics] = []
    test_pred = None
    bar = tqdm(range(train.epochs), desc="train", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        # One permutation of every model's training rows, padded to the longest epoch.
        idx = torch.zeros((n_models, n_steps * bs), dtype=torch.long, device=device)
        for j in range(n_models):
            perm = streams[j].permutation(len(train_rows[j]))
            idx[j, : len(perm)] = train_rows[j][perm]
        x_ep = X_all.index_select(0, idx.view(-1)).view(n_models, n_steps, bs, d)
        y_ep = y_dev.index_select(0, (idx % n).view(-1)).view(n_models, n_steps, bs)
        onehot = torch.nn.functional.one_hot(y_ep, n_classes).to(torch.float32)
        drop_ep = None
        if use_dropout:
            drop_ep = torch.zeros((n_models, n_steps, bs, width), dtype=torch.bool, device=device)
            for j in range(n_models):
                drop_ep[j, : int(msteps[j])] = streams[j].drop_masks(
                    int(msteps[j]), bs, width, model.dropout
                )
        loss_sum = torch.zeros(n_models, dtype=torch.float32, device=device)
        for s in range(n_steps):
            k = int(active[s])
            x = x_ep[:k, s]
            drops = None
            if drop_ep is not None:
                dm = drop_ep[:k, s]
                offs = np.cumsum([0, *hidden])
                drops = [dm[..., offs[i] : offs[i + 1]] for i in range(len(hidden))]
            logits, cache = net.forward_train(x, drops or [None] * len(hidden))
            lse = torch.logsumexp(logits, dim=-1)
            ce = lse - (logits * onehot[:k, s]).sum(-1)
            loss_sum[:k] += (ce * valid_t[:k, s]).sum(-1)
            grad = torch.softmax(logits, dim=-1).sub_(onehot[:k, s]).mul_(weight_t[:k, s, :, None])
            net.backward(grad, cache)
            opt.step(k)

        with torch.inference_mode():
            logits = net.forward(X_test)
            lse = torch.logsumexp(logits, dim=-1)
            ce = lse - logits.gather(-1, y_test.unsqueeze(-1)).squeeze(-1)
            test_loss = (ce * valid_test).sum(-1) / n_test_dev
            test_pred = logits.argmax(-1)
            acc = ((test_pred == y_test) & valid_test).sum(-1).float() / n_test_dev
            train_loss = loss_sum / train_n_dev
            row = torch.stack([train_loss, test_loss, acc]).cpu().numpy()[:, inverse]
        metrics = EpochMetrics(
            epoch=epoch + 1,
            folds=list(folds_out),
            train_loss=row[0].astype(np.float64),
            test_loss=row[1].astype(np.float64),
            test_accuracy=row[2].astype(np.float64),
        )
        history.append(metrics)
        bar.set_postfix(acc=f"{metrics.mean_test_accuracy:.4f}")
        for cb in callbacks:
            cb(metrics)
    bar.close()

    if test_pred is None:  # zero epochs: evaluate the initial weights
        with torch.inference_mode():
            logits = net.forward(X_test)
            test_pred = logits.argmax(-1)
            lse = torch.logsumexp(logits, dim=-1)
            ce = lse - logits.gather(-1, y_test.unsqueeze(-1)).squeeze(-1)
            test_loss = (ce * valid_test).sum(-1) / n_test_dev
    pred = test_pred.cpu().numpy()
    losses = test_loss.cpu().numpy()
    results = []
    for i, s in enumerate(splits):
        j = int(inverse[i])
        p = pred[j, : len(s.test)]
        t = y[s.test]
        conf = np.bincount(t * n_classes + p, minlength=n_classes * n_classes)
        conf = conf.reshape(n_classes, n_classes)
        support = conf.sum(axis=1)
        per_class = [
            float(conf[c, c] / support[c]) if support[c] else None for c in range(n_classes)
        ]
        results.append(
            FoldResult(
                fold=s.fold,
                accuracy=float((p == t).mean()),
                loss=float(losses[j]),
                n_train=len(s.train),
                n_test=len(s.test),
                per_class_accuracy=per_class,
                confusion=conf.tolist(),
            )
        )
    accs = np.array([r.accuracy for r in results])
    return CVResult(
        folds=results,
        history=history,
        mean_accuracy=float(accs.mean()),
        std_accuracy=float(accs.std(ddof=0)),
    )
