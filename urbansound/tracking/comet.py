"""comet_ml access: its configuration, its console output, and creating an experiment.

The only module that imports ``comet_ml`` (lazily, see :func:`import_comet`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shlex
import ssl
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from urbansound.tracking.archives import remove_incomplete
from urbansound.tracking.naming import reason
from urbansound.utils.files import output_error

if TYPE_CHECKING:
    from urbansound.config.settings import Settings

log = logging.getLogger("urbansound.tracking")

#: Comet project when neither Comet's configuration nor ``tracking.project_name`` names one.
DEFAULT_PROJECT_NAME = "urbansound8k"


#: Offline directory when neither Comet's configuration nor ``tracking.offline_dir`` names one.
DEFAULT_OFFLINE_DIR = "outputs/comet"


#: Comet settings applied as environment defaults before ``comet_ml`` is first imported.
COMET_ENV_DEFAULTS: dict[str, str] = {
    "COMET_DISABLE_AUTO_LOGGING": "1",
    "COMET_ERROR_TRACKING_ENABLE": "false",
    "COMET_LOGGING_CONSOLE": "WARNING",
    "COMET_DISABLE_ANNOUNCEMENT": "true",
}


#: Comet's variables that say where experiments go; empty ones count as not set.
_LOCATION_VARIABLES = ("COMET_PROJECT_NAME", "COMET_WORKSPACE", "COMET_OFFLINE_DIRECTORY")


#: Seconds to wait for Comet's server to answer its version check in online mode.
PROBE_TIMEOUT_S = 3.0


def import_comet() -> Any:
    """Import ``comet_ml`` with this project's Comet defaults (see the package docstring).

    Comet's console lines are kept to one line each: tracebacks are left out and a message
    repeated (a streaming error on a full disk, for one) is printed once.
    """
    for key, value in COMET_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    import comet_ml

    for handler in logging.getLogger("comet_ml").handlers:
        if not any(isinstance(f, _OneLine) for f in handler.filters):
            handler.addFilter(_OneLine())
    return comet_ml


class _OneLine(logging.Filter):
    """Comet's console records without their traceback, each distinct message once."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and record.levelno >= logging.WARNING:
            record.msg = f"{record.getMessage()} ({reason(record.exc_info[1])})"
            record.args = ()
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        message = record.getMessage()
        if message in self._seen:
            return False
        self._seen.add(message)
        return True


@dataclass(frozen=True)
class CometSettings:
    """Where experiments go: Comet's configuration with ``tracking.*`` on top where set."""

    project_name: str
    workspace: str | None
    offline_dir: Path  # absolute


def comet_settings(settings: Settings) -> CometSettings:
    """Project, workspace and offline directory, resolved by comet_ml's own precedence.

    Each of ``tracking.project_name`` / ``workspace`` / ``offline_dir`` wins when set (not
    ``None``); otherwise Comet's configured value (``COMET_PROJECT_NAME``, ``COMET_WORKSPACE``,
    ``COMET_OFFLINE_DIRECTORY`` or the same keys in Comet's config files); otherwise
    :data:`DEFAULT_PROJECT_NAME`, the API key's default workspace (``None``) and
    :data:`DEFAULT_OFFLINE_DIR`. An empty (or blank) value at any level counts as not set. ``~``
    is expanded; a relative directory is taken from the working directory.
    """
    import_comet()
    from comet_ml.config import get_config

    # an empty variable (`COMET_OFFLINE_DIRECTORY= urbansound ...`) is "not set": Comet's config
    # files and then our defaults apply (it would otherwise put archives into the working directory)
    empty = {k: "" for k in _LOCATION_VARIABLES if os.environ.get(k, "x").strip() == ""}
    for k in empty:
        del os.environ[k]
    try:
        config = get_config()
        ts = settings.tracking

        def pick(ours: str | None, key: str, default: str | None) -> str | None:
            # an empty value (`offline_directory =` in a config file, tracking.offline_dir='')
            # is "not set" too
            value = ours if ours is not None and str(ours).strip() else None
            value = config.get_string(value, key, default=default)
            return str(value) if value is not None and str(value).strip() else default

        project = pick(ts.project_name, "comet.project_name", DEFAULT_PROJECT_NAME)
        workspace = pick(ts.workspace, "comet.workspace", None)
        offline = pick(ts.offline_dir, "comet.offline_directory", DEFAULT_OFFLINE_DIR)
    finally:
        os.environ.update(empty)
    return CometSettings(
        project_name=str(project),
        workspace=str(workspace) if workspace else None,
        offline_dir=Path(str(offline)).expanduser().absolute(),
    )


@contextlib.contextmanager
def comet_quiet() -> Iterator[list[str]]:
    """Comet's console lines (and Python's "Exception ignored in" ones) kept from the console.

    Yields a list that collects each warning or error Comet logged, as one line with the reason
    of its exception, so that the caller can say what happened in one warning of its own.
    """
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            exc = record.exc_info[1] if record.exc_info else None
            lines.append(reason(exc) if exc is not None else record.getMessage())

    comet_logger = logging.getLogger("comet_ml")
    saved = (comet_logger.handlers[:], comet_logger.propagate, comet_logger.level)
    saved_hook = sys.unraisablehook
    comet_logger.handlers = [Collect(logging.WARNING)]
    comet_logger.propagate = False
    comet_logger.setLevel(logging.WARNING)
    sys.unraisablehook = lambda u: lines.append(reason(u.exc_value) if u.exc_value else "")
    try:
        yield lines
        gc.collect()  # a half-written zip file left to the collector closes here, quietly
    finally:
        sys.unraisablehook = saved_hook
        comet_logger.handlers, comet_logger.propagate = saved[0], saved[1]
        comet_logger.setLevel(saved[2])


@contextlib.contextmanager
def _argv(command: str) -> Iterator[None]:
    """``sys.argv`` as the re-run command while Comet records it (its ``command`` field)."""
    saved = sys.argv
    sys.argv = shlex.split(command)
    try:
        yield
    finally:
        sys.argv = saved


def api_key() -> str | None:
    """The API key Comet would use (``COMET_API_KEY`` or its config file), if any."""
    from comet_ml.config import get_api_key, get_config

    return get_api_key(None, get_config())


def _probe_server() -> str | None:
    """``None`` when Comet's server answers its version check; otherwise a short reason.

    One plain request with :data:`PROBE_TIMEOUT_S` (through the environment's proxy, if any), so
    that an offline machine or an unreachable server is detected in seconds rather than after
    Comet's own retries.
    """
    from comet_ml.config import (
        get_api_key,
        get_check_tls_certificate,
        get_comet_root_url,
        get_config,
    )
    from comet_ml.connection.connection_url_helpers import get_backend_version_url

    config = get_config()
    get_api_key(None, config)  # a key may carry its own server address
    url = get_backend_version_url(get_comet_root_url(config))
    context = ssl.create_default_context()
    if not get_check_tls_certificate(config):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S, context=context) as response:
            response.read(1024)
    except urllib.error.HTTPError as exc:
        return f"{url} answered HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return f"cannot reach {url}: {getattr(exc, 'reason', None) or exc}"
    return None


def _check_writable(directory: Path) -> None:
    """Create ``directory`` and write a small probe file there; ``OutputError`` when it fails."""

    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-") as fh:
            fh.write(b"\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:  # read-only, full, a file in the way (EEXIST), ...: what to do
        raise output_error(directory, exc) from exc


def _experiment_config(
    comet_ml: Any, comet: CometSettings, *, name: str, tags: list[str], online: bool
) -> Any:
    return comet_ml.ExperimentConfig(
        name=name,
        tags=tags,
        offline_directory=str(comet.offline_dir),
        log_code=False,
        log_graph=False,
        parse_args=False,
        log_git_metadata=True,
        log_git_patch=False,
        # Comet finds the host's IP address by resolving its server's name: not offline.
        log_env_host=online,
        auto_output_logging=False,
        auto_param_logging=False,
        auto_metric_logging=False,
        auto_log_co2=False,
        display_summary_level=0,
    )


def create_experiment(
    settings: Settings,
    comet: CometSettings,
    *,
    name: str,
    tags: list[str],
    command: str,
) -> tuple[Any, str, str | None]:
    """The experiment, its mode, and why online mode was given up (``None`` if it was not).

    Raises ``OutputError`` (offline directory not writable) or Comet's own exception.
    """
    comet_ml = import_comet()
    mode = settings.tracking.mode
    note = None
    if mode == "online" or (mode == "auto" and api_key() is not None):
        config = _experiment_config(comet_ml, comet, name=name, tags=tags, online=True)
        with _argv(command):
            experiment, reason = _try_online(comet_ml, comet, config)
        if experiment is not None:
            return experiment, "online", None
        note = f"Comet: cannot track online ({reason}); logging offline to {comet.offline_dir}"
        log.warning("%s", note)
    config = _experiment_config(comet_ml, comet, name=name, tags=tags, online=False)
    return _start_offline(comet_ml, comet, config), "offline", note


def _start_offline(comet_ml: Any, comet: CometSettings, config: Any) -> Any:
    """An offline experiment whose archive exists only once it is complete.

    Comet creates an empty placeholder archive when the experiment starts (a kill -9 would leave
    it behind) and writes the real one when it ends: the placeholder is removed at once, and on a
    failed start whatever Comet left there.
    """
    _check_writable(comet.offline_dir)
    key = uuid.uuid4().hex  # ours, so that a failed start can clean up after itself
    placeholder = comet.offline_dir / f"{key}.zip"
    try:
        with comet_quiet() as lines:
            experiment = comet_ml.start(
                online=False,
                mode="create",
                experiment_key=key,
                project_name=comet.project_name,
                workspace=comet.workspace,
                experiment_config=config,
            )
    except Exception:
        remove_incomplete(placeholder)
        raise
    if Path(experiment.offline_directory) != comet.offline_dir:  # Comet fell back to a tmp dir
        with comet_quiet():
            experiment.end()
        remove_incomplete(Path(experiment.offline_directory) / placeholder.name)
        remove_incomplete(placeholder)
        raise OSError(next((ln for ln in lines if ln), f"cannot write to {comet.offline_dir}"))
    remove_incomplete(placeholder)
    return experiment


def _try_online(comet_ml: Any, comet: CometSettings, config: Any) -> tuple[Any, str]:
    """An online experiment, or ``(None, reason)`` without waiting on Comet's retries."""
    if api_key() is None:
        return None, "no Comet API key: set COMET_API_KEY or run `comet login`"
    unreachable = _probe_server()  # not named `reason`: that is the function used below
    if unreachable is not None:
        return None, unreachable
    experiment = None
    try:
        with comet_quiet():
            experiment = comet_ml.start(
                online=True,
                mode="create",
                project_name=comet.project_name,
                workspace=comet.workspace,
                experiment_config=config,
            )
    except Exception as exc:
        return None, reason(exc)
    if not experiment.alive:
        with comet_quiet(), contextlib.suppress(Exception):
            experiment.end()
        return None, "Comet's server did not accept the experiment"
    return experiment, ""
