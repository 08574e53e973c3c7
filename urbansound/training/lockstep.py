"""All folds of the MLP trained together: the driver behind ``cross_validate`` for ``model=mlp``.

The folds train as stacked models (:class:`~urbansound.training.lockstep_group.LockstepGroup`):
step ``s`` of an epoch runs batch ``s`` of every fold through batched matrix products and fused
Adam updates. On the CPU the folds are dealt to ``train.threads`` such groups
(:func:`train_folds`), each with single-threaded torch ops, meeting once per epoch: the first in
this process, the others in child processes on Linux (:mod:`urbansound.training.child_groups`;
threads of this process elsewhere). On CUDA there is one group and nothing leaves the device
inside an epoch (metrics are copied to the host once per epoch). Each fold is still exactly the
model Keras would train on its own:

- its own initialisation, shuffling and dropout, drawn from generators derived from
  ``(train.seed, fold)`` only (:mod:`urbansound.training.seeds`, on the host), so a fold trains
  the same whether it trains alone or beside others, in any group, on any device;
- an epoch visits each of the fold's training clips exactly once, in batches of
  ``train.batch_size`` with a smaller last batch (``Model.fit(shuffle=True)``);
- folds with fewer batches sit out the last steps of an epoch: their weights, Adam moments and
  Adam step count are untouched (the folds are ordered by batch count, so the folds still training
  are always a leading slice of the stack);
- Adam follows Keras (``keras.optimizers.Adam``): ``epsilon`` is added to ``sqrt(v)`` before the
  bias correction, and ``weight_decay`` is Keras' decoupled decay (``w -= lr * wd * w``).

Every epoch's losses are :func:`urbansound.training.metrics.cross_entropy` (computed on the
device), and each fold's final result is :func:`urbansound.training.metrics.fold_result` of its
test probabilities (:meth:`~urbansound.training.problem.CVProblem.result`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from urbansound.errors import ConfigError
from urbansound.training.child_groups import ChildGroup, children_available, close_children
from urbansound.training.lockstep_group import LockstepGroup
from urbansound.training.mlp import layer_sizes
from urbansound.training.problem import CVProblem
from urbansound.training.results import CVResult, EpochCallback, EpochMetrics, FittedMLP
from urbansound.utils.progress import progress_bar

logger = logging.getLogger(__name__)

__all__ = ["resolve_device", "train_folds"]


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


def train_folds(
    problem: CVProblem,
    *,
    callbacks: Sequence[EpochCallback],
    progress: bool,
    keep_models: bool,
) -> CVResult:
    """Train one MLP per split, all in lockstep (a :class:`~urbansound.training.problem.Trainer`).

    Chooses the device (``train.device``) and the groups (``train.threads`` of them on the CPU,
    one stack each: one in this process, the others in child processes on Linux), clips a batch
    size larger than every training part to the largest part (one log line: a batch cannot hold
    more clips than there are, and the buffers grow with it), restores torch's thread count
    afterwards, and returns the :class:`CVResult` (see
    :func:`urbansound.training.cross_validation.cross_validate`); with ``keep_models`` its
    ``models`` hold every split's :class:`FittedMLP`.
    """
    train = problem.train
    largest = max(len(s.train) for s in problem.splits)
    if train.batch_size > largest:
        logger.warning(
            "train.batch_size=%d is larger than the largest training part (%d clips): "
            "clipped to %d (every fold trains on one full batch per epoch)",
            train.batch_size,
            largest,
            largest,
        )
        problem = replace(problem, train=replace(train, batch_size=largest))
    device = resolve_device(train.device)
    old_threads = torch.get_num_threads()
    threads = train.threads if train.threads is not None else old_threads
    # On the CPU the folds are dealt to `threads` lockstep groups (one here, the others in child
    # processes), each running single-threaded torch ops: one synchronisation per epoch instead
    # of one per op (an OpenMP team per op collapses when the cores are shared with other
    # processes: a single split trained with 2 intra-op threads on a busy 2-core machine ran
    # 5-10 epochs/s against 60-70 with one). A single split (a final fit, cv.folds=[k]) also
    # runs single-threaded ops.
    workers = 1 if device.type != "cpu" else max(1, min(threads, len(problem.splits)))
    torch.set_num_threads(1 if device.type == "cpu" else threads)
    try:
        history, probabilities, fitted = _train_groups(
            problem,
            _deal(problem, workers),
            device=device,
            callbacks=callbacks,
            progress=progress,
            keep_models=keep_models,
        )
    finally:
        torch.set_num_threads(old_threads)
    return problem.result(probabilities, history=history, models=fitted)


def _deal(problem: CVProblem, workers: int) -> list[list[int]]:
    """The splits of each group (indices, ascending): dealt by decreasing batch count, so every
    group has about the same number of steps per epoch."""
    bs = problem.train.batch_size
    steps = np.array([-(-len(s.train) // bs) for s in problem.splits])
    ranked = np.argsort(-steps, kind="stable")
    members = [sorted(ranked[w::workers].tolist()) for w in range(workers)]
    return [m for m in members if m]


def _train_groups(
    problem: CVProblem,
    members: list[list[int]],
    *,
    device: torch.device,
    callbacks: Sequence[EpochCallback],
    progress: bool,
    keep_models: bool,
) -> tuple[list[EpochMetrics], list[np.ndarray], list[FittedMLP]]:
    """Train the groups ``members`` epoch by epoch; the history, every split's test
    probabilities ``(n_test, n_classes)`` and (``keep_models``) fitted models, in split order."""
    splits, train, model = problem.splits, problem.train, problem.model

    def builder(m: list[int]) -> Callable[[], LockstepGroup]:
        return functools.partial(
            LockstepGroup,
            problem.X,
            problem.y,
            [splits[i] for i in m],
            n_classes=problem.n_classes,
            model=model,
            train=train,
            device=device,
        )

    in_children = device.type == "cpu" and len(members) > 1 and children_available()
    children: list[ChildGroup] = []
    pool: ThreadPoolExecutor | None = None
    try:
        if in_children:  # the children build their groups while this one builds its own
            for m in members[1:]:
                children.append(ChildGroup(builder(m), preload=(LockstepGroup.__module__,)))
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
            "-".join(map(str, layer_sizes(problem.X.shape[1], model.hidden, problem.n_classes))),
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
        bar = progress_bar(
            range(train.epochs), desc="train", unit="epoch", mode=None if progress else "none"
        )
        for epoch in bar:
            row = np.empty((3, len(splits)))
            rows = each("run_epoch", last=epoch + 1 == train.epochs)
            for m, r in zip(members, rows, strict=True):
                row[:, m] = r
            metrics = EpochMetrics(
                epoch=epoch + 1,
                folds=[s.fold for s in splits],
                train_loss=row[0],
                test_loss=row[1],
                test_accuracy=row[2],
            )
            history.append(metrics)
            bar.set_postfix(acc=f"{metrics.mean_test_accuracy:.4f}", refresh=False)
            for cb in callbacks:
                cb(metrics)
        bar.close()
        probs = _in_split_order(members, each("probabilities"))
        fitted = _in_split_order(members, each("fitted_models")) if keep_models else []
    finally:
        if pool is not None:
            pool.shutdown()
        close_children(children)
    return history, [p[: len(s.test)] for s, p in zip(splits, probs, strict=True)], fitted


def _in_split_order(members: list[list[int]], per_group: list[Sequence[Any]]) -> list[Any]:
    """Every group's per-split values (in its members' order) as one list in split order."""
    out: dict[int, Any] = {}
    for m, values in zip(members, per_group, strict=True):
        out.update(zip(m, values, strict=True))
    return [out[i] for i in range(len(out))]
