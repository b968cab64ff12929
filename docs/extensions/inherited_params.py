"""A griffe extension for the API reference: parameters handed on through ``**kwargs``.

An operator documents, in its class docstring, parameters its ``__init__`` takes only as
``**kwargs`` and hands on to a base class (``QwenChatOperator`` documents ``deferrable``, which
``QwenCallOperator.__init__`` takes). griffe looks each documented parameter up in the class's own
signature only, finds no type and warns, which fails ``mkdocs build --strict``. This extension adds
``:type name:`` from the first base class whose ``__init__`` names the parameter, so the reference
shows its type, and a documented parameter that no ``__init__`` in the hierarchy takes still warns.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_PARAM = re.compile(r"^[ \t]*:param\s+(?:[^:\s]+\s+)?(\w+)\s*:", re.MULTILINE)
_TYPED = re.compile(r"^[ \t]*:type\s+(\w+)\s*:", re.MULTILINE)


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


def _type_lines(cls: griffe.Class) -> list[str]:
    docstring = cls.docstring
    own = _init_parameters(cls)
    takes_kwargs = any(p.kind is griffe.ParameterKind.var_keyword for p in own.values())
    if docstring is None or not takes_kwargs:
        return []
    typed = set(_TYPED.findall(docstring.value))
    lines = []
    for name in _PARAM.findall(docstring.value):
        if name in own or name in typed:
            continue
        for base in _bases(cls):
            parameter = _init_parameters(base).get(name)
            if parameter is not None and parameter.annotation is not None:
                lines.append(f":type {name}: {parameter.annotation}")
                break
    return lines


def _classes(obj: griffe.Object) -> Any:
    for member in obj.members.values():
        if member.is_alias:
            continue
        if isinstance(member, griffe.Class):
            yield member
        if isinstance(member, (griffe.Module, griffe.Class)):
            yield from _classes(member)


class InheritedParams(griffe.Extension):
    """Type the class-docstring parameters that reach a base class's ``__init__`` via ``**kwargs``."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for cls in _classes(pkg):
            lines = _type_lines(cls)
            if lines and cls.docstring is not None:
                # before the first :param: the parser looks a parameter's type up when it reads it
                text = cls.docstring.value
                first = _PARAM.search(text)
                assert first is not None
                cls.docstring.value = text[: first.start()] + "\n".join(lines) + "\n" + text[first.start() :]
