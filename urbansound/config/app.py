"""The Hydra application, and the one place where a failure becomes an exit status.

:mod:`urbansound.config.schema` holds the settings' structured-config schemas and the checks (plain
OmegaConf); this module is where they meet Hydra's runtime and the command line:

- :func:`register_configs` stores every schema the config tree (``urbansound/conf``, the named
  sweeps in its group ``sweep``) extends in Hydra's ConfigStore. Nothing registers on import: the
  entry points (:func:`hydra_main`) register before Hydra composes, and so must anything else that
  composes the tree (a test's ``compose``); it is idempotent.
- :func:`hydra_main` makes a Hydra entry point (``urbansound.run``, ``urbansound.fit``) of a task
  ``task(cfg, context)``; :class:`TaskContext` is what the task needs of Hydra's runtime, as plain
  values, so that no task imports ``HydraConfig``.
- :func:`run_command` gives the argparse commands (``urbansound.predict``, ``urbansound.report``)
  the same handling of failures.

Failures, handled here and nowhere else:

- an :class:`~urbansound.errors.UrbansoundError` (a bad value, file or dataset) is one
  ``error: ...`` line on stderr, exit status 2; inside a job of a multirun it is re-raised, so the
  sweeper records the trial as FAIL with its message. One raised by a sweeper is one line too;
- a config Hydra cannot compose (``train.epoch=3``, ``features=mfc``) and a run directory Hydra
  cannot make are one line, exit status 2 (``HYDRA_FULL_ERROR=1`` keeps their tracebacks);
- Ctrl-C is one line, exit status 130: ``error: interrupted; `` and the task's own words about
  what it left behind.
- memory that runs out is one line naming memory, exit status 2: an address-space limit
  (``ulimit -v``) too small to load torch and the training code is found before they are loaded
  (:func:`urbansound.utils.memory.require_memory_for`, at the start of the run and fit tasks;
  predict checks before its features and an MLP's first use), and a ``MemoryError`` (or a
  library's failure to map or allocate, named so in its message) is turned into that line;
- stdout closed by its reader (``predict ... | head -1``): no line, exit status 141 (128 +
  SIGPIPE, what a shell reports for a Unix tool that SIGPIPE killed).

After a task's failure or Ctrl-C, a run directory that holds nothing but Hydra's ``.hydra/`` and
an empty log is removed (it would only clutter ``outputs/``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from urbansound.errors import UrbansoundError
from urbansound.utils.memory import memory_failure, require_memory_for

__all__ = [
    "FIT_CONFIG_NAME",
    "TASK_MODULES",
    "TaskContext",
    "error_line",
    "fit_config_schema",
    "hydra_main",
    "register_configs",
    "run_command",
    "stdout_gone",
]

#: The primary config of ``urbansound.fit``: ``config`` plus the ``fit`` node.
FIT_CONFIG_NAME = "fit"


# --------------------------------------------------------------------------------------------
# Registration


@functools.cache
def fit_config_schema() -> type:
    """``fit_config_schema``: the top-level schema plus a ``fit`` node (``conf/fit.yaml``).

    Its inherited fields are MISSING, so merging it after ``config`` keeps every value composed
    there and only adds ``fit`` (a dict: ``fit.from`` cannot be a dataclass field). The node's
    keys are checked by :func:`urbansound.experiment.fit_source.fit_options`. One class per
    process (cached), so that registering again stores the same node.
    """
    import dataclasses
    import typing

    from omegaconf import MISSING

    from urbansound.config.schema import ConfigSchema

    hints = typing.get_type_hints(ConfigSchema)
    inherited = [
        (f.name, hints[f.name], dataclasses.field(default=MISSING))
        for f in dataclasses.fields(ConfigSchema)
    ]
    schema = dataclasses.make_dataclass(
        "FitConfigSchema",
        [*inherited, ("fit", dict[str, Any], dataclasses.field(default_factory=dict))],
        bases=(ConfigSchema,),
    )
    schema.__module__ = __name__
    return schema


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore; idempotent (each call stores the same nodes).

    ConfigStore names: those of :func:`urbansound.config.schema.schema_nodes` (``config_schema``,
    ``<group>_schema``, ``model_<family>_schema``, ``features_<kind>_schema``) and
    ``fit_config_schema`` (:func:`fit_config_schema`), at the root of the config tree so they are
    no selectable option of any group. :func:`hydra_main` calls it before Hydra composes;
    anything else that composes the tree calls it first.
    """
    from hydra.core.config_store import ConfigStore

    from urbansound.config.schema import schema_nodes

    store = ConfigStore.instance()
    for name, node in schema_nodes().items():
        store.store(name=name, node=node)
    store.store(name="fit_config_schema", node=fit_config_schema())


# --------------------------------------------------------------------------------------------
# Failures


def error_line(exc: BaseException) -> str:
    """``error: <message>`` on one line: the message's lines joined with spaces, SQLAlchemy's
    ``[SQL: ...]``, ``[parameters: ...]`` and ``(Background on this error ...)`` lines dropped
    and a parenthesis the cut left open closed."""
    lines = [
        ln.strip()
        for ln in str(exc).splitlines()
        if ln.strip() and not ln.strip().startswith(("[SQL:", "[parameters:", "(Background on"))
    ]
    text = " ".join(lines) or type(exc).__name__
    return "error: " + text + ")" * max(0, text.count("(") - text.count(")"))


def _exit(line: str, status: int) -> NoReturn:
    print(line, file=sys.stderr)
    sys.exit(status)


def run_command(command: Callable[[], int], *, interrupted: Callable[[], str]) -> int:
    """Run an argparse command's body with the entry points' handling of failures.

    Returns what ``command`` returns (its exit status); 2 after an
    :class:`~urbansound.errors.UrbansoundError`, printed as one :func:`error_line`; 130 after
    Ctrl-C, printed as ``error: interrupted; <interrupted()>`` (the command's words about what
    it left, asked for when it happens); 141 (128 + SIGPIPE, what a shell reports for a Unix
    tool killed by it) when the reader of stdout went away (``predict ... | head -1``), silently.
    """
    try:
        return command()
    except UrbansoundError as exc:
        print(error_line(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"error: interrupted; {interrupted()}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return stdout_gone()
    except (MemoryError, OSError, ImportError, RuntimeError) as exc:
        line = memory_failure(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2


def stdout_gone() -> int:
    """The exit status after the reader of stdout went away: 141 (128 + SIGPIPE).

    Points stdout at ``/dev/null`` first, so that the interpreter's flush at exit does not
    print ``Exception ignored ... BrokenPipeError`` (Python's documented way out).
    """
    import signal

    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 128 + signal.SIGPIPE


# --------------------------------------------------------------------------------------------
# Memory

#: What the run and fit tasks load (as import names: nothing is imported here): torch and the
#: trainer, scikit-learn's families, the feature code (librosa, soundfile, soxr, scipy's BLAS),
#: the figures.
TASK_MODULES = (
    "torch",
    "urbansound.training.cross_validation",
    "urbansound.training.families",
    "urbansound.features.extraction",
    "urbansound.experiment.plots",
)


@dataclass(frozen=True)
class TaskContext:
    """What a Hydra task needs of Hydra's runtime, as plain values.

    Attributes
    ----------
    run_dir:
        The job's directory (``hydra.runtime.output_dir``), made by Hydra before the task runs.
    overrides:
        The command line's task overrides (``hydra.overrides.task``; in a multirun, the job's),
        without those :func:`hydra_main` added for the composition only.
    multirun:
        Whether the task runs as a job of a multirun (a sweep).
    """

    run_dir: Path
    overrides: tuple[str, ...] = ()
    multirun: bool = False


class _HydraTask:
    """The function Hydra runs: the task with its :class:`TaskContext`, failures handled.

    A plain object of this module holding the task (a module-level function), so that launchers
    that run jobs in other processes can pickle it.
    """

    def __init__(self, task: Callable[[Any, TaskContext], Any], interrupted: str) -> None:
        self.task = task
        self.interrupted = interrupted
        self.composition_only: tuple[str, ...] = ()
        functools.update_wrapper(self, task)  # Hydra names the job after the task's module

    def __call__(self, cfg: Any) -> Any:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        context = TaskContext(
            run_dir=Path(hc.runtime.output_dir),
            overrides=tuple(o for o in hc.overrides.task if o not in self.composition_only),
            multirun=hc.mode == RunMode.MULTIRUN,
        )
        _quiet_chatty_libraries()
        try:
            require_memory_for(TASK_MODULES, doing="loading torch and the training code")
            return self.task(cfg, context)
        except (MemoryError, OSError, ImportError, RuntimeError) as exc:
            line = memory_failure(exc)
            if line is None:
                raise
            if context.multirun:
                raise UrbansoundError(line) from None
            _remove_if_untouched(context.run_dir)
            _exit(f"error: {line}", 2)
        except UrbansoundError as exc:
            if context.multirun:
                raise  # the sweeper records the trial as failed, with this message
            _remove_if_untouched(context.run_dir)
            _exit(error_line(exc), 2)
        except KeyboardInterrupt:
            if context.multirun:
                raise  # the sweeper queues the trial again and says so
            _remove_if_untouched(context.run_dir)
            words = self.interrupted.format(run_dir=context.run_dir)
            _exit(f"error: interrupted; {words}", 130)
        except BrokenPipeError:
            if context.multirun:
                raise
            sys.exit(stdout_gone())  # `python -m urbansound.fit ... | head -1`


def hydra_main(
    task: Callable[[Any, TaskContext], Any],
    *,
    interrupted: str,
    config_name: str | None = None,
    composition_choices: Callable[[Sequence[str]], list[str]] | None = None,
) -> Callable[..., Any]:
    """The entry point of a Hydra task: ``@hydra.main`` over the packaged config, failures
    handled as the module docstring says.

    Parameters
    ----------
    task:
        ``task(cfg, context)``, a module-level function (Hydra names the job, and its log file,
        after its module: ``run``, ``fit``); its return value is the job's (a sweep's objective).
    interrupted:
        The task's words after ``error: interrupted; `` on Ctrl-C; ``{run_dir}`` is replaced by
        the run directory.
    config_name:
        The primary config: :data:`~urbansound.config.schema.CONFIG_NAME` (``urbansound.run``,
        the default) or :data:`FIT_CONFIG_NAME`, composed from
        :data:`~urbansound.config.schema.CONFIG_PATH` (so the console script,
        ``python -m urbansound.run`` and an installed wheel all find it, from any directory).
    composition_choices:
        ``composition_choices(argv)`` gives group choices (``model=random_forest``) added to the
        command line for Hydra's composition only (not in ``context.overrides``); not asked
        when the command line holds a flag (``--help``, ``-m``, ``--cfg``).

    Returns
    -------
    Callable
        ``main(cfg_passthrough=None)``, Hydra's decorated function.
    """
    hydra_task = _HydraTask(task, interrupted)

    @functools.wraps(task)
    def main(cfg_passthrough: Any = None) -> Any:
        import hydra

        from urbansound.config.schema import CONFIG_NAME, CONFIG_PATH

        register_configs()
        name = config_name or CONFIG_NAME
        decorated = hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=name)(
            hydra_task
        )
        if cfg_passthrough is not None:
            return decorated(cfg_passthrough)
        argv = sys.argv[1:]
        try:
            refuse_url_passwords(argv)
        except UrbansoundError as exc:
            _exit(error_line(exc), 2)
        if composition_choices is not None and not any(a.startswith("-") for a in argv):
            hydra_task.composition_only = tuple(composition_choices(argv))
            sys.argv[1:1] = hydra_task.composition_only
        return _run_hydra(decorated, task)

    return main


def refuse_url_passwords(argv: Sequence[str]) -> None:
    """Refuse a command line whose override holds a URL with a password, before Hydra runs.

    Hydra writes every override into the run directory (``.hydra/overrides.yaml``,
    ``hydra.yaml``, ``multirun.yaml``) and its log before any task or sweeper can look at it, so
    a password in ``hydra.sweeper.storage``, ``trial.storage``, ``fit.from`` or any other key
    would land in files, whether the run is a sweep or not
    (:func:`urbansound.utils.redaction.has_password` says which values hold one).

    Raises
    ------
    ConfigError
        Naming the key, with the URL's password hidden, and the ways that keep it out of files.
    """
    from urbansound.errors import ConfigError
    from urbansound.utils.redaction import has_password, redact_url

    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or "://" not in value:
            continue
        value = value.strip("'\"")
        if has_password(value):
            raise ConfigError(
                f"{key.lstrip('+~')}={redact_url(value)}: a password in a URL on the command line "
                "would be written into the run's .hydra/ files and log: remove it from the URL and "
                "give it "
                "through PGPASSWORD or ~/.pgpass (PostgreSQL), or name the environment variable "
                "that holds it (hydra.sweeper.storage_password_env=VAR for a sweep; a sweep "
                "directory as fit.from, whose study.json names it)"
            )


def _run_hydra(decorated: Callable[[], Any], task: Callable[..., Any]) -> Any:
    """``decorated()`` with what escapes Hydra turned into one line (module docstring)."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import OmegaConfBaseException

    from urbansound.config.schema import config_error

    # Hydra prints an exception itself unless HYDRA_FULL_ERROR=1: set it for this call only,
    # so that the error reaches us, then print our line (or re-raise what is no user error).
    full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        return decorated()
    except UrbansoundError as exc:  # raised outside the task: by a sweeper, for one
        _exit(error_line(exc), 2)
    except (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
        OmegaConfBaseException,
    ) as exc:
        if full:
            raise
        _exit(error_line(config_error(exc)), 2)
    except (OSError, ValueError) as exc:
        # Hydra creates the run directory and its log file before the task starts: one that
        # cannot be written is a bad hydra.run.dir / hydra.sweep.dir, not a bug.
        cause = _os_error(exc)
        if full or cause is None or _raised_in(exc, task):
            raise
        from urbansound.utils.files import output_error

        _exit(
            f"error: {output_error(cause.filename, cause)} (the run directory: "
            "hydra.run.dir, or hydra.sweep.dir for -m)",
            2,
        )
    finally:
        if not full:
            os.environ.pop("HYDRA_FULL_ERROR", None)


def _raised_in(exc: BaseException, function: Callable[..., Any]) -> bool:
    """Whether ``exc`` came from inside ``function`` (its traceback passes through it)."""
    code = getattr(function, "__code__", None)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return True
        tb = tb.tb_next
    return False


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError naming a file in ``exc`` or its causes (logging wraps one in a ValueError)."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, OSError) and exc.filename is not None:
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _remove_if_untouched(run_dir: Path) -> None:
    """Remove the run directory Hydra made for a task that stopped before writing anything.

    A config error or a bad dataset stops the task before its first output: what is left is
    Hydra's ``.hydra/`` and an empty log, a directory that would only clutter ``outputs/``.
    Anything else in it (a ``config.yaml``, a non-empty log, a user's file) keeps it.
    """
    import re
    import shutil

    try:
        entries = list(run_dir.iterdir())
        if all(
            (p.name == ".hydra" and p.is_dir()) or (p.suffix == ".log" and p.stat().st_size == 0)
            for p in entries
        ):
            shutil.rmtree(run_dir)
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", run_dir.parent.name):  # Hydra's date folder
                run_dir.parent.rmdir()  # when this run was its only one (else: not empty, kept)
    except OSError:
        pass  # not ours to insist on


# Libraries whose DEBUG output floods `hydra.verbose=true` (matplotlib's font scan alone is ~150
# lines); left at WARNING unless a user names them (`hydra.verbose=[matplotlib]`).
_CHATTY_LIBRARIES = ("matplotlib", "PIL", "numba", "urllib3", "asyncio", "git", "comet_ml")


def _quiet_chatty_libraries() -> None:
    """Keep third-party DEBUG logging out of ``hydra.verbose=true`` (which sets the root logger
    to DEBUG); a logger the user set explicitly keeps its level."""
    import logging

    for name in _CHATTY_LIBRARIES:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
