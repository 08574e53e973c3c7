"""A group of folds trained together as one stacked model: the training step and evaluation.

:class:`LockstepGroup` holds its folds' data, weights (:class:`~urbansound.training.mlp.
StackedMLP`), Adam state (:class:`~urbansound.training.mlp.StackedAdam`) and random streams
(:class:`~urbansound.training.seeds.FoldRandom`), and trains them one epoch per
:meth:`~LockstepGroup.run_epoch`: step ``s`` runs batch ``s`` of every fold through batched
matrix products with a written-out backward pass (no autograd). Folds with fewer batches sit out
the last steps of an epoch. :mod:`urbansound.training.lockstep` deals the folds to groups and
drives them, in this process or in child processes (:mod:`urbansound.training.child_groups`).

The losses it reports are :func:`urbansound.training.metrics.cross_entropy` computed on the
device (:func:`clipped_nll`).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from urbansound.config.settings import ModelSettings, TrainSettings
from urbansound.data.cv import Split
from urbansound.training.metrics import LOSS_EPS
from urbansound.training.mlp import StackedAdam, StackedMLP, layer_sizes
from urbansound.training.results import FittedMLP
from urbansound.training.seeds import FoldRandom, fold_init_params, fold_seeds

__all__ = ["LockstepGroup", "clipped_nll"]

#: The largest loss of one row: ``-log(LOSS_EPS)`` = 16.118 nats.
_MAX_NLL = -math.log(LOSS_EPS)


def clipped_nll(log_p_true: torch.Tensor) -> torch.Tensor:
    """Each row's loss from the log-probability of its true class, as
    :func:`~urbansound.training.metrics.cross_entropy` defines it: ``-log(max(p, LOSS_EPS))``,
    written ``min(-log p, -log LOSS_EPS)`` so that it takes the log-softmax (no ``log(0)``).

    Same shape as ``log_p_true``; in nats. A new tensor (the input is untouched).
    """
    return torch.neg(log_p_true).clamp_(max=_MAX_NLL)


def _standardizer(X: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (ddof=0) of ``X[rows]``; a constant feature gets std 1 (as scikit-learn)."""
    part = X[rows].astype(np.float64)
    mean = part.mean(axis=0)
    std = part.std(axis=0)
    std[std < 10 * np.finfo(np.float64).eps] = 1.0
    return mean, std


class LockstepGroup:
    """A group of folds trained together as one stacked model, in this process or a child's.

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

    def evaluate(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every model's test loss ``(n,)``, test accuracy ``(n,)`` and log-probabilities
        ``(n, max test size, n_classes)``, in stack order, on the device."""
        with torch.inference_mode():
            logits = self.net.forward(self.X_test)
            logp = torch.log_softmax(logits, dim=-1)
            nll = clipped_nll(logp.gather(-1, self.y_test).squeeze(-1))
            loss = (nll * self.valid_test).sum(-1) / self.n_test_t
            hit = (logits.argmax(-1) == self.y_test.squeeze(-1)) * self.valid_test
            return loss, hit.sum(-1) / self.n_test_t, logp

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
            nll = clipped_nll(torch.log_softmax(self.logits, dim=-2).gather(-2, self.y_buf))
            train_loss = (nll * self.valid).sum(dim=(0, 2, 3)) / self.n_train_t
            test_loss, test_acc, _ = self.evaluate()
            # Draw the next epoch on the host while an accelerator finishes this one.
            self.pending = None if last else self.draw_epoch()
            row = torch.stack([train_loss, test_loss, test_acc]).cpu().numpy()
        return row[:, self.inverse]

    def probabilities(self) -> np.ndarray:
        """Every model's class probabilities of its test part, ``(n, max test size, n_classes)``
        float32 in split order (rows past a model's test size are padding)."""
        _, _, logp = self.evaluate()
        return logp.exp().cpu().numpy()[self.inverse]

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
