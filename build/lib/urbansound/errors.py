"""Exception types shared by the package.

Errors a user can cause (a bad override, a missing dataset, an unreadable clip) are
:class:`UrbansoundError`: the entry points print their message as one line, without a traceback.
"""

from __future__ import annotations


class UrbansoundError(Exception):
    """An error the user can fix; the message says what was wrong and what to do."""


class ConfigError(UrbansoundError):
    """A configuration value is invalid; the message names the key and what is allowed."""


class DataError(UrbansoundError):
    """The dataset folder or its metadata is unusable."""


class AudioError(UrbansoundError):
    """A clip cannot be decoded; the message names the file."""


class OutputError(UrbansoundError):
    """A file or directory cannot be written (read-only, full disk, something in the way).

    The message names the path and what to do.
    """


class TrialPruned(Exception):
    """Raised from an epoch callback to stop training early (an Optuna pruner said so).

    Attributes
    ----------
    epoch:
        The 1-based epoch after which training stopped.
    value:
        The objective (mean CV accuracy) reported at that epoch.
    """

    def __init__(self, epoch: int, value: float) -> None:
        super().__init__(f"trial pruned after epoch {epoch} (mean CV accuracy {value:.4f})")
        self.epoch = epoch
        self.value = value
