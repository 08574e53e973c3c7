"""The tutorial's Keras MLP, as one model per fold or as all folds' models stacked.

The network is Dense(h) - activation - Dropout(p) for each hidden width h, then Dense(n_classes)
with softmax cross-entropy. Weights start as in Keras: glorot-uniform kernels, zero biases.

:func:`init_params` draws one model's Keras initialisation (a Keras kernel is
``(fan_in, fan_out)``); :class:`StackedMLP` holds the weights of ``F`` independent models
stacked along a leading axis and runs them with batched matrix products and a hand-written
backward pass (checked against an autograd ``torch.nn.Module`` oracle in the tests).
:class:`StackedAdam` is Keras' Adam over those stacked weights. :mod:`urbansound.training.lockstep`
uses both to train all folds in lockstep.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from urbansound.config.settings import ACTIVATIONS


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
    bt: torch.Tensor  # the output layer's biases as (k, n_classes, 1)
    gw: list[torch.Tensor]  # kernel gradients, stored layout
    gb: list[torch.Tensor]
    z: list[torch.Tensor]  # per layer: (k, batch, fan_out) pre-activations / activations
    gh: list[torch.Tensor]  # per layer: (k, batch, fan_in) gradient w.r.t. the layer input
    g: list[torch.Tensor]  # per layer: (k, batch, fan_in) gradient w.r.t. the previous z
    zt: torch.Tensor  # (k, n_classes, batch): class-major training logits


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
        self._work: dict[int, tuple[Any, ...]] = {}
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
                    torch.zeros((n, outs[-1], batch), device=dev),
                )
                self._work[batch] = work
            v = _Views(
                fwd=[self.kernel(i)[:k] for i in range(len(self.weights))],
                bwd=[self.kernel(i)[:k].transpose(1, 2) for i in range(len(self.weights))],
                b=[b[:k].unsqueeze(1) for b in self.biases],
                bt=self.biases[-1][:k].unsqueeze(2),
                gw=[g[:k] for g in self.grad_weights],
                gb=[g[:k] for g in self.grad_biases],
                z=[t[:k] for t in work[0]],
                gh=[t[:k] for t in work[1]],
                g=[t[:k] for t in work[2]],
                zt=work[3][:k],
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
        """Training forward pass: class-major logits ``(k, n_classes, batch)`` and the cache
        for :meth:`backward`.

        ``keep`` holds one ``(k, batch, width)`` float multiplier per hidden layer: 0 where a
        unit is dropped, ``1 / (1 - dropout)`` where it is kept (``None``: no dropout there).
        ``out`` (``(k, n_classes, batch)``) receives the logits when given.
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
        # Class-major logits: (k, n_classes, batch) = kernel^T h^T + bias. With few classes this
        # product and the softmax over the classes (now along a strided axis, vectorised over
        # the batch) both run several times faster than in row-major form.
        logits = torch.baddbmm(
            v.bt, v.bwd[last], h.transpose(1, 2), out=v.zt if out is None else out
        )
        return logits, StepCache(k=k, inputs=inputs, keep=keeps, grad_act=grads, dropped=dropped)

    def backward(self, grad_logits: torch.Tensor, cache: StepCache) -> None:
        """Fill :attr:`grad_weights` / :attr:`grad_biases` of the first ``k`` models.

        ``grad_logits`` is d(loss)/d(logits) in the layout :meth:`forward_train` returns,
        ``(k, n_classes, batch)``; each model's loss is its own (the models are independent), so
        the stacked gradient is every model's gradient.
        """
        v = self._slices(cache.k, grad_logits.shape[2])
        relu = self.activation == "relu"
        g = grad_logits.transpose(1, 2)  # (k, batch, n_classes), a view
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


# --------------------------------------------------------------------------------------------
# Adam, Keras flavour, over stacked weights


# torch's private fused AdamW kernel (what ``torch.optim.AdamW(fused=True)`` calls): the one use
# of a private torch API. tests/training/test_train.py
# (test_stacked_adam_is_keras_adam_with_per_model_steps) runs it against a written-out Keras Adam
# and fails loudly when torch changes or removes it.
HAVE_FUSED_ADAMW = hasattr(torch, "_fused_adamw_")


def fused_adamw(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    state_steps: list[torch.Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    eps: float,
) -> None:
    """One in-place AdamW step of every tensor in ``params`` (``torch._fused_adamw_``).

    ``state_steps`` are 0-d float32 tensors holding each tensor's step count (after this step).
    Decoupled weight decay as in ``torch.optim.AdamW``; no amsgrad, minimising.
    """
    torch._fused_adamw_(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        [],
        state_steps,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        weight_decay=weight_decay,
        eps=eps,
        amsgrad=False,
        maximize=False,
    )


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
        device = self.device = self.params[0].device
        self.t = [0] * n  # step counts, kept on the host: no device sync to read them
        # The fused kernel reads step counts from tensors: 0-d tensors holding 1024 * b + i, by
        # block b (made 1024 at a time, dropped once every model is past them), so a step
        # launches no op to count.
        self._count_blocks: dict[int, tuple[torch.Tensor, ...]] = {}
        if fused is None:
            fused = HAVE_FUSED_ADAMW and device.type in ("cpu", "cuda")
        self.fused = bool(fused)
        self._lists: dict[tuple[int, int], list[list[torch.Tensor]]] = {}

    def _run_lists(self, a: int, b: int) -> list[list[torch.Tensor]]:
        """Params, grads and moments of models ``a..b-1``, as lists for the kernel: each stacked
        tensor's slice ``[a:b]`` (contiguous), so a call takes 4 lists of one tensor per layer
        parameter whatever the number of models (the kernel's cost per tensor is not small)."""
        lists = self._lists.get((a, b))
        if lists is None:
            stacks = (self.params, self.grads, self.exp_avg, self.exp_avg_sq)
            lists = [[t[a:b] for t in stack] for stack in stacks]
            self._lists[(a, b)] = lists
        return lists

    def _count(self, t: int) -> torch.Tensor:
        """A 0-d float32 tensor holding step count ``t`` (on the parameters' device)."""
        block = self._count_blocks.get(t >> 10)
        if block is None:
            done = min(self.t) >> 10  # blocks below every model's count are not needed again
            self._count_blocks = {b: c for b, c in self._count_blocks.items() if b >= done}
            start = (t >> 10) << 10
            block = torch.arange(
                start, start + 1024, dtype=torch.float32, device=self.device
            ).unbind(0)
            self._count_blocks[t >> 10] = block
        return block[t & 1023]

    def step(self, k: int) -> None:
        """Update the first ``k`` models with their gradients (the others are not touched)."""
        t = self.t
        for j in range(k):
            t[j] += 1
        if not self.fused:
            self._step_reference(k)
            return
        a = 0
        for b in range(1, k + 1):
            if b < k and t[b] == t[a]:
                continue
            # Keras adds eps to sqrt(v) before the bias correction: torch's eps / sqrt(1 - b2^t).
            eps = self.eps / math.sqrt(1.0 - self.beta2 ** t[a])
            p, g, m, v = self._run_lists(a, b)
            fused_adamw(
                p,
                g,
                m,
                v,
                [self._count(t[a])] * len(p),
                lr=self.lr,
                beta1=self.beta1,
                beta2=self.beta2,
                weight_decay=self.weight_decay,
                eps=eps,
            )
            a = b

    def _step_reference(self, k: int) -> None:
        """The same update written out with tensor ops (for devices without the fused kernel)."""
        t = torch.as_tensor(self.t[:k], dtype=torch.float64)
        alpha = self.lr * torch.sqrt(1.0 - self.beta2**t) / (1.0 - self.beta1**t)
        alpha = alpha.to(dtype=torch.float32, device=self.params[0].device)
        for i in range(len(self.params)):
            p, g = self.params[i][:k], self.grads[i][:k]
            m, v = self.exp_avg[i][:k], self.exp_avg_sq[i][:k]
            shape = (k,) + (1,) * (p.dim() - 1)
            if self.weight_decay:
                p.mul_(1.0 - self.lr * self.weight_decay)
            m.lerp_(g, 1.0 - self.beta1)
            v.mul_(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
            p.sub_(m / (v.sqrt() + self.eps) * alpha.view(shape))
