"""Griffe extension: the docstrings' Sphinx roles become links in the API reference.

The package's docstrings are numpydoc with Sphinx's cross-reference roles
(``:func:`cross_validate```, ``:class:`~urbansound.training.results.CVResult```,
``:mod:`.load```), which Markdown would show as literal text. Before mkdocstrings renders a
docstring, each role is replaced by an optional autorefs link: the target resolved as Python
would resolve the name in the docstring's scope (``~`` shows the last component only, a leading
``.`` is relative to the module's package), linked where the API pages render it and shown as
plain code where they do not (a private helper, a third-party name). An unresolved role never
fails the build.
"""

from __future__ import annotations

import html
import re
from typing import Any

from griffe import Extension, Module, Object

#: A Sphinx cross-reference role: ``:func:`x```, ``:py:class:`~a.b.C```, ``:meth:`C.m()```.
ROLE = re.compile(
    r":(?:py:)?(?:func|meth|class|mod|attr|data|exc|obj|const|type):`(?P<tilde>~?)(?P<target>[^`]+)`"
)


def _package(module: Module) -> str:
    return module.path if module.is_init_module else module.path.rpartition(".")[0]


def resolve(obj: Object, target: str) -> str | None:
    """The full dotted path a role's ``target`` names in ``obj``'s docstring, or None.

    Parameters
    ----------
    obj:
        The object whose docstring holds the role.
    target:
        The role's target without ``~`` and without a trailing ``()``.

    Returns
    -------
    str or None
        An absolute path (``urbansound.training.results.CVResult``), or None where the name does
        not resolve in the object's scope.
    """
    if target.startswith("."):
        dots = len(target) - len(target.lstrip("."))
        base = _package(obj.module)
        for _ in range(dots - 1):
            base = base.rpartition(".")[0]
        return f"{base}.{target[dots:]}" if target[dots:] else base
    head, _, rest = target.partition(".")
    if head in {"urbansound", "hydra_plugins"}:
        return target
    for scope in (obj, obj.module):
        try:
            full = scope.resolve(head)
        except Exception:  # griffe's NameResolutionError, or an alias it cannot follow
            continue
        return f"{full}.{rest}" if rest else full
    return None


def link_roles(obj: Object, text: str) -> str:
    """``text`` with every Sphinx role replaced by an optional autorefs link around its code."""

    def replace(match: re.Match[str]) -> str:
        target = match["target"].strip().removesuffix("()")
        shown = target.rpartition(".")[2] if match["tilde"] else target
        code = f"<code>{html.escape(shown)}</code>"
        full = resolve(obj, target)
        if full is None:
            return code
        return f'<autoref identifier="{html.escape(full)}" optional>{code}</autoref>'

    return ROLE.sub(replace, text)


class SphinxRoles(Extension):
    """Rewrite the roles of every docstring once the object tree is complete."""

    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        # An alias shares its target's docstring, which is rewritten in the target's own scope.
        if obj.is_alias:
            return
        if obj.docstring is not None and ":" in obj.docstring.value:
            obj.docstring.value = link_roles(obj, obj.docstring.value)
