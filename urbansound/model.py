"""The tutorial's Keras MLP, as one model per fold or as all folds' models stacked.

The network is Dense(h) - activation - Dropout(p) for each hidden width h, then Dense(n_classes)
with softmax cross-entropy. Weights start as in Keras: glorot-uniform kernels, zero biases.

Two forms share one initialisation (:func:`init_params`, a Keras kernel is ``(fan_in, fan_out)``):

- :class:`MLP`, a plain ``torch.nn.Module`` for one fold (the reference form, trained with
  autograd; also what a user would export).
- :class:`StackedMLP`, the weights of ``F`` independent models stacked along a leading axis and
  run with batched matrix products, with a hand-written backward pass (checked against autograd
  by the tests). The trainer in :mod:`urbansound.train` uses it to train all folds in lockstep.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

ACTIVATIONS = ("relu", "gelu", "tanh", "elu")


def layer_sizes(n_features: int, hidden: Sequence[int], n_classes: int) -> list[int]:
    """Widths of every layer, input first: ``[n_features, *hidden, n_classes]``."""
    return [int(n_features), *(int(h) for h in hidden), int(n_classes)]


def glorot_uniform(fan_in: int, fan_out: int, *, generator: torch.Generator) -> torch.Tensor:
    """A ``(fan_in, fan_out)`` kernel drawn as Keras' ``GlorotUniform`` does.

    Uniform on ``[-limit, limit]`` with ``limit = sqrt(6 / (fan_in + fan_out))``; float32, CPU.
    """
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    w = torch.empty(fan_in, fan_out, dtype=torch.float32)
    return w.uniform_(-limit, limit, generator=generator)


def init_params(
    sizes: Sequence[int], *, generator: torch.Generator
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Keras-initialised ``(kernel, bias)`` pairs for one model: glorot-uniform, zero biases.

    Kernels are ``(fan_in, fan_out)`` (``y = x @ kernel + bias``), drawn layer by layer from
    ``generator`` (a CPU generator, so the weights do not depend on the training device).
    """
    params = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        params.append(
            (
                glorot_uniform(fan_in, fan_out, generator=generator),
                torch.zeros(fan_out, dtype=torch.float32),
            )
        )
    return params


def _activation_module(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()  # exact (erf) form, as keras.activations.gelu(approximate=False)
    if name == "tanh":
        return nn.Tanh()
    if name == "elu":
        return nn.ELU(alpha=1.0)
    raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")


class MLP(nn.Module):
    """One fold's model as a plain module: ``(Linear, activation, Dropout) * len(hidden)``,
    then ``Linear`` to the class logits (softmax lives in the loss).

    Parameters
    ----------
    n_features, n_classes:
        Input and output widths.
    hidden:
        Hidden layer widths (the tutorial: ``(256, 256)``).
    dropout:
        Dropout rate after each hidden layer (the tutorial: 0.5).
    activation:
        ``relu`` (the tutorial), ``gelu``, ``tanh`` or ``elu``.
    generator:
        Where the Keras initialisation draws from; ``None`` uses torch's global generator.
    """

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        *,
        hidden: Sequence[int] = (256, 256),
        dropout: float = 0.5,
        activation: str = "relu",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        sizes = layer_sizes(n_features, hidden, n_classes)
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(sizes) - 2:
                layers += [_activation_module(activation), nn.Dropout(dropout)]
        self.net = nn.Sequential(*layers)
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.initial_seed()) % 2**63)
        self.load_keras_params(init_params(sizes, generator=generator))

    @property
    def linears(self) -> list[nn.Linear]:
        """The dense layers, input first."""
        return [m for m in self.net if isinstance(m, nn.Linear)]

    @torch.no_grad()
    def load_keras_params(self, params: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Copy Keras-layout ``(kernel, bias)`` pairs into the layers (``weight = kernel.T``)."""
        for lin, (kernel, bias) in zip(self.linears, params, strict=True):
            lin.weight.copy_(kernel.T)
            lin.bias.copy_(bias)

    def keras_params(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The weights in Keras layout: ``(kernel (fan_in, fan_out), bias)`` per layer."""
        return [(lin.weight.detach().T.clone(), lin.bias.detach().clone()) for lin in self.linears]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a ``(batch, n_features)`` input."""
        return self.net(x)


# --------------------------------------------------------------------------------------------
# Stacked form: F models, batched matrix products, hand-written backward.


def _act_forward(name: str, z: torch.Tensor) -> torch.Tensor:
    if name == "relu":
        return z.relu_()
    if name == "gelu":
        return torch.nn.functional.gelu(z)
    if name == "tanh":
        return z.tanh_()
    if name == "elu":
        return torch.nn.functional.elu(z)
    raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")


def _act_backward(name: str, grad: torch.Tensor, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Gradient through the activation; ``z`` is its input, ``a`` its output (before dropout)."""
    if name == "gelu":
        cdf = 0.5 * (1.0 + torch.erf(z * (1.0 / math.sqrt(2.0))))
        pdf = torch.exp(-0.5 * z * z) * (1.0 / math.sqrt(2.0 * math.pi))
        return grad * (cdf + z * pdf)
    if name == "tanh":
        return grad * (1.0 - a * a)
    if name == "elu":
        return grad * torch.where(z > 0, 1.0, a + 1.0)
    raise ValueError(f"no generic backward for activation {name!r}")


@dataclass
class StepCache:
    """What :meth:`StackedMLP.backward` needs from a training forward pass."""

    inputs: list[torch.Tensor]  # input of each dense layer (post-dropout, unscaled)
    pre: list[torch.Tensor | None]  # pre-activations (only for non-ReLU activations)
    post: list[torch.Tensor | None]  # activations before dropout (only for non-ReLU)
    drop: list[torch.Tensor | None]  # boolean drop masks per hidden layer
    k: int  # number of leading models that took part


class StackedMLP:
    """``F`` independent MLPs with stacked weights, evaluated with batched matrix products.

    ``weights[l]`` is ``(F, fan_in, fan_out)``, ``biases[l]`` is ``(F, fan_out)``. Every method
    works on the first ``k`` models only (``k = F`` by default), so models whose data ran out can
    sit out a step without being touched.

    Dropout follows Keras: a unit is dropped with probability ``dropout`` and the kept units are
    scaled by ``1 / (1 - dropout)``. The scale is applied inside the next layer's matrix product
    (``alpha``), so the stored activations are the unscaled, masked ones.
    """

    def __init__(
        self,
        params: Sequence[Sequence[tuple[torch.Tensor, torch.Tensor]]],
        *,
        dropout: float = 0.5,
        activation: str = "relu",
        device: torch.device | str = "cpu",
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}"
            )
        n_layers = len(params[0])
        self.weights = [
            torch.stack([p[i][0] for p in params]).to(device).contiguous() for i in range(n_layers)
        ]
        self.biases = [
            torch.stack([p[i][1] for p in params]).to(device).contiguous() for i in range(n_layers)
        ]
        self.dropout = float(dropout)
        self.scale = 1.0 / (1.0 - self.dropout)
        self.activation = activation
        self.grad_weights = [torch.zeros_like(w) for w in self.weights]
        self.grad_biases = [torch.zeros_like(b) for b in self.biases]

    @property
    def n_models(self) -> int:
        return self.weights[0].shape[0]

    @property
    def hidden(self) -> list[int]:
        return [w.shape[2] for w in self.weights[:-1]]

    def parameters(self) -> list[torch.Tensor]:
        """Stacked tensors in the order ``W0, b0, W1, b1, ...``."""
        return [t for pair in zip(self.weights, self.biases, strict=True) for t in pair]

    def gradients(self) -> list[torch.Tensor]:
        """Gradient buffers matching :meth:`parameters`."""
        return [t for pair in zip(self.grad_weights, self.grad_biases, strict=True) for t in pair]

    def model_params(self, f: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Model ``f``'s weights in Keras layout (copies on the CPU)."""
        return [
            (w[f].detach().cpu().clone(), b[f].detach().cpu().clone())
            for w, b in zip(self.weights, self.biases, strict=True)
        ]

    def forward(
        self, x: torch.Tensor, *, drop: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Logits ``(k, batch, n_classes)`` for inputs ``(k, batch, n_features)``.

        ``drop`` (training): one boolean ``(k, batch, width)`` mask per hidden layer, True where a
        unit is dropped; ``None`` evaluates without dropout.
        """
        logits, _ = self._forward(x, drop=drop, keep_cache=False)
        return logits

    def forward_train(
        self, x: torch.Tensor, drop: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, StepCache]:
        """Training forward pass: logits and the cache for :meth:`backward`."""
        logits, cache = self._forward(x, drop=drop, keep_cache=True)
        assert cache is not None
        return logits, cache

    def _forward(
        self, x: torch.Tensor, *, drop: Sequence[torch.Tensor] | None, keep_cache: bool
    ) -> tuple[torch.Tensor, StepCache | None]:
        k = x.shape[0]
        relu = self.activation == "relu"
        n_layers = len(self.weights)
        inputs: list[torch.Tensor] = []
        pre: list[torch.Tensor | None] = []
        post: list[torch.Tensor | None] = []
        drops: list[torch.Tensor | None] = []
        h = x
        alpha = 1.0
        for i in range(n_layers):
            w, b = self.weights[i], self.biases[i]
            inputs.append(h)
            z = torch.baddbmm(b[:k].unsqueeze(1), h, w[:k], alpha=alpha)
            if i == n_layers - 1:
                h = z
                break
            mask = drop[i] if drop is not None else None
            if relu:
                # ReLU commutes with a 0/1 mask: mask first, then clamp, both in place.
                h = z.masked_fill_(mask, 0.0).relu_() if mask is not None else z.relu_()
                pre.append(None)
                post.append(None)
            else:
                zc = z if keep_cache else None
                a = _act_forward(self.activation, z.clone() if keep_cache else z)
                pre.append(zc)
                post.append(a if keep_cache else None)
                h = a.masked_fill(mask, 0.0) if mask is not None else a
            drops.append(mask)
            alpha = self.scale if mask is not None else 1.0
        cache = StepCache(inputs, pre, post, drops, k) if keep_cache else None
        return h, cache

    def backward(self, grad_logits: torch.Tensor, cache: StepCache) -> None:
        """Fill :attr:`grad_weights` / :attr:`grad_biases` of the first ``k`` models.

        ``grad_logits`` is d(loss)/d(logits), ``(k, batch, n_classes)``; each model's loss is its
        own (the models are independent), so the stacked gradient is every model's gradient.
        """
        k = cache.k
        n_layers = len(self.weights)
        relu = self.activation == "relu"
        g = grad_logits
        for i in range(n_layers - 1, -1, -1):
            h_in = cache.inputs[i]
            # The input of layer i>0 was scaled by 1/(1-p) inside the product (dropout).
            alpha = self.scale if (i > 0 and cache.drop[i - 1] is not None) else 1.0
            torch.bmm(h_in.transpose(1, 2), g, out=self.grad_weights[i][:k])
            if alpha != 1.0:
                self.grad_weights[i][:k].mul_(alpha)
            torch.sum(g, dim=1, out=self.grad_biases[i][:k])
            if i == 0:
                break
            gh = torch.bmm(g, self.weights[i][:k].transpose(1, 2))
            if alpha != 1.0:
                gh.mul_(alpha)
            if relu:
                # d/dz of mask(relu(z)) is 1 exactly where the stored output is positive.
                g = torch.ops.aten.threshold_backward(gh, h_in, 0.0)
            else:
                mask = cache.drop[i - 1]
                if mask is not None:
                    gh = gh.masked_fill_(mask, 0.0)
                g = _act_backward(self.activation, gh, cache.pre[i - 1], cache.post[i - 1])
