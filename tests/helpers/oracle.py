"""Test oracle: one fold's MLP as a plain ``torch.nn.Module`` trained with autograd.

The package trains only the stacked form (:class:`urbansound.training.mlp.StackedMLP`); this
reference form checks it (same Keras initialisation, same layers) in the tests and the trainer
benchmark.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from urbansound.config.settings import ACTIVATIONS
from urbansound.training.mlp import init_params, layer_sizes


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
