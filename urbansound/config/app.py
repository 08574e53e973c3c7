"""The Hydra application: our schemas in Hydra's ConfigStore, and the entry points' decorator.

:mod:`urbansound.config.schema` holds the settings' structured-config schemas and the checks (plain
OmegaConf); this module is where they meet Hydra's runtime:

- :func:`register_configs` (run on import) stores every schema in Hydra's ConfigStore; the group
  files of the config tree (``urbansound/conf``, the named sweeps in its group ``sweep``) extend
  them;
- :func:`hydra_main` is ``@hydra.main`` over the packaged config for ``urbansound.run`` and
  ``urbansound.fit``: a config Hydra cannot compose is one ``error:`` line, exit status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from urbansound.config.schema import (
    CONFIG_NAME,
    CONFIG_PATH,
    FEATURE_SCHEMAS,
    GROUP_SCHEMAS,
    MODEL_SCHEMAS,
    ConfigSchema,
    config_error,
    sklearn_node,
)
from urbansound.config.settings import EMBEDDING_KINDS

__all__ = ["hydra_main", "register_configs"]


def register_configs() -> None:
    """Register the schemas in Hydra's ConfigStore.

    ConfigStore names: ``config_schema`` (top level), ``<group>_schema`` for each group and
    ``model_<family>_schema`` for each model family (``model_schema`` is the MLP's) and
    ``features_<kind>_schema`` for each embedding kind, at the root of the config tree so they
    are no selectable option of any group. Called on import; idempotent.
    """
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="config_schema", node=ConfigSchema)
    for group, schema in GROUP_SCHEMAS.items():
        store.store(name=f"{group}_schema", node=schema)
    for family, schema in MODEL_SCHEMAS.items():
        store.store(name=f"model_{family}_schema", node=schema)
    store.store(name="model_sklearn_schema", node=sklearn_node())
    for kind in EMBEDDING_KINDS:
        store.store(name=f"features_{kind}_schema", node=FEATURE_SCHEMAS[kind])


# --------------------------------------------------------------------------------------------
# The entry points' decorator.


def hydra_main(
    task_function: Callable[[Any], Any], *, config_name: str = CONFIG_NAME
) -> Callable[..., Any]:
    """``@hydra.main`` of our entry points: the packaged config, a bad config as one line.

    Composes ``config_name`` (:data:`CONFIG_NAME` for ``urbansound.run``, ``fit`` for
    ``urbansound.fit``) from :data:`CONFIG_PATH` (so the ``urbansound`` console script,
    ``python -m urbansound.run`` and an installed wheel all find it, from any working directory).
    A config Hydra cannot compose (``train.epoch=3``, ``train.epochs=many``, ``features=mfc``) and
    an :class:`~urbansound.errors.UrbansoundError` that reaches Hydra are printed as one
    ``error: ...`` line, exit status 2, instead of Hydra's message and exit 1. With
    ``HYDRA_FULL_ERROR=1`` every error keeps its full traceback.
    """
    import functools
    import os

    import hydra
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import OmegaConfBaseException

    from urbansound.errors import UrbansoundError

    decorated = hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=config_name)(
        task_function
    )

    @functools.wraps(task_function)
    def main(cfg_passthrough: Any = None) -> Any:
        if config_name == CONFIG_NAME:  # the `urbansound` console script's help and completion
            _name_the_command()
        if cfg_passthrough is not None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            return decorated(cfg_passthrough)
        # Hydra prints an exception itself unless HYDRA_FULL_ERROR=1: set it for this call only,
        # so that the error reaches us, then print our line (or re-raise what is no user error).
        os.environ["HYDRA_FULL_ERROR"] = "1"
        try:
            return decorated()
        except UrbansoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except (
            ConfigCompositionException,
            MissingConfigException,
            OverrideParseException,
            OmegaConfBaseException,
        ) as exc:
            print(f"error: {config_error(exc)}", file=sys.stderr)
            sys.exit(2)
        except (OSError, ValueError) as exc:
            # Hydra creates the run directory and its log file before the task starts: one
            # that cannot be written is a bad hydra.run.dir / hydra.sweep.dir, not a bug.
            cause = _os_error(exc)
            if cause is None or _raised_in(exc, task_function):
                raise
            from urbansound.utils.files import output_error

            print(
                f"error: {output_error(cause.filename, cause)} (the run directory: "
                "hydra.run.dir, or hydra.sweep.dir for -m)",
                file=sys.stderr,
            )
            sys.exit(2)
        finally:
            os.environ.pop("HYDRA_FULL_ERROR", None)

    return main


def _raised_in(exc: BaseException, function: Callable[..., Any]) -> bool:
    """Whether ``exc`` came from inside ``function`` (its traceback passes through it)."""
    code = getattr(function, "__code__", None)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return True
        tb = tb.tb_next
    return False


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError naming a file in ``exc`` or its causes (logging wraps one in a ValueError)."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, OSError) and exc.filename is not None:
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


_COMMAND_FLAGS = ("--hydra-help", "-sc", "--shell-completion")


def _name_the_command() -> None:
    """``python -m urbansound.run --hydra-help`` or ``-sc install=bash``: say ``urbansound``.

    Hydra names the command after ``sys.argv[0]``: the path of ``run.py`` when started with
    ``python -m``, which its help would print as ``python /.../run.py`` and its bash completion
    would register for every ``python`` command. Both should name the installed console script,
    the command that completion works for; only these flags see the change.
    """
    if sys.argv[0].endswith(".py") and any(
        arg.split("=")[0] in _COMMAND_FLAGS for arg in sys.argv[1:]
    ):
        sys.argv[0] = "urbansound"


register_configs()
