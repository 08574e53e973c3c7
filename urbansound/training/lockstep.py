"""All folds trained together: the stacked-model driver behind ``train.cross_validate``.

The folds train together as one stacked model (:class:`urbansound.training.mlp.StackedMLP`): step
``s`` of an epoch runs batch ``s`` of every fold through batched matrix products with a written-out
backward pass (no autograd), and fused Adam updates (:class:`StackedAdam`) move every fold's
weights. On the CPU the folds are dealt to ``train.threads`` such stacks (:func:`train_folds`), each
with single-threaded torch ops, meeting once per epoch: the first in this process, the others in
forked child processes on Linux (:mod:`urbansound.training.child_groups`; threads of this process
elsewhere); on CUDA there is one stack and nothing leaves the device inside an epoch (metrics are
copied to the host once per epoch). Each fold is still exactly the model Keras would train on its
own:

- its own initialisation, shuffling and dropout, drawn from generators derived from
  ``(train.seed, fold)`` only (:func:`fold_seeds`, :class:`FoldRandom`, on the host), so a fold
  trains the same whether it trains alone or beside others, on any device;
- an epoch visits each of the fold's training clips exactly once, in batches of
  ``train.batch_size`` with a smaller last batch (``Model.fit(shuffle=True)``);
- folds with fewer batches sit out the last steps of an epoch: their weights, Adam moments and
  Adam step count are untouched (the folds are ordered by batch count, so the folds still training
  are always a leading slice of the stack);
- Adam follows Keras (``keras.optimizers.Adam``): ``epsilon`` is added to ``sqrt(v)`` before the
  bias correction, and ``weight_decay`` is Keras' decoupled decay (``w -= lr * wd * w``).
"""

from __future__ import annotations

import functools
import itertools
import logging
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from urbansound.config.settings import ModelSettings, TrainSettings
from urbansound.data.cv import Split
from urbansound.errors import ConfigError
from urbansound.training.child_groups import FORK_LOCK, ChildGroup, close_children, fork_context
from urbansound.training.mlp import StackedAdam, StackedMLP, init_params, layer_sizes
from urbansound.training.results import (
    CVResult,
    EpochCallback,
    EpochMetrics,
    FittedMLP,
    FoldPredictions,
    FoldResult,
)
from urbansound.utils.progress import progress_bar

logger = logging.getLogger(__name__)

__all__ = [
    "FoldRandom",
    "FoldSeeds",
    "dropout_bits",
    "fold_init_params",
    "fold_seeds",
    "resolve_device",
    "train_folds",
    "unpack_keep",
]

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


def dropout_bits(rate: float) -> tuple[int, ...]:
    """Binary digits of a dropout rate rounded to a multiple of 2**-16, trailing zeros dropped.

    ``0.5`` is ``(1,)``, ``0.25`` is ``(0, 1)``; ``0.3`` needs all 16 digits (it becomes
    19661 / 65536 = 0.300003). A unit is dropped when a uniform number with that many random
    bits lies below the rate, so dyadic rates are exact and cost one random bit per digit.
    """
    q = round(float(rate) * 2**16)
    if not 0 <= q < 2**16:
        raise ValueError(f"dropout rate must lie in [0, 1), got {rate}")
    digits = [(q >> (15 - i)) & 1 for i in range(16)]
    while digits and digits[-1] == 0:
        digits.pop()
    return tuple(digits)


class FoldRandom:
    """One fold's shuffling and dropout streams (seeded by :func:`fold_seeds`).

    Drawn on the host with NumPy (PCG64), so a fold's batches and dropout masks depend only on
    ``(train.seed, fold)`` and its training-set size: not on the device, not on which other folds
    train beside it. The lockstep trainer draws from these exactly as a per-fold loop would.
    """

    def __init__(self, seeds: FoldSeeds) -> None:
        self._shuffle = np.random.Generator(np.random.PCG64(seeds.shuffle))
        self._bits = np.random.PCG64(seeds.dropout)

    def permutation(self, n: int) -> np.ndarray:
        """The order of an epoch's ``n`` training clips (int64)."""
        return self._shuffle.permutation(n)

    def keep_bits(self, steps: int, batch: int, width: int, rate: float) -> np.ndarray:
        """An epoch's dropout masks as packed bits, ``(steps, n_bytes)`` uint8.

        Step ``s`` keeps unit ``u`` of row ``r`` when bit ``r * width + u`` of row ``s`` is set
        (little-endian bit order; :func:`unpack_keep` expands it). ``width`` is the sum of the
        hidden widths (layer ``i`` uses its own slice of it); rows beyond a smaller last batch
        are drawn and ignored. A unit is dropped with probability ``rate`` rounded as in
        :func:`dropout_bits`: "uniform < rate" is decided 64 units at a time, one random bit
        plane per binary digit of the rate. Each step's bits start on a 64-bit word.
        """
        words = -(-(batch * width) // 64)
        digits = dropout_bits(rate)
        if steps * words == 0 or not digits:
            return np.full((steps, words * 8), 255, dtype=np.uint8)
        below = np.zeros(steps * words, dtype=np.uint64)  # decided: uniform < rate
        equal: np.ndarray | None = None  # undecided: equal to the rate's digits so far
        for i, digit in enumerate(digits):
            plane = self._bits.random_raw(steps * words)
            last = i == len(digits) - 1
            if digit:
                below |= ~plane if equal is None else equal & ~plane
                if not last:
                    equal = plane if equal is None else equal & plane
            else:
                equal = ~plane if equal is None else equal & ~plane
        return np.invert(below, out=below).view(np.uint8).reshape(steps, words * 8)


def unpack_keep(bits: np.ndarray, batch: int, width: int) -> np.ndarray:
    """Expand :meth:`FoldRandom.keep_bits` to ``(steps, batch, width)`` uint8 (1 = kept)."""
    flat = np.unpackbits(bits, axis=1, count=batch * width, bitorder="little")
    return flat.reshape(len(bits), batch, width)


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
# Training


def _standardizer(X: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (ddof=0) of ``X[rows]``; a constant feature gets std 1 (as scikit-learn)."""
    part = X[rows].astype(np.float64)
    mean = part.mean(axis=0)
    std = part.std(axis=0)
    std[std < 10 * np.finfo(np.float64).eps] = 1.0
    return mean, std


class _Lockstep:
    """A group of folds trained together as one stacked model; one group per worker thread.

    Folds are stacked in order of decreasing batch count, so the folds still training at any
    step of an epoch are a leading slice of the stack. Everything a step touches lives in
    buffers allocated here once.
    """

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        splits: list[Split],
        *,
        n_classes: int,
        model: ModelSettings,
        train: TrainSettings,
        device: torch.device,
    ) -> None:
        n, d = X.shape
        bs = train.batch_size
        n_train = np.array([len(s.train) for s in splits])
        steps = -(-n_train // bs)  # the last batch of an epoch may be smaller
        order = np.argsort(-steps, kind="stable")
        self.inverse = np.argsort(order)  # stack position of splits[i]
        self.folds = [s.fold for s in splits]
        msplits = [splits[i] for i in order]
        m_train, m_steps = n_train[order], steps[order]
        n_models, n_steps = len(splits), int(m_steps.max())
        active = [int((m_steps > s).sum()) for s in range(n_steps)]
        sizes = layer_sizes(d, model.hidden, n_classes)
        hidden = list(model.hidden)
        width = sum(hidden)
        offsets = np.cumsum([0, *hidden]).tolist()
        self.device, self.bs, self.d, self.width = device, bs, d, width
        self.n_models, self.n_steps, self.active = n_models, n_steps, active
        self.m_train, self.m_steps = m_train, m_steps
        self.dropout = model.dropout
        self.use_dropout = model.dropout > 0 and width > 0

        # Rows of every model's own copy of X, standardised with its training statistics.
        self.stats: list[tuple[np.ndarray, np.ndarray] | None] = [None] * n_models
        if train.standardize:
            self.stats = [_standardizer(X, s.train) for s in msplits]
            Xm = np.concatenate([((X - m) / s).astype(np.float32) for m, s in self.stats])
            block = n  # model j reads rows j * n .. j * n + n - 1
        else:
            Xm, block = X, 0
        self.X_all = torch.from_numpy(np.ascontiguousarray(Xm)).to(device)
        self.y_all = torch.from_numpy(np.tile(y, len(Xm) // n)).to(device)
        self.train_rows = [s.train + j * block for j, s in enumerate(msplits)]

        # Test parts, padded to a common length.
        n_test = np.array([len(s.test) for s in msplits])
        t_max = int(n_test.max())
        test_idx = np.zeros((n_models, t_max), dtype=np.int64)
        test_valid = np.zeros((n_models, t_max), dtype=np.float32)
        for j, s in enumerate(msplits):
            test_idx[j] = s.test[0] + j * block
            test_idx[j, : len(s.test)] = s.test + j * block
            test_valid[j, : len(s.test)] = 1.0
        test_idx_t = torch.from_numpy(test_idx).to(device).view(-1)
        self.X_test = self.X_all.index_select(0, test_idx_t).view(n_models, t_max, d)
        self.y_test = self.y_all.index_select(0, test_idx_t).view(n_models, t_max, 1)
        self.valid_test = torch.from_numpy(test_valid).to(device)
        self.n_test_t = torch.from_numpy(n_test.astype(np.float32)).to(device)
        self.n_train_t = torch.from_numpy(m_train.astype(np.float32)).to(device)

        # Per step, per model, per row: 1 / (that batch's size) for real rows, 0 for padding.
        # Training logits and their gradients are class-major, (classes, rows) per model and
        # step, as StackedMLP.forward_train gives them.
        weight = np.zeros((n_steps, n_models, 1, bs), dtype=np.float32)
        for j in range(n_models):
            for s in range(int(m_steps[j])):
                c = min(bs, int(m_train[j]) - s * bs)
                weight[s, j, 0, :c] = 1.0 / c
        self.weight = torch.from_numpy(weight).to(device)
        self.valid = (self.weight > 0).to(torch.float32)
        self.neg_weight = (-self.weight).expand(-1, -1, n_classes, -1)

        params = [fold_init_params(sizes, seed=train.seed, fold=s.fold) for s in msplits]
        self.net = StackedMLP(
            params, dropout=model.dropout, activation=model.activation, device=device
        )
        self.opt = StackedAdam(
            self.net,
            lr=train.lr,
            beta1=train.beta1,
            beta2=train.beta2,
            eps=train.eps,
            weight_decay=train.weight_decay,
        )
        self.streams = [FoldRandom(fold_seeds(train.seed, s.fold)) for s in msplits]

        # Buffers reused every epoch: the batches, the loss-gradient targets, every step's
        # logits (the training loss is computed from them once per epoch), the dropout bits.
        self.x_buf = torch.zeros((n_steps, n_models, bs, d), device=device)
        self.y_buf = torch.zeros((n_steps, n_models, 1, bs), dtype=torch.long, device=device)
        self.logits = torch.zeros((n_steps, n_models, n_classes, bs), device=device)
        self.target = torch.zeros((n_steps, n_models, n_classes, bs), device=device)
        self.n_bytes = 8 * -(-(bs * width) // 64)
        # Expanding the packed bits of one step is one table lookup: byte -> 8 multipliers.
        byte_bits = (np.arange(256)[:, None] >> np.arange(8)[None]) & 1
        scale = 1.0 / (1.0 - model.dropout)
        self.keep_table = torch.from_numpy(byte_bits * scale).float().to(device)
        keep_idx = torch.zeros((n_models, self.n_bytes), dtype=torch.int32, device=device)
        keep_buf = torch.zeros((n_models, self.n_bytes * 8), device=device)
        self.masks_for: dict[int, tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]] = {}
        for k in sorted(set(active)):
            rows = keep_buf[:k, : bs * width].view(k, bs, width)
            layers = [rows[..., a:b] for a, b in itertools.pairwise(offsets)]
            self.masks_for[k] = (keep_idx[:k], keep_buf[:k].view(-1, 8), layers)
        self.no_masks: list[torch.Tensor | None] = [None] * len(hidden)
        self.pending: tuple[np.ndarray, np.ndarray | None] | None = None

    def draw_epoch(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Host side of an epoch: every model's batch rows and packed dropout bits."""
        n_steps, n_models, bs = self.n_steps, self.n_models, self.bs
        idx = np.empty((n_steps, n_models, bs), dtype=np.int64)
        for j in range(n_models):
            rows = np.full(n_steps * bs, self.train_rows[j][0])
            perm = self.streams[j].permutation(int(self.m_train[j]))
            rows[: self.m_train[j]] = self.train_rows[j][perm]
            idx[:, j] = rows.reshape(n_steps, bs)
        bits = None
        if self.use_dropout:
            bits = np.zeros((n_steps, n_models, self.n_bytes), dtype=np.uint8)
            for j in range(n_models):
                sj = int(self.m_steps[j])
                bits[:sj, j] = self.streams[j].keep_bits(sj, bs, self.width, self.dropout)
        return idx, bits

    def evaluate(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Test loss, accuracy, predictions and log-probabilities of every model (stack order,
        on the device; the log-probabilities ``(n, max test size, n_classes)``)."""
        with torch.inference_mode():
            logits = self.net.forward(self.X_test)
            logp = torch.log_softmax(logits, dim=-1)
            ce = -logp.gather(-1, self.y_test).squeeze(-1)
            loss = (ce * self.valid_test).sum(-1) / self.n_test_t
            pred = logits.argmax(-1)
            hit = (pred == self.y_test.squeeze(-1)) * self.valid_test
            return loss, hit.sum(-1) / self.n_test_t, pred, logp

    def run_epoch(self, *, last: bool) -> np.ndarray:
        """Train one epoch; ``(3, n)`` train loss, test loss, test accuracy in split order."""
        with torch.inference_mode():  # thread-local: entered by the worker thread itself
            if self.pending is None:
                self.pending = self.draw_epoch()
            idx_np, bits_np = self.pending
            dev, d = self.device, self.d
            idx = torch.from_numpy(idx_np).to(dev).view(-1)
            torch.index_select(self.X_all, 0, idx, out=self.x_buf.view(-1, d))
            torch.index_select(self.y_all, 0, idx, out=self.y_buf.view(-1))
            # d(mean cross-entropy)/d(logits) = softmax * weight + target, with
            # target = -onehot * weight (class-major: classes along axis -2).
            self.target.zero_().scatter_(-2, self.y_buf, self.neg_weight)
            # Per-step views, made once per epoch (each slice is per-call overhead).
            xs, ts, ws, ls = (
                t.unbind(0) for t in (self.x_buf, self.target, self.weight, self.logits)
            )
            bits = torch.from_numpy(bits_np).to(dev).unbind(0) if bits_np is not None else None
            net, opt, masks_for, table = self.net, self.opt, self.masks_for, self.keep_table
            for s, k in enumerate(self.active):
                full = k == self.n_models
                if full:
                    x, tgt, w, lg = xs[s], ts[s], ws[s], ls[s]
                else:
                    x, tgt, w, lg = xs[s][:k], ts[s][:k], ws[s][:k], ls[s][:k]
                masks = self.no_masks
                if bits is not None:
                    idx_k, out_k, masks = masks_for[k]
                    idx_k.copy_(bits[s] if full else bits[s][:k])
                    torch.index_select(table, 0, idx_k.view(-1), out=out_k)
                logits, cache = net.forward_train(x, masks, out=lg)
                grad = torch.addcmul(tgt, torch.softmax(logits, dim=-2), w)
                net.backward(grad, cache)
                opt.step(k)
            nll = -torch.log_softmax(self.logits, dim=-2).gather(-2, self.y_buf)
            train_loss = (nll * self.valid).sum(dim=(0, 2, 3)) / self.n_train_t
            test_loss, test_acc, _, _ = self.evaluate()
            # Draw the next epoch on the host while an accelerator finishes this one.
            self.pending = None if last else self.draw_epoch()
            row = torch.stack([train_loss, test_loss, test_acc]).cpu().numpy()
        return row[:, self.inverse]

    def final(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predictions ``(n, max test size)``, test losses ``(n,)`` and class probabilities
        ``(n, max test size, n_classes)`` (float32) in split order."""
        loss, _, pred, logp = self.evaluate()
        probs = logp.exp().cpu().numpy()
        return (
            pred.cpu().numpy()[self.inverse],
            loss.cpu().numpy()[self.inverse],
            probs[self.inverse],
        )

    def fitted_models(self) -> list[FittedMLP]:
        """Every split's trained model (of this group) as plain arrays, in split order."""
        models = []
        for fold, j in zip(self.folds, self.inverse, strict=True):  # j: its stack position
            stats = self.stats[j]
            models.append(
                FittedMLP(
                    fold=fold,
                    params=[(w.numpy(), b.numpy()) for w, b in self.net.model_params(int(j))],
                    activation=self.net.activation,
                    mean=None if stats is None else stats[0],
                    std=None if stats is None else stats[1],
                )
            )
        return models


# --------------------------------------------------------------------------------------------
# Groups and the epoch loop

_TRAININGS = 0  # train_folds calls running in this process (see _train_groups)


def train_folds(
    X: np.ndarray,
    y: np.ndarray,
    splits: Sequence[Split],
    *,
    n_classes: int,
    model: ModelSettings,
    train: TrainSettings,
    callbacks: Sequence[EpochCallback] = (),
    progress: bool = True,
    keep_models: bool = False,
) -> CVResult:
    """Train one model per split, all in lockstep; inputs already checked (float32, int64).

    Chooses the device (``train.device``) and the groups (``train.threads`` of them on the CPU,
    one stack each: one in this process, the others in forked children on Linux), restores
    torch's thread count afterwards, and
    returns the :class:`CVResult` (see :func:`urbansound.training.cross_validation.cross_validate`);
    with ``keep_models`` its ``models`` hold every split's :class:`FittedMLP`.
    """
    device = resolve_device(train.device)
    old_threads = torch.get_num_threads()
    threads = train.threads if train.threads is not None else old_threads
    # On the CPU the folds are dealt to `threads` lockstep groups (one here, the others in child
    # processes; see _train_groups), each running single-threaded torch ops: one
    # synchronisation per epoch instead of one per op (an OpenMP team per op collapses when the
    # cores are shared with other processes: a single split trained with 2 intra-op threads on a
    # busy 2-core machine ran 5-10 epochs/s against 60-70 with one). A single split (a final
    # fit, cv.folds=[k]) also runs single-threaded ops.
    workers = 1 if device.type != "cpu" else max(1, min(threads, len(splits)))
    intra = 1 if device.type == "cpu" else threads
    torch.set_num_threads(intra)
    try:
        return _train_groups(
            X,
            y,
            list(splits),
            n_classes=n_classes,
            model=model,
            train=train,
            device=device,
            workers=workers,
            callbacks=callbacks,
            progress=progress,
            keep_models=keep_models,
        )
    finally:
        torch.set_num_threads(old_threads)


def _train_groups(
    X: np.ndarray,
    y: np.ndarray,
    splits: list[Split],
    *,
    n_classes: int,
    model: ModelSettings,
    train: TrainSettings,
    device: torch.device,
    workers: int,
    callbacks: Sequence[EpochCallback],
    progress: bool,
    keep_models: bool,
) -> CVResult:
    # Deal the folds to the workers by decreasing batch count, so every group has about the
    # same number of steps per epoch.
    steps = np.array([-(-len(s.train) // train.batch_size) for s in splits])
    ranked = np.argsort(-steps, kind="stable")
    members = [sorted(ranked[w::workers].tolist()) for w in range(workers)]
    members = [m for m in members if m]

    def builder(m: list[int]) -> Callable[[], _Lockstep]:
        return functools.partial(
            _Lockstep,
            X,
            y,
            [splits[i] for i in m],
            n_classes=n_classes,
            model=model,
            train=train,
            device=device,
        )

    # On the CPU, the first group trains in this process and every other group in a forked
    # child (Linux), so no two groups share Python's lock; elsewhere they are threads here.
    # Only a training alone in this process forks: a fork while another thread is inside a torch
    # op can leave the child waiting forever on a lock that thread held (seen with two
    # cross_validate calls from two threads), so a concurrent call keeps its groups in threads,
    # and no other call starts until this one's children are forked.
    global _TRAININGS
    children: list[ChildGroup] = []
    pool: ThreadPoolExecutor | None = None
    counted = False
    try:
        with FORK_LOCK:  # held from the count to the last fork
            alone = _TRAININGS == 0
            _TRAININGS += 1
            counted = True
            forking = alone and device.type == "cpu" and len(members) > 1
            ctx = fork_context() if forking else None
            if ctx is not None:
                for m in members[1:]:
                    children.append(ChildGroup(ctx, builder(m)))
        if ctx is not None:
            local = [builder(members[0])()]
            for c in children:
                c.recv()  # built, or its error raised here
        else:
            local = [builder(m)() for m in members]
            if len(local) > 1:
                pool = ThreadPoolExecutor(len(local), "train")
        logger.info(
            "training %d fold(s) in lockstep on %s (%d group(s)%s): %d epochs, batch %d, "
            "%s MLP (%s, dropout %g)",
            len(splits),
            device,
            len(members),
            f", {len(children)} in child processes" if children else "",
            train.epochs,
            train.batch_size,
            "-".join(str(w) for w in layer_sizes(X.shape[1], model.hidden, n_classes)),
            model.activation,
            model.dropout,
        )

        def each(method: str, **kwargs: Any) -> list[Any]:
            """``group.method(**kwargs)`` on every group at once, results in group order."""
            for c in children:
                c.send(method, **kwargs)
            if pool is None:
                here = [getattr(g, method)(**kwargs) for g in local]
            else:
                here = list(pool.map(lambda g: getattr(g, method)(**kwargs), local))
            return here + [c.recv() for c in children]

        history: list[EpochMetrics] = []
        folds_out = [s.fold for s in splits]
        bar = progress_bar(
            range(train.epochs), desc="train", unit="epoch", mode=None if progress else "none"
        )
        for epoch in bar:
            rows = each("run_epoch", last=epoch + 1 == train.epochs)
            row = np.empty((3, len(splits)))
            for m, r in zip(members, rows, strict=True):
                row[:, m] = r
            metrics = EpochMetrics(
                epoch=epoch + 1,
                folds=list(folds_out),
                train_loss=row[0],
                test_loss=row[1],
                test_accuracy=row[2],
            )
            history.append(metrics)
            bar.set_postfix(acc=f"{metrics.mean_test_accuracy:.4f}", refresh=False)
            for cb in callbacks:
                cb(metrics)
        bar.close()
        finals = each("final")
        fitted: list[list[FittedMLP]] = each("fitted_models") if keep_models else []
    finally:
        if pool is not None:
            pool.shutdown()
        try:
            close_children(children)
        finally:
            if counted:
                with FORK_LOCK:
                    _TRAININGS -= 1

    by_split: dict[int, FoldResult] = {}
    predictions: dict[int, FoldPredictions] = {}
    models: dict[int, FittedMLP] = {}
    for g, (m, (pred, losses, probs)) in enumerate(zip(members, finals, strict=True)):
        for j, i in enumerate(m):
            s = splits[i]
            predictions[i] = FoldPredictions(
                fold=s.fold, test_index=s.test.copy(), probabilities=probs[j, : len(s.test)]
            )
            if keep_models:
                models[i] = fitted[g][j]
            p = pred[j, : len(s.test)]
            t = y[s.test]
            conf = np.bincount(t * n_classes + p, minlength=n_classes * n_classes)
            conf = conf.reshape(n_classes, n_classes)
            support = conf.sum(axis=1)
            per_class = [
                float(conf[c, c] / support[c]) if support[c] else None for c in range(n_classes)
            ]
            by_split[i] = FoldResult(
                fold=s.fold,
                accuracy=float((p == t).mean()),
                loss=float(losses[j]),
                n_train=len(s.train),
                n_test=len(s.test),
                per_class_accuracy=per_class,
                confusion=conf.tolist(),
            )
    results = [by_split[i] for i in range(len(splits))]
    accs = np.array([r.accuracy for r in results])
    return CVResult(
        folds=results,
        history=history,
        mean_accuracy=float(accs.mean()),
        std_accuracy=float(accs.std(ddof=0)),
        predictions=[predictions[i] for i in range(len(splits))],
        models=[models[i] for i in range(len(splits))] if keep_models else [],
    )
