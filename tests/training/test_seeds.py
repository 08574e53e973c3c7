"""Each fold's random streams: seeds from (train.seed, fold) only, dropout masks at the rate."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from urbansound.config.settings import TrainSettings
from urbansound.training.seeds import (
    FoldRandom,
    dropout_bits,
    fold_init_params,
    fold_seeds,
    unpack_keep,
)


def test_fold_seeds_depend_on_seed_and_fold_only() -> None:
    assert fold_seeds(0, 1) == fold_seeds(0, 1)
    assert len({fold_seeds(0, f) for f in [1, 2, "random"]} | {fold_seeds(1, 1)}) == 4
    sizes = [4, 5, 3]
    a = fold_init_params(sizes, seed=0, fold=2)
    b = fold_init_params(sizes, seed=0, fold=2)
    assert all(torch.equal(x[0], z[0]) for x, z in zip(a, b, strict=True))
    assert replace(TrainSettings(), seed=1) != TrainSettings()


def test_dropout_bits_are_the_rates_binary_digits() -> None:
    assert dropout_bits(0.5) == (1,)
    assert dropout_bits(0.25) == (0, 1)
    assert dropout_bits(0.75) == (1, 1)
    assert dropout_bits(0.0) == ()
    digits = dropout_bits(0.3)
    assert len(digits) == 16
    assert sum(b / 2 ** (i + 1) for i, b in enumerate(digits)) == 19661 / 65536


@pytest.mark.parametrize("rate", [0.5, 0.25, 0.3, 0.1])
def test_keep_bits_drop_units_independently_at_the_rate(rate: float) -> None:
    stream = FoldRandom(fold_seeds(0, 1))
    steps, batch, width = 40, 32, 96
    bits = stream.keep_bits(steps, batch, width, rate)
    assert bits.shape == (steps, 8 * math.ceil(batch * width / 64)) and bits.dtype == np.uint8
    keep = unpack_keep(bits, batch, width).astype(np.float64)
    assert keep.shape == (steps, batch, width) and set(np.unique(keep)) == {0.0, 1.0}
    n = keep.size  # 122 880 units: the drop rate is within 4 standard errors
    assert 1 - keep.mean() == pytest.approx(rate, abs=4 * math.sqrt(rate * (1 - rate) / n))
    # No structure across units, rows or steps: neighbours are uncorrelated.
    for a, b in [
        (keep[..., 1:], keep[..., :-1]),
        (keep[:, 1:], keep[:, :-1]),
        (keep[1:], keep[:-1]),
    ]:
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.02
    # The next epoch draws new masks.
    assert not np.array_equal(stream.keep_bits(steps, batch, width, rate), bits)
