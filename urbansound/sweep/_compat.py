"""Every use of a private Optuna or Hydra API, each behind one function, and the one way Optuna
is kept quiet about the experimental features this package uses on purpose.

``tests/sweep/test_sweep_compat.py`` calls each of them against the installed libraries, so an
upgrade that changes one fails there, loudly and by name, instead of somewhere inside a sweep.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def quiet_optuna(*, info: bool = True) -> Iterator[None]:
    """Silence Optuna's notices about experimental features this package uses on purpose.

    With ``info=False`` Optuna's INFO log lines are silenced too while the block runs (a
    reader's in-memory study would announce itself on the console); Optuna's verbosity is
    restored afterwards. The sweeper keeps them: "A new study created" is worth a line.
    """
    import optuna

    verbosity = optuna.logging.get_verbosity()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message=".*is experimental")
        if not info:
            optuna.logging.set_verbosity(max(verbosity, optuna.logging.WARNING))
        try:
            yield
        finally:
            optuna.logging.set_verbosity(verbosity)


def live_trial(study: Any, trial_id: int) -> Any:
    """An ``optuna.Trial`` for a RUNNING trial created elsewhere (the job side of a sweep).

    Optuna has no public constructor for this; ``Trial(study, trial_id)`` is what
    ``Study.ask`` itself uses. Its ``report`` and ``should_prune`` are public.
    """
    import optuna

    return optuna.trial.Trial(study, trial_id)


def job_exception(ret: Any) -> BaseException | None:
    """The exception a failed Hydra job raised, from its ``JobReturn``.

    The public ``JobReturn.return_value`` re-raises it (and logs it to stderr); the exception
    object itself is only in the private ``_return_value``.
    """
    error = ret._return_value
    if error is not None and not isinstance(error, BaseException):
        raise TypeError(f"hydra JobReturn._return_value is {type(error).__name__}, not an error")
    return error


def set_trial_system_attr(study: Any, trial: Any, key: str, value: Any) -> None:
    """Set a system attribute on the trial a sampler's ``before_trial`` receives (frozen).

    Optuna's own ``GridSampler`` does this through the private ``study._storage`` and
    ``FrozenTrial._trial_id``; there is no public way from inside a sampler.
    """
    study._storage.set_trial_system_attr(trial._trial_id, key, value)
