"""Each fold's random streams, derived from ``(train.seed, fold)`` only.

A fold's initial weights (:func:`fold_init_params`), the order of its training clips every epoch
and its dropout masks (:class:`FoldRandom`) come from three streams seeded by
:func:`fold_seeds`. They are drawn on the host, so a fold trains the same whether it trains alone
or beside others, in this process or a child, on any device.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from urbansound.training.mlp import init_params

__all__ = [
    "FoldRandom",
    "FoldSeeds",
    "dropout_bits",
    "fold_init_params",
    "fold_seeds",
    "unpack_keep",
]


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
