"""The MLP: Keras defaults, Keras initialisation, and the stacked form's hand-written backward."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.helpers.oracle import MLP
from urbansound.config.settings import ModelSettings, TrainSettings
from urbansound.training.mlp import StackedMLP, glorot_uniform, init_params, layer_sizes


def test_defaults_are_the_tutorial_keras_model() -> None:
    # The tutorial's model: Dense(256)-relu-Dropout(0.5) twice, Dense(10), softmax;
    # compiled with keras.optimizers.Adam() defaults and fit(batch_size=32, epochs=100).
    m, t = ModelSettings(), TrainSettings()
    assert m.hidden == (256, 256)
    assert m.dropout == 0.5
    assert m.activation == "relu"
    assert t.lr == 1e-3  # keras.optimizers.Adam(learning_rate=0.001)
    assert t.beta1 == 0.9  # beta_1
    assert t.beta2 == 0.999  # beta_2
    assert t.eps == 1e-7  # epsilon (torch's default is 1e-8)
    assert t.batch_size == 32
    assert t.epochs == 100
    assert t.weight_decay == 0.0
    assert t.standardize is True


def test_config_files_match_dataclass_defaults(compose_cfg) -> None:
    from urbansound.config.checks import settings_from_config

    s = settings_from_config(compose_cfg())
    assert s.model == ModelSettings()
    assert s.train == TrainSettings()
    tut = settings_from_config(compose_cfg(["train=tutorial"]))
    assert tut.train.standardize is False
    assert tut.train.lr == 1e-3 and tut.train.batch_size == 32 and tut.train.epochs == 100


def test_glorot_uniform_matches_keras_limit() -> None:
    # keras.initializers.GlorotUniform: U(-limit, limit), limit = sqrt(6 / (fan_in + fan_out)).
    gen = torch.Generator().manual_seed(0)
    w = glorot_uniform(40, 256, generator=gen)
    limit = math.sqrt(6 / (40 + 256))
    assert w.shape == (40, 256) and w.dtype == torch.float32
    assert w.abs().max().item() <= limit
    assert w.abs().max().item() > 0.99 * limit  # the whole range is used
    # Variance of U(-l, l) is l^2 / 3 = 2 / (fan_in + fan_out).
    assert w.var().item() == pytest.approx(2 / (40 + 256), rel=0.05)


def test_init_params_zero_biases_and_shapes() -> None:
    sizes = layer_sizes(40, (256, 128), 10)
    assert sizes == [40, 256, 128, 10]
    params = init_params(sizes, generator=torch.Generator().manual_seed(1))
    assert [tuple(w.shape) for w, _ in params] == [(40, 256), (256, 128), (128, 10)]
    assert all(torch.count_nonzero(b).item() == 0 for _, b in params)
    again = init_params(sizes, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(params, again, strict=True))


def test_mlp_module_layout_and_weights() -> None:
    gen = torch.Generator().manual_seed(3)
    params = init_params([40, 256, 256, 10], generator=torch.Generator().manual_seed(3))
    net = MLP(40, 10, generator=gen)
    kinds = [type(m).__name__ for m in net.net]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert net.net[2].p == 0.5
    for (w, b), (w2, b2) in zip(params, net.keras_params(), strict=True):
        assert torch.equal(w, w2) and torch.equal(b, b2)


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh", "elu"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("sizes", [[5, 6, 4, 3], [66, 96, 64, 3]], ids=["thin", "wide"])
def test_stacked_backward_matches_autograd(
    activation: str, dropout: float, sizes: list[int]
) -> None:
    # "thin" stores every kernel transposed, "wide" only the output layer's.
    torch.manual_seed(0)
    n_models, batch = 3, 7
    params = [init_params(sizes, generator=torch.Generator().manual_seed(j)) for j in range(3)]
    for p in params:  # non-zero biases so their gradients are exercised
        for _, b in p:
            b.normal_()
    net = StackedMLP(params, dropout=dropout, activation=activation)
    x = torch.randn(n_models, batch, sizes[0])
    y = torch.randint(0, sizes[-1], (n_models, batch))
    w = torch.rand(n_models, batch)
    drop = None
    if dropout:
        drop = [torch.rand(n_models, batch, h) < dropout for h in sizes[1:-1]]
    keep = [(~m).float() / (1 - dropout) for m in drop] if drop is not None else [None, None]

    logits_t, cache = net.forward_train(x, keep)  # class-major: (models, classes, rows)
    assert logits_t.shape == (n_models, sizes[-1], batch)
    logits = logits_t.transpose(1, 2)
    onehot = torch.nn.functional.one_hot(y, sizes[-1]).float()
    grad = (torch.softmax(logits, -1) - onehot) * w[..., None]
    net.backward(grad.transpose(1, 2).contiguous(), cache)

    # Autograd on each model with torch.nn layers and the same masks.
    act = {
        "relu": torch.relu,
        "gelu": torch.nn.functional.gelu,
        "tanh": torch.tanh,
        "elu": torch.nn.functional.elu,
    }[activation]
    for j in range(n_models):
        ws = [p[0].clone().requires_grad_() for p in params[j]]
        bs = [p[1].clone().requires_grad_() for p in params[j]]
        h = x[j]
        for i in range(3):
            h = h @ ws[i] + bs[i]
            if i < 2:
                h = act(h)
                if drop is not None:
                    h = h.masked_fill(drop[i][j], 0.0) / (1 - dropout)
        assert torch.allclose(h, logits[j], atol=1e-5)
        loss = (torch.nn.functional.cross_entropy(h, y[j], reduction="none") * w[j]).sum()
        loss.backward()
        for i in range(3):
            assert torch.allclose(ws[i].grad, net.kernel_grad(i)[j], atol=1e-5, rtol=1e-4)
            assert torch.allclose(bs[i].grad, net.grad_biases[i][j], atol=1e-5, rtol=1e-4)


def test_stacked_backward_touches_only_leading_models() -> None:
    sizes = [4, 8, 3]
    params = [init_params(sizes, generator=torch.Generator().manual_seed(j)) for j in range(4)]
    net = StackedMLP(params, dropout=0.0)
    for g in net.gradients():
        g.fill_(7.0)
    x = torch.randn(2, 5, 4)
    logits, cache = net.forward_train(x, [None])
    net.backward(torch.ones_like(logits), cache)
    for g in net.gradients():
        assert torch.all(g[2:] == 7.0)
        assert not torch.all(g[:2] == 7.0)


def test_stacked_forward_equals_module_in_eval_mode() -> None:
    sizes = [6, 16, 16, 4]
    params = [init_params(sizes, generator=torch.Generator().manual_seed(j)) for j in range(2)]
    net = StackedMLP(params, dropout=0.5, activation="gelu")
    x = torch.randn(2, 9, 6)
    out = net.forward(x)
    for j in range(2):
        m = MLP(6, 4, hidden=(16, 16), dropout=0.5, activation="gelu")
        m.load_keras_params(params[j])
        m.eval()
        np.testing.assert_allclose(out[j].numpy(), m(x[j]).detach().numpy(), atol=1e-5)
