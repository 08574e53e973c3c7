"""Cross-validated training: :func:`cross_validate` turns features, labels and splits into a
typed :class:`~urbansound.training.results.CVResult`.

``model.family`` chooses what is trained: every family but the MLP is a scikit-learn pipeline
(:mod:`urbansound.training.families`, same splits, same result type). For the MLP (``model=mlp``,
the default), it trains one Keras-equivalent MLP per :class:`~urbansound.data.cv.Split` and
evaluates every model on its test part after every epoch, so a run yields a per-epoch
cross-validation curve (for pruning and tracking) as well as the final per-fold metrics. The folds'
models train together as one stacked model (:mod:`urbansound.training.lockstep`), each exactly the
model Keras would train on its own.

The call has one shape: a :class:`~urbansound.training.problem.CVProblem` (features, labels,
splits, the model and train settings; checked when it is made) and keyword-only options, the
same for every family's trainer (:class:`~urbansound.training.problem.Trainer`).

Features are standardised per fold with the mean and standard deviation of that fold's training
part only (``train.standardize``; the ``tutorial`` preset turns it off). For the MLP, a
``train.batch_size`` larger than every fold's training part is clipped to the largest one (one
log line): a batch cannot hold more clips than there are, and the trainer's buffers grow with the
batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from urbansound.training.families import cross_validate_sklearn
from urbansound.training.lockstep import train_folds
from urbansound.training.problem import CVProblem, Trainer
from urbansound.training.results import CVResult, EpochCallback

__all__ = ["cross_validate"]


def cross_validate(
    problem: CVProblem,
    *,
    callbacks: Sequence[EpochCallback] = (),
    progress: bool = True,
    keep_models: bool = False,
) -> CVResult:
    """Train one model per split and evaluate each on its test part every epoch (or stage).

    ``problem.model.family`` chooses the trainer: the MLP trains all splits in lockstep
    (:func:`urbansound.training.lockstep.train_folds`), every other family is a scikit-learn
    pipeline fitted per split (:func:`urbansound.training.families.cross_validate_sklearn`, which
    documents its stages).

    Parameters
    ----------
    problem:
        Features ``(n_clips, n_features)``, class ids ``(n_clips,)``, the splits, the number of
        classes and the ``model`` and ``train`` settings (:class:`CVProblem`; making one checks
        them and raises :class:`~urbansound.errors.DataError` naming what is wrong).
    callbacks:
        Called with the :class:`EpochMetrics` of every epoch; an exception raised by one
        (:class:`~urbansound.errors.TrialPruned`) stops training and propagates.
    progress:
        Show a progress bar over epochs with the mean test accuracy.
    keep_models:
        Also return every split's trained model (``CVResult.models``: :class:`FittedMLP` for
        the MLP, the fitted scikit-learn ``Pipeline`` for the other families).

    Returns
    -------
    CVResult
        Final per-fold metrics (after the last epoch), the per-epoch history, the mean and
        standard deviation of the folds' accuracies, and every fold's test probabilities.
    """
    trainer: Trainer = train_folds if problem.model.family == "mlp" else cross_validate_sklearn
    return trainer(problem, callbacks=callbacks, progress=progress, keep_models=keep_models)
