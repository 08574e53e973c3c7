"""Cross-validated training speed against the usual per-fold loop, measured in the same process.

Usage::

    python benchmarks/train.py [--data synthetic|demo|ROOT] [--epochs 100] [--plain-epochs 3]
                               [--threads N] [--seed 0]

One trial is the seed configuration: 10 folds x ``--epochs`` epochs at batch 32, the
40-256-256-10 MLP with dropout 0.5, every fold evaluated on its test part after every epoch.
By default it runs on synthetic UrbanSound8K-sized data: 8 732 clips x 40 features in the
dataset's own fold sizes (873 ... 990 clips), ten classes with fold-specific shifts, so the
accuracy is far from 0 and 1. ``--data demo`` or an UrbanSound8K folder uses real mean-MFCC
features (extracted and cached with :mod:`urbansound.features.extraction`).

It prints:

- our trainer (:func:`urbansound.training.cross_validation.cross_validate`) on the full trial:
  seconds, mean CV accuracy;
- the usual way, one fold after another (a ``DataLoader`` with ``shuffle=True``, ``nn.Sequential``
  with Keras initialisation, ``torch.optim.Adam(eps=1e-7)``, autograd, evaluation after every
  epoch), for ``--plain-epochs`` epochs of every fold, scaled to the full trial; at 1 thread and
  at ``--threads`` threads (or ``--plain-threads``), the faster one counting;
- their ratio, and the mean CV accuracy of both after ``--plain-epochs`` epochs (the same number
  of epochs; ``--plain-epochs`` equal to ``--epochs`` compares full trials);
- the GFLOP/s our trainer achieves (the products of the forward and backward passes and the
  evaluations it needs) against the same-shape products alone: one training step's batched
  products (forward, kernel and input gradients, every layer, the models of one group) timed in
  a loop in as many processes as the trainer has groups, measured in this run; and against
  the seed's single reference shape, (10, 32, 256) x (10, 256, 256), on the same threads. The
  gap to the first is what a step does besides its products: Adam (about a quarter of a step
  on the CPU, bound by memory and by its square root and division), activations, dropout and
  the loss.

Timings on a shared machine are noisy: compare the ratios taken in one run, and read the load
average printed with them.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from urbansound.config.settings import ModelSettings, TrainSettings
from urbansound.data.cv import Split, fold_splits
from urbansound.training.cross_validation import cross_validate
from urbansound.training.mlp import layer_sizes
from urbansound.training.problem import CVProblem
from urbansound.training.seeds import fold_init_params

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' autograd oracle
from tests.helpers.oracle import MLP

US8K_FOLD_SIZES = (873, 888, 925, 990, 936, 823, 838, 806, 816, 837)


def synthetic(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8 732 x 40 features in UrbanSound8K's fold sizes: class means plus fold shifts."""
    rng = np.random.default_rng(seed)
    folds = np.repeat(np.arange(1, 11), US8K_FOLD_SIZES)
    y = rng.integers(0, 10, len(folds))
    scale = np.linspace(30, 1, 40)  # MFCC-like: large low coefficients, small high ones
    centers = rng.normal(size=(10, 40)) * scale * 0.35
    shift = rng.normal(size=(11, 40)) * scale * 0.15  # recordings differ between folds
    X = centers[y] + shift[folds] + rng.normal(size=(len(y), 40)) * scale
    return X.astype(np.float32), y, folds


def real(data: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean-MFCC features (the seed configuration) of the demo corpus or an UrbanSound8K copy."""
    from urbansound.config.settings import DataSettings, FeatureSettings
    from urbansound.data.index import load_index
    from urbansound.data.source import resolve_dataset
    from urbansound.features.extraction import extract_features

    if data == "demo":
        root, name = resolve_dataset(DataSettings())
    else:
        root, name = Path(data), "urbansound8k"
    index = load_index(root, missing="skip", name=name)
    feats = extract_features(list(index.clips["path"]), FeatureSettings(), progress=True)
    clips = index.clips[feats.ok]
    return feats.X, clips["classID"].to_numpy(), clips["fold"].to_numpy()


def _standardize(X: np.ndarray, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    tr = X[split.train].astype(np.float64)
    mean, std = tr.mean(0), tr.std(0)
    std[std == 0] = 1.0
    return (
        torch.tensor((tr - mean) / std, dtype=torch.float32),
        torch.tensor((X[split.test] - mean) / std, dtype=torch.float32),
    )


def plain_fold(
    X: np.ndarray, y: np.ndarray, split: Split, *, epochs: int, n_classes: int, seed: int
) -> tuple[float, float]:
    """One fold trained the usual way; returns (seconds, final test accuracy)."""
    from torch.utils.data import DataLoader, TensorDataset

    xtr, xte = _standardize(X, split)
    ytr, yte = torch.from_numpy(y[split.train]), torch.from_numpy(y[split.test])
    torch.manual_seed(seed)
    net = MLP(X.shape[1], n_classes)
    sizes = layer_sizes(X.shape[1], (256, 256), n_classes)
    net.load_keras_params(fold_init_params(sizes, seed=seed, fold=split.fold))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(TensorDataset(xtr, ytr), batch_size=32, shuffle=True)
    acc = float("nan")
    t0 = time.perf_counter()
    for _ in range(epochs):
        net.train()
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():  # Keras' fit(validation_data=...) evaluates every epoch
            logits = net(xte)
            loss_fn(logits, yte)
            acc = (logits.argmax(1) == yte).float().mean().item()
    return time.perf_counter() - t0, acc


def plain(
    X: np.ndarray,
    y: np.ndarray,
    splits: list[Split],
    *,
    epochs: int,
    threads: int,
    n_classes: int,
    seed: int,
) -> tuple[float, float]:
    """Every fold the usual way at ``threads`` torch threads: (seconds, mean accuracy)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        runs = [plain_fold(X, y, s, epochs=epochs, n_classes=n_classes, seed=seed) for s in splits]
    finally:
        torch.set_num_threads(old)
    return sum(r[0] for r in runs), float(np.mean([r[1] for r in runs]))


def trial_flops(splits: list[Split], sizes: list[int], epochs: int) -> float:
    """Floating-point operations of the products one trial needs (multiply-add = 2)."""
    macs = sum(a * b for a, b in itertools.pairwise(sizes))
    first = sizes[0] * sizes[1]  # the input layer needs no gradient w.r.t. its input
    train_rows = sum(len(s.train) for s in splits)
    test_rows = sum(len(s.test) for s in splits)
    per_train_row = 2 * macs + 2 * macs + 2 * (macs - first)  # forward, dW, dX
    return float(epochs * (train_rows * per_train_row + test_rows * 2 * macs))


def step_products(k: int, batch: int, sizes: list[int]) -> list[tuple[torch.Tensor, ...]]:
    """Operands and outputs of the batched products one training step of ``k`` stacked models
    runs (forward, kernel gradient, input gradient below the first layer), contiguous."""
    out = []
    for i, (fi, fo) in enumerate(itertools.pairwise(sizes)):
        shapes = [((k, batch, fi), (k, fi, fo)), ((k, fi, batch), (k, batch, fo))]
        if i > 0:
            shapes.append(((k, batch, fo), (k, fo, fi)))
        for a, b in shapes:
            out.append((torch.randn(a), torch.randn(b), torch.empty(a[0], a[1], b[2])))
    return out


def _products_worker(k: int, batch: int, sizes: list[int], seconds: float, conn) -> None:
    torch.set_num_threads(1)  # as the trainer's groups
    ops = step_products(k, batch, sizes)
    flops = sum(2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2] for a, b, _ in ops)
    for a, b, c in ops:
        torch.bmm(a, b, out=c)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for a, b, c in ops:
            torch.bmm(a, b, out=c)
        done += 1
    conn.send(done * flops / (time.perf_counter() - t0))


def step_products_gflops(
    workers: int, k: int, batch: int, sizes: list[int], seconds: float = 2.0
) -> float:
    """GFLOP/s of one step's products alone (:func:`step_products`), in ``workers`` processes
    at once, each with single-threaded ops: what the trainer's groups would reach if a step
    were nothing but its products (no Adam, activations, dropout, loss or evaluation)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    pipes = [ctx.Pipe() for _ in range(workers)]
    procs = [
        ctx.Process(target=_products_worker, args=(k, batch, sizes, seconds, child))
        for _, child in pipes
    ]
    for p in procs:
        p.start()
    rates = [parent.recv() for parent, _ in pipes]
    for p in procs:
        p.join()
    return sum(rates) / 1e9


def bmm_gflops(workers: int, seconds: float = 1.0) -> float:
    """GFLOP/s of (10, 32, 256) x (10, 256, 256) products, ``workers`` threads at once."""
    a, b = torch.randn(10, 32, 256), torch.randn(10, 256, 256)
    flops = 10 * 32 * 256 * 256 * 2
    counts = [0] * workers
    stop = time.perf_counter() + seconds

    def work(i: int) -> None:
        torch.bmm(a, b)
        while time.perf_counter() < stop:
            for _ in range(10):
                torch.bmm(a, b)
            counts[i] += 10

    t0 = time.perf_counter()
    pool = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts) * flops / (time.perf_counter() - t0) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="synthetic", help="synthetic | demo | UrbanSound8K root")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--plain-epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--plain-threads",
        type=int,
        nargs="*",
        help="thread counts for the plain loop (default: 1 and --threads; the faster counts)",
    )
    args = parser.parse_args()

    X, y, folds = synthetic(args.seed) if args.data == "synthetic" else real(args.data)
    splits = fold_splits(folds)
    n_classes = 10
    model = ModelSettings()
    train = TrainSettings(epochs=args.epochs, threads=args.threads, seed=args.seed)
    workers = max(1, min(args.threads, len(splits)))
    print(
        f"data: {args.data}, {len(y)} clips x {X.shape[1]} features, {len(splits)} folds; "
        f"{args.threads} threads; load average {os.getloadavg()[0]:.1f}"
    )

    sizes = layer_sizes(X.shape[1], model.hidden, n_classes)
    per_group = -(-len(splits) // workers)
    products = step_products_gflops(workers, per_group, train.batch_size, sizes)
    ref_before = bmm_gflops(workers)
    t0 = time.perf_counter()
    ours = cross_validate(
        CVProblem(X, y, splits, n_classes=n_classes, model=model, train=train), progress=True
    )
    ours_s = time.perf_counter() - t0
    ref_after = bmm_gflops(workers)
    ref = max(ref_before, ref_after)
    products = max(products, step_products_gflops(workers, per_group, train.batch_size, sizes))
    flops = trial_flops(splits, sizes, args.epochs)
    print(
        f"ours:  {ours_s:7.1f} s per trial ({args.epochs} epochs), "
        f"mean CV accuracy {ours.mean_accuracy:.4f}"
    )

    pe = args.plain_epochs
    timings = {}
    for th in sorted(set(args.plain_threads or (1, args.threads))):
        sec, acc = plain(X, y, splits, epochs=pe, threads=th, n_classes=n_classes, seed=args.seed)
        timings[th] = (sec, acc)
        print(
            f"plain: {sec * args.epochs / pe:7.1f} s per trial at {th} thread(s) "
            f"(measured {sec:.1f} s for {pe} epochs), mean CV accuracy {acc:.4f}"
        )
    best_th = min(timings, key=lambda t: timings[t][0])
    plain_s = timings[best_th][0] * args.epochs / pe
    ours_at = ours.history[min(pe, args.epochs) - 1].mean_test_accuracy
    print(f"ratio: {plain_s / ours_s:.1f}x faster than the plain loop at {best_th} thread(s)")
    print(
        f"accuracy after {pe} epochs: ours {ours_at:.4f}, plain {timings[best_th][1]:.4f} "
        f"(difference {100 * (ours_at - timings[best_th][1]):+.2f} points)"
    )
    speed = flops / ours_s / 1e9
    print(
        f"speed: {speed:.1f} GFLOP/s ({flops / 1e12:.2f} TFLOP per trial) = "
        f"{speed / products:.0%} of the same-shape products alone ({products:.1f} GFLOP/s: one "
        f"step's forward and backward bmm of {per_group} models at batch {train.batch_size}, "
        f"{'-'.join(map(str, sizes))}, in {workers} process(es)); "
        f"{speed / ref:.0%} of bmm (10,32,256)x(10,256,256) ({ref:.1f} GFLOP/s on {workers} "
        f"thread(s)); load average {os.getloadavg()[0]:.1f}"
    )
    print(f"settings: {dataclasses.asdict(train)}")


if __name__ == "__main__":
    main()
