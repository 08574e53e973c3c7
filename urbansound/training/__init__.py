"""Cross-validated training: features, labels and splits in, a typed result out.

Modules
-------
cross_validation
    :func:`~urbansound.training.cross_validation.cross_validate`, the one entry: hands a
    :class:`~urbansound.training.problem.CVProblem` to the trainer of ``model.family``.
problem
    :class:`~urbansound.training.problem.CVProblem` (the inputs, checked once, and the
    :class:`~urbansound.training.results.CVResult` built from test probabilities) and the
    :class:`~urbansound.training.problem.Trainer` call every family answers.
lockstep
    The MLP's trainer: deals the folds to groups, drives them epoch by epoch, chooses the device.
lockstep_group
    One group of folds trained together as one stacked model: the training step, the evaluation,
    the loss on the device.
child_groups
    Groups in child processes, driven over a pipe (Linux).
fork_server
    The single-threaded process those children are forked from, and their lifetimes.
seeds
    Each fold's random streams (initialisation, shuffling, dropout) from ``(train.seed, fold)``.
mlp
    The Keras-equivalent MLP: initialisation, the stacked forward and backward passes, Adam.
families
    The scikit-learn families: estimators, pipelines, staged fitting for pruning.
contract
    What a family's classifier must be before it is made (an estimator class, nothing called)
    and give on every split (finite probabilities summing to 1, integer class ids).
metrics
    The one loss, the confusion matrix and a fold's result.
results
    The typed results (per epoch, per fold, per run) and their reading back from JSON.
"""
