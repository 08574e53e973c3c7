"""The commands' ``--help`` pages: what their Hydra help templates need beyond Hydra's variables.

``urbansound --help`` and ``urbansound-fit --help`` print ``hydra.help.template`` of
``urbansound/conf/config.yaml`` and ``fit.yaml`` (Hydra's "Customizing application's help").
Hydra's ``$CONFIG`` would print the whole composed config, the sweeper's ``trial`` node too (the
plumbing by which a job finds its Optuna trial, never set by a user); the templates print
``${urbansound.help_config:}`` instead, the same YAML without it (:func:`help_config`), and
``${urbansound.help_sweeps:}``, the named sweeps the package ships with what each searches
(:func:`help_sweeps`).

The entry points (:mod:`urbansound.run`, :mod:`urbansound.fit`) call
:func:`prepare_hydra_command` before Hydra starts: it registers that resolver and, for
``python -m``, gives Hydra the console script's name for its help and shell completion.
``--hydra-help`` stays Hydra's own page.
"""

from __future__ import annotations

import re
import sys
import textwrap
from importlib.resources import files
from typing import Any

__all__ = [
    "HELP_CONFIG_RESOLVER",
    "HELP_SWEEPS_RESOLVER",
    "HIDDEN_KEYS",
    "SWEEP_GROUP",
    "help_config",
    "help_sweeps",
    "prepare_hydra_command",
]

#: The OmegaConf resolver the help templates call: ``${urbansound.help_config:}``.
HELP_CONFIG_RESOLVER = "urbansound.help_config"

#: The OmegaConf resolver that lists the named sweeps: ``${urbansound.help_sweeps:}``.
HELP_SWEEPS_RESOLVER = "urbansound.help_sweeps"

#: The config group of the named sweeps, a folder of the package's config tree.
SWEEP_GROUP = "sweep"

#: Top-level keys the help leaves out: Hydra's own node (``--hydra-help`` and ``--cfg hydra``
#: show it) and the sweeper's ``trial`` node.
HIDDEN_KEYS = ("hydra", "trial")

#: Flags whose output names the command: Hydra's own help and its shell completion.
_COMMAND_FLAGS = ("--hydra-help", "-sc", "--shell-completion")


def help_config(*, _root_: Any) -> str:
    """The composed config as ``--help`` shows it: YAML without :data:`HIDDEN_KEYS`.

    The resolver behind ``${urbansound.help_config:}``; OmegaConf passes the whole config as
    ``_root_``. Interpolations are shown as written (``n_mfcc: ${n_mfcc}``), as Hydra's
    ``$CONFIG`` shows them without ``--resolve``.

    Returns
    -------
    str
        The YAML text with every ``$`` doubled: Hydra reads the resolved template with
        :class:`string.Template`, which turns ``$$`` back into ``$``.
    """
    from omegaconf import OmegaConf

    shown = OmegaConf.masked_copy(_root_, [key for key in _root_ if key not in HIDDEN_KEYS])
    return OmegaConf.to_yaml(shown).replace("$", "$$")


def help_sweeps() -> str:
    """The named sweeps as ``--help`` lists them: one entry per file of the ``sweep`` group.

    Each entry is the sweep's name and the first phrase of its file's comment (up to the first
    ``:`` or ``.``), then its sampler, pruner, trial budget (``hydra.sweeper.n_trials``; a grid
    without one runs every point) and the keys it searches (``hydra.sweeper.params``), read
    from the YAML of the package's config tree.

    Returns
    -------
    str
        Indented lines, every ``$`` doubled (see :func:`help_config`). A sweep file that is no
        YAML mapping is listed by its name only.
    """
    import yaml

    entries = []
    folder = files("urbansound.conf") / SWEEP_GROUP
    for path in sorted((p for p in folder.iterdir() if p.name.endswith(".yaml")), key=str):
        name = path.name.removesuffix(".yaml")
        text = path.read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            data = None
        if not isinstance(data, dict):
            entries.append(f"  {name}")
            continue
        entries.append(f"  {name:<14} {_summary(text)}")
        details = ", ".join(_sweep_details(data))
        entries.extend(
            textwrap.wrap(details, width=96, initial_indent=" " * 17, subsequent_indent=" " * 19)
        )
    return "\n".join(entries).replace("$", "$$")


def _summary(text: str) -> str:
    """The first phrase of a config file's leading comment (after ``# @package``)."""
    words: list[str] = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            words.append(line.lstrip("#").strip())
    comment = " ".join(words)
    return re.split(r"[:.](?:\s|$)", comment, maxsplit=1)[0].strip()


def _sweep_details(data: dict[str, Any]) -> list[str]:
    """A sweep file's sampler, pruner, budget and searched keys, as short phrases."""
    choices: dict[str, str] = {}
    for entry in data.get("defaults") or []:
        if isinstance(entry, dict):
            for key, value in entry.items():
                choices[str(key).removeprefix("override ").strip("/")] = str(value)
    sweeper = (data.get("hydra") or {}).get("sweeper") or {}
    details = []
    for part in ("sampler", "pruner"):
        choice = choices.get(f"hydra/sweeper/{part}")
        if choice is not None:
            details.append(f"no {part}" if choice == "none" else f"{choice} {part}")
    n_trials = sweeper.get("n_trials")
    details.append(f"{n_trials} trials" if n_trials else "every grid point once")
    params = sweeper.get("params") or {}
    if params:
        details[-1] += "; searches " + ", ".join(str(key) for key in params)
    return details


def prepare_hydra_command(name: str) -> None:
    """Ready a Hydra entry point to start as the console script ``name``.

    Registers :data:`HELP_CONFIG_RESOLVER` and :data:`HELP_SWEEPS_RESOLVER` (once per
    process). Started with ``python -m``,
    ``sys.argv[0]`` is the module's file, which Hydra's ``--hydra-help`` would print as
    ``python /.../fit.py`` and whose ``-sc install=bash`` would complete every ``python``
    command: for those flags only, ``sys.argv[0]`` becomes ``name``, the command that
    completion works for.
    """
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(HELP_CONFIG_RESOLVER):
        OmegaConf.register_new_resolver(HELP_CONFIG_RESOLVER, help_config)
    if not OmegaConf.has_resolver(HELP_SWEEPS_RESOLVER):
        OmegaConf.register_new_resolver(HELP_SWEEPS_RESOLVER, help_sweeps)
    if sys.argv[0].endswith(".py") and any(
        arg.split("=")[0] in _COMMAND_FLAGS for arg in sys.argv[1:]
    ):
        sys.argv[0] = name
