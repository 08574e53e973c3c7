"""Cross-validated training: splits, Keras Adam, lockstep equivalence, determinism, metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.model_selection import train_test_split

from tests.helpers.oracle import MLP
from tests.training.common import N_CLASSES, SMALL, blobs, cv, quick_train
from urbansound.config.settings import ModelSettings, TrainSettings
from urbansound.data.cv import Split, fold_splits, random_split
from urbansound.errors import ConfigError, DataError, TrialPruned
from urbansound.training.lockstep import resolve_device
from urbansound.training.lockstep_group import LockstepGroup
from urbansound.training.metrics import LOSS_EPS, cross_entropy
from urbansound.training.mlp import StackedAdam, StackedMLP, init_params, layer_sizes
from urbansound.training.results import CVResult, EpochMetrics
from urbansound.training.seeds import FoldRandom, fold_init_params, fold_seeds, unpack_keep

# --------------------------------------------------------------------------------------------
# Splits


def test_fold_splits_hold_out_each_fold() -> None:
    folds = np.array([1, 2, 3, 1, 2, 3, 3, 5])
    splits = fold_splits(folds)
    assert [s.fold for s in splits] == [1, 2, 3, 5]
    for s in splits:
        assert np.array_equal(s.test, np.flatnonzero(folds == s.fold))
        assert np.array_equal(s.train, np.flatnonzero(folds != s.fold))
    assert [s.fold for s in fold_splits(folds, test_folds=[3])] == [3]
    assert len(fold_splits(folds, test_folds=[3])[0].train) == 5


def test_fold_splits_errors_name_the_problem() -> None:
    with pytest.raises(DataError, match=r"fold\(s\) \[4\]"):
        fold_splits(np.array([1, 2, 3]), test_folds=[4])
    with pytest.raises(DataError, match="at least 2 folds"):
        fold_splits(np.array([1, 1, 1]))


def test_random_split_is_sklearns_train_test_split() -> None:
    y = np.repeat(np.arange(5), 20)
    (s,) = random_split(100, test_size=0.2, seed=42, stratify=y)
    tr, te = train_test_split(np.arange(100), test_size=0.2, random_state=42, stratify=y)
    assert s.fold == "random"
    assert np.array_equal(s.train, np.sort(tr)) and np.array_equal(s.test, np.sort(te))
    assert np.bincount(y[s.test]).tolist() == [4] * 5
    (u,) = random_split(100, test_size=0.2, seed=42)
    assert len(u.test) == 20 and len(np.intersect1d(u.train, u.test)) == 0


# --------------------------------------------------------------------------------------------
# Adam


def _keras_adam(p, g, m, v, t, *, lr=1e-3, b1=0.9, b2=0.999, eps=1e-7, wd=0.0):
    """keras.optimizers.Adam.update_step (Keras 3), in float64."""
    p = p - p * wd * lr
    m = m + (g - m) * (1 - b1)
    v = v + (g * g - v) * (1 - b2)
    alpha = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
    return p - alpha * m / (np.sqrt(v) + eps), m, v


@pytest.mark.parametrize("fused", [True, False])
def test_stacked_adam_is_keras_adam_with_per_model_steps(fused: bool) -> None:
    sizes = [3, 4, 2]
    params = [init_params(sizes, generator=torch.Generator().manual_seed(j)) for j in range(3)]
    net = StackedMLP(params, dropout=0.0)
    opt = StackedAdam(net, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-7, weight_decay=0.1, fused=fused)
    assert opt.fused is fused
    ref = {
        (j, i): (net.parameters()[i][j].double().numpy().copy(), 0.0, 0.0)
        for j in range(3)
        for i in range(4)
    }
    t = np.zeros(3, dtype=int)
    rng = np.random.default_rng(0)
    # Model 2 sits out some steps, models 1 and 2 others: each keeps its own step count.
    for k in [3, 3, 2, 3, 1, 1, 3]:
        grads = [rng.normal(size=g.shape).astype(np.float32) for g in net.gradients()]
        for g, new in zip(net.gradients(), grads, strict=True):
            g.copy_(torch.from_numpy(new))
        before = [p.clone() for p in net.parameters()]
        opt.step(k)
        t[:k] += 1
        for j in range(3):
            for i, p in enumerate(net.parameters()):
                if j >= k:
                    assert torch.equal(p[j], before[i][j])  # skipped exactly
                    continue
                w, m, v = ref[(j, i)]
                ref[(j, i)] = _keras_adam(
                    w, grads[i][j].astype(np.float64), m, v, t[j], lr=1e-2, wd=0.1
                )
                np.testing.assert_allclose(p[j].numpy(), ref[(j, i)][0], rtol=1e-5, atol=1e-6)
    assert opt.t == t.tolist()


# --------------------------------------------------------------------------------------------
# Training


def test_cross_validate_metrics_are_consistent() -> None:
    X, y, folds = blobs()
    splits = fold_splits(folds)
    seen: list[EpochMetrics] = []
    res = cv(
        X,
        y,
        splits,
        n_classes=N_CLASSES + 1,
        model=SMALL,
        train=quick_train(epochs=4),
        callbacks=[seen.append],
        progress=False,
    )
    assert isinstance(res, CVResult)
    assert [h.epoch for h in res.history] == [1, 2, 3, 4] and seen == res.history
    assert [f.fold for f in res.folds] == [1, 2, 3, 4]
    last = res.history[-1]
    for i, (f, s) in enumerate(zip(res.folds, splits, strict=True)):
        conf = np.array(f.confusion)
        assert conf.shape == (5, 5) and conf.sum() == len(s.test) == f.n_test
        assert f.n_train == len(s.train)
        assert f.accuracy == pytest.approx(np.trace(conf) / conf.sum())
        assert f.accuracy == pytest.approx(last.test_accuracy[i], abs=1e-6)
        assert f.loss == pytest.approx(last.test_loss[i], rel=1e-5)
        assert f.per_class_accuracy[4] is None  # class 4 never occurs
        assert conf[4].sum() == 0
        for c in range(N_CLASSES):
            assert f.per_class_accuracy[c] == pytest.approx(conf[c, c] / conf[c].sum())
    accs = [f.accuracy for f in res.folds]
    assert res.mean_accuracy == pytest.approx(np.mean(accs))
    assert res.std_accuracy == pytest.approx(np.std(accs))
    assert res.mean_accuracy > 0.6  # it learns (chance is 0.25)
    assert res.history[-1].mean_train_loss < res.history[0].mean_train_loss
    d = json.loads(json.dumps(res.to_dict()))
    assert d["history"][1]["mean_test_accuracy"] == pytest.approx(res.history[1].mean_test_accuracy)
    assert d["folds"][0]["confusion"] == res.folds[0].confusion


def test_epoch_losses_are_the_one_loss_clipped_at_loss_eps() -> None:
    # Unstandardised large features make confident mistakes: true-class probabilities far below
    # 1e-7, where an unclipped loss would count each row for far more than -log(1e-7).
    X, y, folds = blobs(seed=21)
    splits = fold_splits(folds)
    train = quick_train(epochs=2, standardize=False, lr=0.05)
    res = cv(X * 50.0, y, splits, n_classes=N_CLASSES, model=SMALL, train=train, progress=False)
    p_true = np.concatenate(
        [p.probabilities[np.arange(len(p.test_index)), y[p.test_index]] for p in res.predictions]
    )
    assert (p_true < LOSS_EPS).any()  # the clip matters here
    last = res.history[-1]
    for i, (fold, pred) in enumerate(zip(res.folds, res.predictions, strict=True)):
        one_loss = cross_entropy(pred.probabilities, y[pred.test_index])
        assert fold.loss == one_loss  # the fold's result is built from its probabilities
        assert last.test_loss[i] == pytest.approx(one_loss, rel=1e-5)  # on the device, float32
    # (the training loss: test_lockstep_equals_a_keras_style_loop_per_fold[False] clips there)


def test_same_seed_same_metrics_other_seed_other_metrics() -> None:
    X, y, folds = blobs(seed=1)
    splits = fold_splits(folds)
    kw = {"n_classes": N_CLASSES, "model": SMALL, "progress": False}
    a = cv(X, y, splits, train=quick_train(), **kw).to_dict()
    b = cv(X, y, splits, train=quick_train(), **kw).to_dict()
    assert a == b
    c = cv(X, y, splits, train=quick_train(seed=6), **kw).to_dict()
    assert c["history"][0]["train_loss"] != a["history"][0]["train_loss"]


def test_a_fold_trains_the_same_alone_or_in_lockstep() -> None:
    # Folds of different sizes: fold 1 has the fewest training batches, so it sits out the last
    # steps of every epoch beside the others.
    X, y, folds = blobs(n=260, seed=2)
    splits = fold_splits(folds)
    steps = [math.ceil(len(s.train) / 16) for s in splits]
    assert len(set(steps)) > 1
    kw = {"n_classes": N_CLASSES, "model": SMALL, "train": quick_train(), "progress": False}
    together = cv(X, y, splits, **kw)
    for i, s in enumerate(splits):
        alone = cv(X, y, [s], **kw)
        for h_all, h_one in zip(together.history, alone.history, strict=True):
            assert h_one.train_loss[0] == pytest.approx(h_all.train_loss[i], rel=1e-5)
            assert h_one.test_loss[0] == pytest.approx(h_all.test_loss[i], rel=1e-5)
        assert alone.folds[0].confusion == together.folds[i].confusion


def _one_loss(logits: torch.Tensor, y: torch.Tensor) -> float:
    """The loss the trainer reports (the one loss, clipped at 1e-7), from float32 logits; the
    gradient is that of the unclipped cross-entropy, as Keras' with a softmax output layer."""
    return cross_entropy(torch.softmax(logits.detach(), dim=1).numpy(), y.numpy())


def _keras_loop(X, y, split, *, model: ModelSettings, train: TrainSettings, n_classes: int):
    """One fold trained the way Keras does, step by step with autograd, from the same streams.

    Returns the per-epoch (train loss, test loss, test accuracy) and the final weights.
    """
    Xtr, Xte = X[split.train].astype(np.float64), X[split.test].astype(np.float64)
    if train.standardize:
        mu, sd = Xtr.mean(0), Xtr.std(0)
        Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
    xtr, xte = torch.tensor(Xtr, dtype=torch.float32), torch.tensor(Xte, dtype=torch.float32)
    ytr, yte = torch.from_numpy(y[split.train]), torch.from_numpy(y[split.test])
    sizes = layer_sizes(X.shape[1], model.hidden, n_classes)
    params = [
        t.clone().requires_grad_()
        for pair in fold_init_params(sizes, seed=train.seed, fold=split.fold)
        for t in pair
    ]
    state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    streams = FoldRandom(fold_seeds(train.seed, split.fold))
    bs, n = train.batch_size, len(split.train)
    steps = math.ceil(n / bs)
    offs = np.cumsum([0, *model.hidden])
    t = 0
    history = []

    def forward(x, masks=None):
        h = x
        for i in range(len(sizes) - 1):
            h = h @ params[2 * i] + params[2 * i + 1]
            if i < len(sizes) - 2:
                h = torch.relu(h)
                if masks is not None:
                    h = h * masks[..., offs[i] : offs[i + 1]] / (1 - model.dropout)
        return h

    for _ in range(train.epochs):
        perm = streams.permutation(n)
        bits = streams.keep_bits(steps, bs, int(offs[-1]), model.dropout)
        masks = torch.from_numpy(unpack_keep(bits, bs, int(offs[-1])))
        total = 0.0
        for s in range(steps):
            rows = torch.from_numpy(perm[s * bs : (s + 1) * bs])  # the last batch is smaller
            logits = forward(xtr[rows], masks[s, : len(rows)])
            loss = torch.nn.functional.cross_entropy(logits, ytr[rows])
            total += _one_loss(logits, ytr[rows]) * len(rows)
            for p in params:
                p.grad = None
            loss.backward()
            t += 1
            with torch.no_grad():
                for p, (m, v) in zip(params, state, strict=True):
                    m += (p.grad - m) * (1 - train.beta1)
                    v += (p.grad**2 - v) * (1 - train.beta2)
                    alpha = train.lr * math.sqrt(1 - train.beta2**t) / (1 - train.beta1**t)
                    p -= alpha * m / (v.sqrt() + train.eps)
        with torch.no_grad():
            logits = forward(xte)
            history.append(
                (
                    total / n,
                    _one_loss(logits, yte),
                    (logits.argmax(1) == yte).float().mean().item(),
                )
            )
    return history, [p.detach() for p in params]


@pytest.mark.parametrize("standardize", [True, False])
def test_lockstep_equals_a_keras_style_loop_per_fold(standardize: bool) -> None:
    X, y, folds = blobs(n=200, seed=3)
    splits = fold_splits(folds)
    train = quick_train(epochs=2, batch_size=12, standardize=standardize)
    res = cv(X, y, splits, n_classes=N_CLASSES, model=SMALL, train=train, progress=False)
    for i, s in enumerate(splits):
        hist, _ = _keras_loop(X, y, s, model=SMALL, train=train, n_classes=N_CLASSES)
        for e, (tr_loss, te_loss, acc) in enumerate(hist):
            assert res.history[e].train_loss[i] == pytest.approx(tr_loss, rel=2e-4)
            assert res.history[e].test_loss[i] == pytest.approx(te_loss, rel=2e-4)
            assert res.history[e].test_accuracy[i] == pytest.approx(acc, abs=1.5 / len(s.test))


def test_zero_epochs_evaluates_the_initial_weights() -> None:
    X, y, folds = blobs(seed=4)
    splits = fold_splits(folds)
    train = quick_train(epochs=0)
    res = cv(X, y, splits, n_classes=N_CLASSES, model=SMALL, train=train, progress=False)
    assert res.history == []
    for f, s in zip(res.folds, splits, strict=True):
        sizes = layer_sizes(X.shape[1], SMALL.hidden, N_CLASSES)
        net = MLP(X.shape[1], N_CLASSES, hidden=SMALL.hidden, dropout=SMALL.dropout)
        net.load_keras_params(fold_init_params(sizes, seed=train.seed, fold=s.fold))
        net.eval()
        xtr, xte = X[s.train].astype(np.float64), X[s.test].astype(np.float64)
        xte = torch.tensor((xte - xtr.mean(0)) / xtr.std(0), dtype=torch.float32)
        logits = net(xte)
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y[s.test])).item()
        assert f.loss == pytest.approx(loss, rel=1e-5)


def test_standardisation_uses_only_the_training_part() -> None:
    X, y, folds = blobs(seed=5)
    splits = fold_splits(folds)
    kw = {"n_classes": N_CLASSES, "model": SMALL, "train": quick_train(epochs=2), "progress": False}
    base = cv(X, y, splits, **kw)
    # Rescaling the test part of fold 1 changes nothing about how fold 1 trains.
    X2 = X.copy()
    X2[splits[0].test] = X2[splits[0].test] * 100.0 - 7.0
    moved = cv(X2, y, splits, **kw)
    np.testing.assert_array_equal(
        [h.train_loss[0] for h in moved.history], [h.train_loss[0] for h in base.history]
    )
    # Per-feature affine changes of all features are undone by the standardisation.
    X3 = X * np.linspace(0.5, 3, X.shape[1]).astype(np.float32) + 4.0
    shifted = cv(X3, y, splits, **kw)
    np.testing.assert_allclose(
        [h.train_loss for h in shifted.history], [h.train_loss for h in base.history], rtol=1e-3
    )


def test_pruning_callback_stops_training() -> None:
    X, y, folds = blobs(seed=6)
    calls: list[int] = []

    def prune_at_2(m: EpochMetrics) -> None:
        calls.append(m.epoch)
        if m.epoch == 2:
            raise TrialPruned(m.epoch, m.mean_test_accuracy)

    with pytest.raises(TrialPruned) as info:
        cv(
            X,
            y,
            fold_splits(folds),
            n_classes=N_CLASSES,
            model=SMALL,
            train=quick_train(epochs=5),
            callbacks=[prune_at_2],
            progress=False,
        )
    assert calls == [1, 2] and info.value.epoch == 2


def test_bad_inputs_raise_data_errors() -> None:
    X, y, folds = blobs(seed=7)
    kw = {"n_classes": N_CLASSES, "model": SMALL, "train": quick_train(epochs=1), "progress": False}
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        cv(bad, y, fold_splits(folds), **kw)
    with pytest.raises(DataError, match=r"labels must lie in 0\.\.3"):
        cv(X, y + 1, fold_splits(folds), **kw)
    empty = Split(fold=9, train=np.arange(10), test=np.array([], dtype=int))
    with pytest.raises(DataError, match="fold 9"):
        cv(X, y, [empty], **kw)


def test_threads_setting_is_applied_and_restored() -> None:
    X, y, folds = blobs(n=80, seed=8)
    before = torch.get_num_threads()
    seen = []
    cv(
        X,
        y,
        fold_splits(folds),
        n_classes=N_CLASSES,
        model=SMALL,
        train=quick_train(epochs=1, threads=1),
        callbacks=[lambda m: seen.append(torch.get_num_threads())],
        progress=False,
    )
    assert seen == [1]
    assert torch.get_num_threads() == before


def test_random_split_trains_one_model() -> None:
    X, y, _ = blobs(seed=9)
    splits = random_split(len(y), test_size=0.25, seed=0, stratify=y)
    res = cv(
        X, y, splits, n_classes=N_CLASSES, model=SMALL, train=quick_train(epochs=2), progress=False
    )
    assert [f.fold for f in res.folds] == ["random"] and res.std_accuracy == 0.0
    assert res.history[-1].folds == ["random"]


def test_each_epoch_visits_every_training_clip_once() -> None:
    X, y, folds = blobs(n=230, seed=10)
    splits = fold_splits(folds)
    group = LockstepGroup(
        X,
        y,
        splits,
        n_classes=N_CLASSES,
        model=SMALL,
        train=quick_train(batch_size=16),
        device=torch.device("cpu"),
    )
    weight = group.weight.squeeze(2).numpy()  # (steps, models, batch): > 0 for real rows
    assert group.active == sorted(group.active, reverse=True) and group.active[0] == len(splits)
    for _ in range(2):
        idx, _bits = group.draw_epoch()
        for j, i in enumerate(np.argsort(group.inverse)):
            s = splits[i]
            rows = idx[:, j][weight[:, j] > 0]  # rows of model j's own copy of X
            assert len(rows) == len(s.train)
            assert np.array_equal(np.sort(rows % len(y)), s.train)
            steps_j = math.ceil(len(s.train) / 16)
            assert (weight[:steps_j, j, 0] > 0).all() and (weight[steps_j:, j] == 0).all()
            last = len(s.train) - 16 * (steps_j - 1)
            assert weight[steps_j - 1, j, 0] == pytest.approx(1 / last)  # the smaller batch


def test_thread_groups_do_not_change_the_results() -> None:
    X, y, folds = blobs(n=260, seed=11, n_folds=5)
    splits = fold_splits(folds)
    kw = {"n_classes": N_CLASSES, "model": SMALL, "progress": False}
    one = cv(X, y, splits, train=quick_train(threads=1), **kw)
    three = cv(X, y, splits, train=quick_train(threads=3), **kw)
    for a, b in zip(one.history, three.history, strict=True):
        np.testing.assert_allclose(a.train_loss, b.train_loss, rtol=1e-5)
        np.testing.assert_allclose(a.test_loss, b.test_loss, rtol=1e-5)
    assert [f.confusion for f in one.folds] == [f.confusion for f in three.folds]


def test_device_setting() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ConfigError, match=r"train.device=cuda but torch sees no CUDA"):
            resolve_device("cuda")


@pytest.mark.slow
def test_lockstep_and_the_usual_per_fold_loop_reach_the_same_accuracy() -> None:
    # The usual way: nn.Module with nn.Dropout, autograd, torch.optim.Adam, a fresh shuffle per
    # epoch from torch's generator. Same initial weights; different random streams, so the
    # accuracies agree within noise, not exactly.
    X, y, folds = blobs(n=400, seed=12, n_folds=4)
    splits = fold_splits(folds)
    train = quick_train(epochs=8, batch_size=16)
    ours = cv(X, y, splits, n_classes=N_CLASSES, model=SMALL, train=train, progress=False)
    sizes = layer_sizes(X.shape[1], SMALL.hidden, N_CLASSES)
    accs = []
    for s in splits:
        xtr, xte = X[s.train].astype(np.float64), X[s.test].astype(np.float64)
        mu, sd = xtr.mean(0), xtr.std(0)
        xtr = torch.tensor((xtr - mu) / sd, dtype=torch.float32)
        xte = torch.tensor((xte - mu) / sd, dtype=torch.float32)
        ytr, yte = torch.from_numpy(y[s.train]), torch.from_numpy(y[s.test])
        net = MLP(X.shape[1], N_CLASSES, hidden=SMALL.hidden, dropout=SMALL.dropout)
        init = fold_init_params(sizes, seed=train.seed, fold=s.fold)
        net.load_keras_params(init)
        assert all(torch.equal(a[0], b[0]) for a, b in zip(init, net.keras_params(), strict=True))
        opt = torch.optim.Adam(net.parameters(), lr=train.lr, eps=train.eps)
        gen = torch.Generator().manual_seed(int(s.fold))
        torch.manual_seed(int(s.fold))  # nn.Dropout draws from the global generator
        for _ in range(train.epochs):
            net.train()
            perm = torch.randperm(len(ytr), generator=gen)
            for b in range(0, len(perm), train.batch_size):
                rows = perm[b : b + train.batch_size]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(xtr[rows]), ytr[rows]).backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            accs.append((net(xte).argmax(1) == yte).float().mean().item())
    assert ours.mean_accuracy > 0.6
    assert ours.mean_accuracy == pytest.approx(np.mean(accs), abs=0.05)  # ~2.5 std errors


@pytest.mark.parametrize(
    ("model", "batch_size", "epochs"),
    [
        (ModelSettings(hidden=(), dropout=0.0), 16, 6),  # multinomial logistic regression
        (ModelSettings(hidden=(16,), dropout=0.3, activation="gelu"), 7, 6),
        (ModelSettings(hidden=(8, 12), dropout=0.0, activation="tanh"), 1000, 80),  # one batch
        (ModelSettings(hidden=(70, 9), dropout=0.5, activation="elu"), 32, 6),
    ],
    ids=["no-hidden", "gelu", "tanh-one-batch", "elu"],
)
def test_model_variants_train(model: ModelSettings, batch_size: int, epochs: int) -> None:
    X, y, folds = blobs(n=200, seed=13)
    res = cv(
        X,
        y,
        fold_splits(folds),
        n_classes=N_CLASSES,
        model=model,
        train=quick_train(epochs=epochs, batch_size=batch_size, threads=2),
        progress=False,
    )
    losses = np.array([h.train_loss for h in res.history])
    assert np.isfinite(losses).all() and np.isfinite([f.loss for f in res.folds]).all()
    assert res.history[-1].mean_train_loss < res.history[0].mean_train_loss
    assert res.mean_accuracy > 0.4  # above chance (0.25)


def test_batch_larger_than_every_training_part_is_clipped(caplog) -> None:
    """Issue 11 item 6: a huge batch trains as one full batch, said once, with buffers that do
    not grow with the requested size (same result as a batch of exactly the largest part)."""
    X, y, folds = blobs(n=80, seed=3)
    splits = fold_splits(folds)
    largest = max(len(s.train) for s in splits)
    kw = {"n_classes": N_CLASSES, "model": SMALL, "progress": False}
    with caplog.at_level("WARNING", logger="urbansound.training.cross_validation"):
        huge = cv(X, y, splits, train=quick_train(batch_size=10**9), **kw)
    exact = cv(X, y, splits, train=quick_train(batch_size=largest), **kw)
    (line,) = [r.getMessage() for r in caplog.records if "clipped" in r.getMessage()]
    assert "train.batch_size=1000000000" in line and f"clipped to {largest}" in line
    assert huge.to_dict() == exact.to_dict()


def test_outer_fold_without_clips_blames_cv_outer_fold() -> None:
    import pandas as pd

    from urbansound.config.settings import CVSettings
    from urbansound.data.cv import select_clips

    clips = pd.DataFrame({"fold": [1, 1, 2, 4, 4]})
    for evaluate in (False, True):
        with pytest.raises(DataError, match=r"cv\.outer_fold=3 .*folds with clips: \[1, 2, 4\]"):
            select_clips(CVSettings(outer_fold=3, evaluate_outer=evaluate), clips)
    assert list(select_clips(CVSettings(outer_fold=2), clips)["fold"]) == [1, 1, 4, 4]
    assert len(select_clips(CVSettings(outer_fold=2, evaluate_outer=True), clips)) == 5
    # the LEAKY random split of a held-out search splits the search's clips, not fold 2's
    leaky = CVSettings(name="random_split", outer_fold=2)
    assert list(select_clips(leaky, clips)["fold"]) == [1, 1, 4, 4]


# --------------------------------------------------------------------------------------------
# Trainer outputs: test probabilities and fitted models


def _numpy_forward(model, X: np.ndarray) -> np.ndarray:
    """Class probabilities of a FittedMLP on raw features, in float64 numpy (no torch)."""
    h = X.astype(np.float64)
    if model.mean is not None:
        h = (h - model.mean) / model.std
    acts = {"relu": lambda z: np.maximum(z, 0.0), "tanh": np.tanh}
    for i, (w, b) in enumerate(model.params):
        h = h @ w.astype(np.float64) + b
        if i < len(model.params) - 1:
            h = acts[model.activation](h)
    h -= h.max(axis=1, keepdims=True)
    e = np.exp(h)
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("standardize", [True, False])
def test_fold_probabilities_and_fitted_models_reproduce_the_fold_metrics(standardize) -> None:
    X, y, folds = blobs()
    splits = fold_splits(folds)
    res = cv(
        X,
        y,
        splits,
        n_classes=N_CLASSES,
        model=SMALL,
        train=quick_train(standardize=standardize, threads=2),
        progress=False,
        keep_models=True,
    )
    assert [p.fold for p in res.predictions] == [s.fold for s in splits]
    assert [m.fold for m in res.models] == [s.fold for s in splits]
    for split, fold, pred, model in zip(
        splits, res.folds, res.predictions, res.models, strict=True
    ):
        np.testing.assert_array_equal(pred.test_index, split.test)
        assert pred.probabilities.shape == (len(split.test), N_CLASSES)
        np.testing.assert_allclose(pred.probabilities.sum(axis=1), 1.0, rtol=1e-5)
        hits = pred.probabilities.argmax(axis=1) == y[split.test]
        assert hits.mean() == fold.accuracy
        assert np.trace(np.array(fold.confusion)) == hits.sum()
        # the fitted model alone (plain arrays) gives the same probabilities
        assert (model.mean is None) is (not standardize)
        np.testing.assert_allclose(
            _numpy_forward(model, X[split.test]), pred.probabilities, atol=1e-5
        )


def test_models_are_kept_only_when_asked_for() -> None:
    X, y, folds = blobs(n=80)
    res = cv(
        X,
        y,
        fold_splits(folds),
        n_classes=N_CLASSES,
        model=SMALL,
        train=quick_train(),
        progress=False,
    )
    assert res.models == [] and len(res.predictions) == len(res.folds)
