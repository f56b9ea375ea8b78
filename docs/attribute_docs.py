"""A griffe extension for the Python reference: the code documents attributes in two ways that
griffe does not read, and the reference should show both.

- ``#:`` comments above an attribute (the Sphinx convention this code follows);
- a dataclass field's help text, ``field(default=..., metadata=_help("..."))`` (how ``FetchOptions``
  states each option's help once, for the command line and for Python); the field is then shown
  with its default rather than the ``field(...)`` call.
"""

from __future__ import annotations

import ast
from typing import Any

import griffe


class AttributeDocs(griffe.Extension):
    def on_attribute_instance(
        self, *, node: ast.AST | griffe.ObjectNode, attr: griffe.Attribute, **_: Any
    ) -> None:
        if not isinstance(node, ast.AnnAssign | ast.Assign):
            return
        text = _comment(attr)
        call = node.value
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id == "field"
        ):
            keywords = {k.arg: k.value for k in call.keywords}
            if "default" in keywords:
                attr.value = ast.unparse(keywords["default"])
            text = text or _help(keywords.get("metadata"))
        if attr.docstring is None and text:
            attr.docstring = griffe.Docstring(text, parent=attr)


def _help(metadata: ast.AST | None) -> str | None:
    """The string in ``metadata=_help("...")``."""
    if isinstance(metadata, ast.Call) and len(metadata.args) == 1:
        text = metadata.args[0]
        if isinstance(text, ast.Constant) and isinstance(text.value, str):
            return text.value
    return None


def _comment(attr: griffe.Attribute) -> str | None:
    """The ``#:`` lines right above the attribute."""
    lines = attr.module.lines
    found: list[str] = []
    number = (attr.lineno or 1) - 2  # the line above, 0-based
    while number >= 0 and lines[number].strip().startswith("#:"):
        found.insert(0, lines[number].strip()[2:].strip())
        number -= 1
    return " ".join(found) or None
