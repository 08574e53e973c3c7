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
    if name == "gelu":
        return torch.nn.functional.gelu(z)
    if name == "tanh":
        return torch.tanh(z)
    if name == "elu":
        return torch.nn.functional.elu(z)
    raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")


def _act_grad(name: str, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """d act / dz, from the activation's input ``z`` and output ``a``."""
    if name == "gelu":  # exact GELU: Phi(z) + z phi(z)
        cdf = 0.5 * (1.0 + torch.erf(z * (1.0 / math.sqrt(2.0))))
        pdf = torch.exp(-0.5 * z * z) * (1.0 / math.sqrt(2.0 * math.pi))
        return cdf + z * pdf
    if name == "tanh":
        return 1.0 - a * a
    if name == "elu":
        return torch.where(z > 0, 1.0, a + 1.0)
    raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")


@dataclass
class StepCache:
    """What :meth:`StackedMLP.backward` needs from a training forward pass."""

    k: int  # number of leading models that took part
    inputs: list[torch.Tensor]  # input of each dense layer (after dropout)
    keep: list[torch.Tensor | None]  # dropout multipliers per hidden layer (non-ReLU only)
    grad_act: list[torch.Tensor | None]  # activation derivatives per hidden layer (non-ReLU)
    dropped: list[bool]  # whether hidden layer i had a dropout mask


# A kernel whose output is this narrow is stored transposed, (fan_out, fan_in): batched products
# with a thin right-hand side are several times slower than with a thin left-hand side.
THIN = 64


@dataclass
class _Views:
    """Slices of the stacked tensors and workspace for the first ``k`` models (built once)."""

    fwd: list[torch.Tensor]  # kernels as (k, fan_in, fan_out) (views)
    bwd: list[torch.Tensor]  # kernels as (k, fan_out, fan_in) (views)
    b: list[torch.Tensor]  # biases as (k, 1, fan_out)
    gw: list[torch.Tensor]  # kernel gradients, stored layout
    gb: list[torch.Tensor]
    z: list[torch.Tensor]  # per layer: (k, batch, fan_out) pre-activations / activations
    gh: list[torch.Tensor]  # per layer: (k, batch, fan_in) gradient w.r.t. the layer input
    g: list[torch.Tensor]  # per layer: (k, batch, fan_in) gradient w.r.t. the previous z


class StackedMLP:
    """``F`` independent MLPs with stacked weights, evaluated with batched matrix products.

    Layer ``l``'s kernels are ``(F, fan_in, fan_out)`` (Keras' layout) or, for a thin layer
    (``fan_out < 64``, the output layer), ``(F, fan_out, fan_in)``; :meth:`kernel` and
    :meth:`kernel_grad` always give the Keras layout. Biases are ``(F, fan_out)``. Every method
    works on the first ``k`` models of the stack (``k`` is the leading size of the input), so
    models whose data ran out sit out a step without being touched. Training steps reuse
    preallocated buffers; the tensors a step returns are overwritten by the next step.

    Dropout follows Keras: a unit is dropped with probability ``dropout`` and the kept units are
    scaled by ``1 / (1 - dropout)``. The caller passes the masks as multipliers (``0`` or
    ``1 / (1 - dropout)``). With ReLU, ``relu(z) * keep`` is positive exactly where the gradient
    passes, so the backward pass needs only the stored activations and the scale.
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
        self.transposed = [params[0][i][0].shape[1] < THIN for i in range(n_layers)]
        self.weights = []
        for i in range(n_layers):
            w = torch.stack([p[i][0] for p in params])
            if self.transposed[i]:
                w = w.transpose(1, 2)
            self.weights.append(w.to(device).contiguous())
        self.biases = [
            torch.stack([p[i][1] for p in params]).to(device).contiguous() for i in range(n_layers)
        ]
        self.dropout = float(dropout)
        self.scale = 1.0 / (1.0 - self.dropout)
        self.activation = activation
        self.grad_weights = [torch.zeros_like(w) for w in self.weights]
        self.grad_biases = [torch.zeros_like(b) for b in self.biases]
        self._views: dict[tuple[int, int], _Views] = {}
        self._work: dict[int, tuple[list[torch.Tensor], ...]] = {}
        self._eval: dict[tuple[int, int], list[torch.Tensor]] = {}

    @property
    def n_models(self) -> int:
        return self.weights[0].shape[0]

    def kernel(self, i: int) -> torch.Tensor:
        """Layer ``i``'s kernels in Keras layout, ``(F, fan_in, fan_out)`` (a view)."""
        w = self.weights[i]
        return w.transpose(1, 2) if self.transposed[i] else w

    def kernel_grad(self, i: int) -> torch.Tensor:
        """Gradient of :meth:`kernel` ``(i)``, same layout (a view)."""
        g = self.grad_weights[i]
        return g.transpose(1, 2) if self.transposed[i] else g

    def parameters(self) -> list[torch.Tensor]:
        """Stacked tensors in the order ``W0, b0, W1, b1, ...`` (stored layout)."""
        return [t for pair in zip(self.weights, self.biases, strict=True) for t in pair]

    def gradients(self) -> list[torch.Tensor]:
        """Gradient buffers matching :meth:`parameters`."""
        return [t for pair in zip(self.grad_weights, self.grad_biases, strict=True) for t in pair]

    def model_params(self, f: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Model ``f``'s weights in Keras layout (copies on the CPU)."""
        return [
            (self.kernel(i)[f].detach().cpu().clone(), self.biases[i][f].detach().cpu().clone())
            for i in range(len(self.weights))
        ]

    def _slices(self, k: int, batch: int) -> _Views:
        v = self._views.get((k, batch))
        if v is None:
            work = self._work.get(batch)
            if work is None:
                n, dev = self.n_models, self.weights[0].device
                outs = [b.shape[1] for b in self.biases]
                ins = [self.kernel(i).shape[1] for i in range(len(self.weights))]
                work = (
                    [torch.zeros((n, batch, o), device=dev) for o in outs],
                    [torch.zeros((n, batch, i), device=dev) for i in ins],
                    [torch.zeros((n, batch, i), device=dev) for i in ins],
                )
                self._work[batch] = work
            v = _Views(
                fwd=[self.kernel(i)[:k] for i in range(len(self.weights))],
                bwd=[self.kernel(i)[:k].transpose(1, 2) for i in range(len(self.weights))],
                b=[b[:k].unsqueeze(1) for b in self.biases],
                gw=[g[:k] for g in self.grad_weights],
                gb=[g[:k] for g in self.grad_biases],
                z=[t[:k] for t in work[0]],
                gh=[t[:k] for t in work[1]],
                g=[t[:k] for t in work[2]],
            )
            self._views[(k, batch)] = v
        return v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(k, rows, n_classes)`` for inputs ``(k, rows, n_features)``, no dropout.

        Writes into buffers kept for this input shape (evaluation repeats the same shapes every
        epoch); the result is overwritten by the next call with that shape.
        """
        k, rows = x.shape[0], x.shape[1]
        bufs = self._eval.get((k, rows))
        if bufs is None:
            bufs = [x.new_empty((k, rows, b.shape[1])) for b in self.biases]
            self._eval[(k, rows)] = bufs
        h = x
        last = len(self.weights) - 1
        for i in range(last + 1):
            z = torch.baddbmm(self.biases[i][:k].unsqueeze(1), h, self.kernel(i)[:k], out=bufs[i])
            if i == last:
                return z
            h = z.relu_() if self.activation == "relu" else _act_forward(self.activation, z)
        raise AssertionError("unreachable")

    def forward_train(
        self,
        x: torch.Tensor,
        keep: Sequence[torch.Tensor | None],
        *,
        out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, StepCache]:
        """Training forward pass: logits and the cache for :meth:`backward`.

        ``keep`` holds one ``(k, batch, width)`` float multiplier per hidden layer: 0 where a
        unit is dropped, ``1 / (1 - dropout)`` where it is kept (``None``: no dropout there).
        ``out`` receives the logits when given.
        """
        k = x.shape[0]
        v = self._slices(k, x.shape[1])
        relu = self.activation == "relu"
        last = len(self.weights) - 1
        inputs: list[torch.Tensor] = []
        keeps: list[torch.Tensor | None] = []
        grads: list[torch.Tensor | None] = []
        dropped: list[bool] = []
        h = x
        for i in range(last):
            inputs.append(h)
            z = torch.baddbmm(v.b[i], h, v.fwd[i], out=v.z[i])
            mask = keep[i]
            if relu:
                h = z.relu_() if mask is None else z.mul_(mask).relu_()
                keeps.append(None)
                grads.append(None)
            else:
                a = _act_forward(self.activation, z)
                grads.append(_act_grad(self.activation, z, a))
                keeps.append(mask)
                h = a if mask is None else a.mul_(mask)
            dropped.append(mask is not None)
        inputs.append(h)
        logits = torch.baddbmm(v.b[last], h, v.fwd[last], out=v.z[last] if out is None else out)
        return logits, StepCache(k=k, inputs=inputs, keep=keeps, grad_act=grads, dropped=dropped)

    def backward(self, grad_logits: torch.Tensor, cache: StepCache) -> None:
        """Fill :attr:`grad_weights` / :attr:`grad_biases` of the first ``k`` models.

        ``grad_logits`` is d(loss)/d(logits), ``(k, batch, n_classes)``; each model's loss is its
        own (the models are independent), so the stacked gradient is every model's gradient.
        """
        v = self._slices(cache.k, grad_logits.shape[1])
        relu = self.activation == "relu"
        g = grad_logits
        for i in range(len(self.weights) - 1, -1, -1):
            h_in = cache.inputs[i]
            torch.sum(g, dim=1, out=v.gb[i])
            if self.transposed[i]:
                torch.bmm(g.transpose(1, 2), h_in, out=v.gw[i])
            else:
                torch.bmm(h_in.transpose(1, 2), g, out=v.gw[i])
            if i > 0:
                if relu:
                    # keep * relu(z) has slope keep = scale exactly where it is positive.
                    alpha = self.scale if cache.dropped[i - 1] else 1.0
                    gh = torch.baddbmm(v.gh[i], g, v.bwd[i], beta=0.0, alpha=alpha, out=v.gh[i])
                    g = torch.ops.aten.threshold_backward.grad_input(
                        gh, h_in, 0.0, grad_input=v.g[i]
                    )
                else:
                    g = torch.bmm(g, v.bwd[i], out=v.g[i]).mul_(cache.grad_act[i - 1])
                    mask = cache.keep[i - 1]
                    if mask is not None:
                        g = g.mul_(mask)
