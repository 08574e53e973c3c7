"""Hydra's override grammar, read in one place: every module that reads an override uses these.

An override is what a user writes on the command line or what a run records (``n_mfcc=20``,
``+train.lr=1e-3``, ``model.hidden=[256,256]``, ``n_mfcc=20,40,60``, ``~key``). Hydra's own
parser (:class:`hydra.core.override_parser.overrides_parser.OverridesParser`) reads them; a text
it cannot read is one :class:`~urbansound.errors.ConfigError` naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from urbansound.config.schema import config_error
from urbansound.errors import ConfigError

_PARSER: Any = None


def _parser() -> Any:
    global _PARSER
    if _PARSER is None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        _PARSER = OverridesParser.create()
    return _PARSER


def parse(text: str) -> Any:
    """Hydra's ``Override`` object for ``text``; ConfigError naming the override if it is bad."""
    from hydra.errors import HydraException

    try:
        return _parser().parse_override(text)
    except HydraException as exc:
        raise ConfigError(f"cannot parse override {text!r}: {exc}") from None


def override_key(text: str) -> str:
    """The key an override sets, without ``+``/``++``/``~`` (``+train.x=1`` -> ``train.x``)."""
    return parse(text).get_key_element().lstrip("+~")


def parse_override(text: str) -> tuple[str, Any] | None:
    """The key and typed value of a plain ``key=value`` override, parsed by Hydra's grammar.

    ``n_mfcc=20`` -> ``("n_mfcc", 20)``, ``+train.lr=1e-3`` -> ``("train.lr", 0.001)``,
    ``model.hidden=[256,256]`` -> ``("model.hidden", [256, 256])``, ``x=null`` -> ``("x", None)``.
    Returns None for a sweep (``n_mfcc=20,40``) and for a deletion (``~key``).

    Raises
    ------
    ConfigError
        When ``text`` is not an override at all, naming it.
    """
    override = parse(text)
    if override.is_sweep_override() or override.is_delete():
        return None
    return override.get_key_element().lstrip("+"), override.value()


def format_value(value: Any) -> str:
    """``value`` written in Hydra's override grammar so that it parses back to itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if not isinstance(value, str):
        raise ConfigError(f"cannot write {value!r} ({type(value).__name__}) as an override")
    if value and _roundtrips(value, value):
        return value
    quoted = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if not _roundtrips(quoted, value):
        raise ConfigError(f"cannot write the string {value!r} as an override value")
    return quoted


def _roundtrips(text: str, value: str) -> bool:
    try:
        parsed = _parser().parse_override(f"k={text}")
    except Exception:
        return False
    if parsed.is_sweep_override():
        return False
    out = parsed.value()
    return isinstance(out, str) and out == value


def parse_all(texts: Sequence[str]) -> list[Any]:
    """Hydra's ``Override`` objects for ``texts``, in order.

    Raises
    ------
    ConfigError
        One line for the first override that is not valid Hydra grammar.
    """
    try:
        return _parser().parse_overrides(list(texts))
    except Exception as exc:
        raise config_error(exc) from None
