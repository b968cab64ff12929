"""A griffe extension for the API reference: read the package's Sphinx-style docstrings as Sphinx does.

griffe's Sphinx parser differs from Sphinx in three ways that matter here; this extension rewrites
each docstring of the package (the rendered text only, never the source) before it is parsed:

- Roles: ``:class:`QwenBaseOperator``` is rendered by Sphinx as the name; griffe shows the raw
  role. It becomes ```QwenBaseOperator``` (code).
- Paragraphs after the fields: in Sphinx a field's body is its indented lines, so an unindented
  paragraph after the field list ("Returns the results ...", "Every parameter of ... applies") is
  text of the object; griffe appends it to the last field. It is moved before the first field.
- Parameters handed on through ``**kwargs``: an operator documents, in its class docstring,
  parameters its ``__init__`` takes only as ``**kwargs`` and passes to a base class
  (``QwenChatOperator`` documents ``deferrable``, which ``QwenCallOperator.__init__`` takes).
  griffe looks a documented parameter up in the class's own signature only, finds no type and
  warns, which fails ``mkdocs build --strict``. A ``:type name:`` is added from the first base
  class whose ``__init__`` names the parameter, so the reference shows its type; a documented
  parameter that no ``__init__`` in the hierarchy takes still warns.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|exc|data|obj|const):`~?([^`]+)`")
_FIELD = re.compile(r"^:\w[^:]*:")
_PARAM = re.compile(r"^[ \t]*:param\s+(?:[^:\s]+\s+)?(\w+)\s*:", re.MULTILINE)
_TYPED = re.compile(r"^[ \t]*:type\s+(\w+)\s*:", re.MULTILINE)


def paragraphs_before_fields(text: str) -> str:
    """``text`` with each unindented paragraph that follows a field moved before the first field."""
    lines = text.split("\n")
    first = next((i for i, line in enumerate(lines) if _FIELD.match(line)), None)
    if first is None:
        return text
    fields: list[str] = []
    moved: list[str] = []
    in_field = True
    for index in range(first, len(lines)):
        line = lines[index]
        if _FIELD.match(line):
            in_field = True
        elif line and not line[0].isspace() and (not lines[index - 1].strip() or not in_field):
            in_field = False  # a paragraph of its own: not indented, after a blank line
        (fields if in_field else moved).append(line)
    if not moved:
        return text
    head = "\n".join(lines[:first]).rstrip()
    return "\n\n".join(part for part in (head, "\n".join(moved).strip(), "\n".join(fields).rstrip()) if part)


def _init_parameters(cls: griffe.Class) -> dict[str, griffe.Parameter]:
    init = cls.members.get("__init__")
    if not isinstance(init, griffe.Function):
        return {}
    return {p.name: p for p in init.parameters}


def _bases(cls: griffe.Class) -> list[griffe.Class]:
    try:
        return [base for base in cls.mro() if isinstance(base, griffe.Class)]
    except (griffe.AliasResolutionError, griffe.CyclicAliasError, ValueError):
        return []


def inherited_types(cls: griffe.Class, text: str) -> str:
    """``text`` (the class docstring) with ``:type`` fields for the parameters documented in it that
    reach a base class's ``__init__`` through ``**kwargs``, before the first ``:param``."""
    own = _init_parameters(cls)
    if not any(p.kind is griffe.ParameterKind.var_keyword for p in own.values()):
        return text
    typed = set(_TYPED.findall(text))
    lines = []
    for name in _PARAM.findall(text):
        if name in own or name in typed:
            continue
        for base in _bases(cls):
            parameter = _init_parameters(base).get(name)
            if parameter is not None and parameter.annotation is not None:
                lines.append(f":type {name}: {parameter.annotation}")
                break
    first = _PARAM.search(text)
    if not lines or first is None:
        return text
    # before the first :param: griffe looks a parameter's type up when it reads the parameter
    return text[: first.start()] + "\n".join(lines) + "\n" + text[first.start() :]


def _objects(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias and isinstance(member, griffe.Object):
            yield from _objects(member)


class SphinxFields(griffe.Extension):
    """Roles, paragraphs after the fields and ``**kwargs`` parameters, as Sphinx reads them."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _objects(pkg):
            docstring = obj.docstring
            if docstring is None:
                continue
            text = paragraphs_before_fields(_ROLE.sub(r"``\1``", docstring.value))
            if isinstance(obj, griffe.Class):
                text = inherited_types(obj, text)
            docstring.value = text
