"""The evaluation protocol: which clips train and test each model, and how the protocol is named.

UrbanSound8K comes in ten folds, and the slices cut from one recording (one ``fsID``) share a
fold. Its authors' rules for using them, from the common pitfalls the dataset's README warns of
(J. Salamon, C. Jacoby and J. P. Bello, https://urbansounddataset.weebly.com/urbansound8k.html):

    1. Don't reshuffle the data! Use the predefined 10 folds and perform 10-fold (not 5-fold)
    cross validation. [...] If you reshuffle the data (e.g. combine the data from all folds and
    generate a random train/test split) you will be incorrectly placing related samples in both
    the train and test sets, leading to inflated scores that don't represent your model's
    performance on unseen data. Put simply, your results will be wrong.

    2. Don't evaluate just on one split! Use 10-fold (not 5-fold) cross validation and average
    the scores.

So the splits are built from the metadata's ``fold`` column and never reshuffled, and by default
each fold with clips is the test fold once (a run reports the mean and spread over the folds).
The ``cv`` config group chooses:

- ``cv=folds`` (default): one :class:`Split` per fold with clips (:func:`fold_splits`), or only
  the folds in ``cv.folds``;
- ``cv.outer_fold=k``: fold ``k`` is held out of a search (:func:`select_clips` drops it), and
  ``cv.evaluate_outer=true`` evaluates a search's winner once on it (train on every other fold);
- ``cv=random_split``: the tutorial's random train/test split (:func:`random_split`), exactly
  the reshuffle the authors warn against: LEAKY on UrbanSound8K, and labelled so by
  :func:`protocol_label` in every output.

Plain arrays in, :class:`Split` lists out; nothing here trains. Where the metadata itself puts
slices of one recording into two folds, :func:`urbansound.data.index.load_index` says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from urbansound.config.settings import CVSettings
from urbansound.errors import ConfigError, DataError

log = logging.getLogger(__name__)

__all__ = [
    "Split",
    "build_splits",
    "fold_splits",
    "protocol_label",
    "random_split",
    "select_clips",
]


@dataclass(frozen=True)
class Split:
    """One train/test partition of the rows of ``X``."""

    fold: int | str  # the test fold's number (1..10), or a label such as "random"
    train: np.ndarray  # int indices into X
    test: np.ndarray


def fold_splits(folds: np.ndarray, *, test_folds: Sequence[int] | None = None) -> list[Split]:
    """One :class:`Split` per fold that has clips: test = that fold, train = every other fold.

    The dataset's own folds, as its authors ask (see the module docstring): ``folds`` is taken as
    given, never reshuffled or regrouped.

    Parameters
    ----------
    folds:
        The fold number of every row of ``X``.
    test_folds:
        Only these folds are held out (each still trains on all other folds); ``None`` = every
        fold present. A listed fold without clips raises :class:`~urbansound.errors.DataError`
        naming ``cv.folds``.

    Returns
    -------
    list of Split
        In the order of ``test_folds`` (ascending fold numbers when ``None``); ``train`` and
        ``test`` are ascending row indices.

    Raises
    ------
    DataError
        A listed fold has no clips, or fewer than 2 folds have clips.
    """
    folds = np.asarray(folds)
    present = sorted(int(f) for f in np.unique(folds))
    if test_folds is None:
        wanted = present
    else:
        wanted = [int(f) for f in test_folds]
        absent = [f for f in wanted if f not in present]
        if absent:
            raise DataError(
                f"cv.folds lists fold(s) {absent} but no clip of the dataset is in them "
                f"(folds with clips: {present}); drop them from cv.folds"
            )
    if len(present) < 2:
        raise DataError(
            f"cross-validation needs clips in at least 2 folds, found folds {present}; "
            "add data or use cv=random_split"
        )
    splits = []
    for f in wanted:
        is_test = folds == f
        splits.append(Split(fold=f, train=np.flatnonzero(~is_test), test=np.flatnonzero(is_test)))
    return splits


def random_split(
    n: int, *, test_size: float, seed: int, stratify: np.ndarray | None = None
) -> list[Split]:
    """The tutorial's random train/test split (``fold="random"``): one :class:`Split`.

    LEAKY on UrbanSound8K: slices of one recording land on both sides, so its accuracy is far
    above what the fold protocol measures. It exists to reproduce the tutorial and is labelled as
    such wherever a result is reported. Equal to ``sklearn.model_selection.train_test_split(
    range(n), test_size=test_size, random_state=seed, stratify=stratify)``.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_size < 1.0:
        raise ConfigError(f"cv.test_size must be between 0 and 1, got {test_size}")
    if n < 2:
        raise DataError(f"a random split needs at least 2 clips, got {n}")
    try:
        train, test = train_test_split(
            np.arange(n), test_size=test_size, random_state=seed, stratify=stratify
        )
    except ValueError as exc:  # e.g. a class with one clip under stratification
        raise DataError(f"cannot split {n} clips with cv.test_size={test_size}: {exc}") from None
    return [Split(fold="random", train=np.sort(train), test=np.sort(test))]


def select_clips(cv: CVSettings, clips: pd.DataFrame) -> pd.DataFrame:
    """The clips the protocol uses: all, or all but ``cv.outer_fold`` when a search holds it out.

    ``clips`` is the dataset index's table (a ``fold`` column). The random split drops the outer
    fold too, so it splits the same clips as a search that holds that fold out. Raises
    :class:`~urbansound.errors.DataError` naming ``cv.outer_fold`` when that fold has no clips
    (neither holding it out nor evaluating on it would mean anything).
    """
    if cv.outer_fold is None:
        return clips
    present = sorted(int(f) for f in clips["fold"].unique())
    if cv.outer_fold not in present:
        raise DataError(
            f"cv.outer_fold={cv.outer_fold} names a fold with no clips in this dataset (folds "
            f"with clips: {present}); choose one of them or set cv.outer_fold=null"
        )
    if cv.evaluate_outer and cv.name != "random_split":
        return clips
    kept = clips[clips["fold"] != cv.outer_fold]
    log.info("outer fold %d held out of the search: %d clips left", cv.outer_fold, len(kept))
    return kept


def build_splits(cv: CVSettings, folds: np.ndarray, y: np.ndarray) -> list[Split]:
    """The train/test splits of the configured protocol over clips with fold labels ``folds``.

    ``folds`` and ``y`` are the rows of :func:`select_clips`'s result that have features. With
    ``cv.evaluate_outer`` the one split trains on every other fold and tests on fold
    ``cv.outer_fold``.
    """
    if cv.name == "random_split":
        return random_split(len(y), test_size=cv.test_size, seed=cv.seed, stratify=y)
    if cv.evaluate_outer:  # a search's winner, tested once on the fold the search never saw
        if cv.outer_fold not in set(np.asarray(folds).tolist()):
            raise DataError(
                f"cv.outer_fold={cv.outer_fold}: none of its clips has features (all skipped); "
                "choose another fold"
            )
        return fold_splits(folds, test_folds=[cv.outer_fold])
    return fold_splits(folds, test_folds=cv.folds)


def protocol_label(cv: CVSettings) -> str:
    """How the protocol is named in every output; the leaky random split says so."""
    if cv.name == "random_split":
        return "random_split (LEAKY: slices of one recording in train and test)"
    if cv.evaluate_outer:
        return f"folds (outer fold {cv.outer_fold} evaluation: trained on the other folds)"
    if cv.outer_fold is not None:
        return f"folds (outer fold {cv.outer_fold} held out)"
    return "folds"
