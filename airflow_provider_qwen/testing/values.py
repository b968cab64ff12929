"""Deterministic JSON values generated from a JSON Schema: the emulator's tool-call arguments.

Covers what tool schemas use: objects (required always, optional ones too until nesting gets
deep), arrays (``minItems``/``maxItems``/``uniqueItems``/tuples), ``enum``/``const``, numbers with
inclusive or exclusive bounds and ``multipleOf``, strings with ``minLength``/``maxLength``/
``format``/``pattern``, ``anyOf``/``oneOf``/``allOf``, ``$ref`` into ``$defs``/``definitions`` (a
recursive schema stops at its optional branches). Strings are taken from the prompt, and choices
(enum members, numbers) depend on it, so different prompts give different but repeatable values.

Plausible values first (``facts.py``): an enum member the prompt names, an e-mail address from the
prompt for a ``format: email`` string or a field named like ``email``, a substring of the prompt
that matches a string's ``pattern``, a number from the prompt (the one after the field's name
first) that fits a number's bounds; each found value is used once. Otherwise a generated one.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from collections.abc import Mapping
from typing import Any

from airflow_provider_qwen.testing import facts
from airflow_provider_qwen.testing.facts import inside, is_multiple, is_number, multiple_in
from airflow_provider_qwen.testing.regex import regex_example

_DEEP = 3  # object nesting (or re-entries of one $ref) past which optional parts are left out
_GIVE_UP = 60  # nesting past which a schema is taken to have no finite instance
_SUMMARY_NAMES = re.compile(r"summary|description|reason|explanation|text|comment|message|answer|notes?")
_FORMATS: dict[str, str] = {
    "date": "2024-05-01",
    "date-time": "2024-05-01T12:00:00Z",
    "time": "12:00:00Z",
    "duration": "P1D",
    "email": "user@example.com",
    "idn-email": "user@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uri": "https://example.com/item",
    "url": "https://example.com/item",
    "iri": "https://example.com/item",
    "uri-reference": "/item",
    "iri-reference": "/item",
    "uri-template": "https://example.com/{id}",
    "json-pointer": "/item",
    "relative-json-pointer": "0/item",
    "regex": "^[a-z]+$",
}


class UnsupportedSchema(ValueError):
    """A tool schema no value can be generated for (a dangling or remote ``$ref``, endless recursion)."""


def _digest(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "big")


class SchemaValues:
    """Values for one root schema (which holds the ``$defs`` its ``$ref``s point to)."""

    def __init__(self, root: Mapping[str, Any], text: str = "") -> None:
        self.root = root
        self.text = " ".join(text.split())
        self.words = re.findall(r"[\w'-]+", self.text) or ["example"]
        self._validator: Any = None
        self._used: set[Any] = set()

    # -- entry point ----------------------------------------------------------------------------
    def example(self) -> Any:
        return self.value(self.root, "$", 0, ())

    def is_valid(self, value: Any, schema: Any = None) -> bool:
        """Validate against ``schema`` (default: the root), resolving refs from the root."""
        if self._validator is None:
            from jsonschema import validators

            cls = validators.validator_for(self.root, default=validators.Draft202012Validator)
            self._validator = cls(self.root, format_checker=cls.FORMAT_CHECKER)
        try:
            if schema is None:
                return self._validator.is_valid(value)
            return next(iter(self._validator.evolve(schema=self.root).descend(value, schema)), None) is None
        except Exception:  # a schema jsonschema cannot apply (a bad regex, a dangling $ref): not valid
            return False

    # -- dispatch -------------------------------------------------------------------------------
    def value(self, schema: Any, path: str, depth: int, refs: tuple[str, ...]) -> Any:
        if depth > _GIVE_UP:
            raise UnsupportedSchema(f"no finite value found at {path}: the schema recurses without an exit")
        if schema is True or schema is None or schema == {}:
            return self.phrase(path, 3)
        if schema is False:
            return None
        if "$ref" in schema:
            ref = str(schema["$ref"])
            target = self.resolve(ref)
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            merged = {**target, **rest} if rest else target
            again = depth + (_DEEP if ref in refs else 0)  # a re-entry: head for the exits
            return self.value(merged, path, again, (*refs, ref))
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self.pick(schema["enum"], path)
        if "allOf" in schema:
            return self.value(self.merge_all(schema), path, depth, refs)
        for key in ("oneOf", "anyOf"):
            if key in schema:
                return self.union(schema, key, path, depth, refs)
        kind = self.type_of(schema, depth)
        generator = {
            "object": self.object,
            "array": self.array,
            "string": self.string,
            "integer": self.integer,
            "number": self.number,
            "boolean": self.boolean,
        }.get(kind)
        return None if generator is None else generator(schema, path, depth, refs)

    def resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise UnsupportedSchema(f"$ref {ref!r} is not local: only '#/...' references are resolved")
        node: Any = self.root
        try:
            for part in filter(None, ref[1:].split("/")):
                part = part.replace("~1", "/").replace("~0", "~")
                node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise UnsupportedSchema(f"$ref {ref!r} points to nothing in the schema") from None
        return node

    def merge_all(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = self.resolve(part["$ref"]) if isinstance(part, Mapping) and "$ref" in part else part
            if not isinstance(part, Mapping):
                continue
            if "allOf" in part:
                part = self.merge_all(part)
            for key, value in part.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required":
                    merged["required"] = [*merged.get("required", []), *value]
                else:
                    merged.setdefault(key, value)
        return merged

    def union(self, schema: Mapping[str, Any], key: str, path: str, depth: int, refs: tuple[str, ...]) -> Any:
        base = {k: v for k, v in schema.items() if k != key}
        branches = list(schema[key])
        nulls = [b for b in branches if isinstance(b, Mapping) and b.get("type") == "null"]
        others = [b for b in branches if b not in nulls]
        ordered = [*nulls, *others] if depth >= _DEEP else [*others, *nulls]
        first: Any = None
        for index, branch in enumerate(ordered):
            merged = {**base, **branch} if isinstance(branch, Mapping) else branch
            candidate = self.value(merged, path, depth, refs)
            if index == 0:
                first = candidate
            if self.is_valid(candidate, {key: branches}):
                return candidate
        return first

    def type_of(self, schema: Mapping[str, Any], depth: int) -> str:
        declared = schema.get("type")
        if isinstance(declared, list):
            if "null" in declared and (depth >= _DEEP or len(declared) == 1):
                return "null"
            return next((t for t in declared if t != "null"), "null")
        if declared:
            return str(declared)
        if any(k in schema for k in ("properties", "required", "additionalProperties", "minProperties")):
            return "object"
        if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems")):
            return "array"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "multipleOf")):
            return "number"
        return "string"

    def pick(self, options: list[Any], path: str) -> Any:
        choices = [o for o in options if o is not None] or options
        named = facts.named_option(choices, self.text)
        return named if named is not None else choices[_digest(self.text, path) % len(choices)]

    def found(self, candidates: list[Any], fits: Any) -> Any:
        """The first candidate from the prompt that fits and was not used yet (None if none)."""
        for candidate in candidates:
            if candidate not in self._used and fits(candidate):
                self._used.add(candidate)
                return candidate
        return None

    # -- types ----------------------------------------------------------------------------------
    def object(
        self, schema: Mapping[str, Any], path: str, depth: int, refs: tuple[str, ...]
    ) -> dict[str, Any]:
        properties: Mapping[str, Any] = schema.get("properties", {})
        required = list(dict.fromkeys(schema.get("required", [])))
        extra = schema.get("additionalProperties", True)
        out: dict[str, Any] = {}
        for name, sub in properties.items():
            if name in required or depth < _DEEP:
                out[name] = self.value(sub, f"{path}.{name}", depth + 1, refs)
        for name in required:
            if name not in out:
                out[name] = self.value(
                    extra if isinstance(extra, Mapping) else {}, f"{path}.{name}", depth + 1, refs
                )
        maximum = schema.get("maxProperties")
        if maximum is not None:
            for name in [n for n in out if n not in required][: max(len(out) - maximum, 0)]:
                del out[name]
        index = 0
        while len(out) < schema.get("minProperties", 0) and extra is not False:
            index += 1
            name = self.property_name(schema, index)
            out[name] = self.value(
                extra if isinstance(extra, Mapping) else {}, f"{path}.{name}", depth + 1, refs
            )
        return out

    def property_name(self, schema: Mapping[str, Any], index: int) -> str:
        for pattern in schema.get("patternProperties", {}):
            name = regex_example(pattern, seed=index)
            if name is not None:
                return name
        return f"extra_{index}"

    def array(self, schema: Mapping[str, Any], path: str, depth: int, refs: tuple[str, ...]) -> list[Any]:
        prefix = schema.get("prefixItems")
        items = schema.get("items", {})
        if isinstance(items, list):  # draft 4-7 tuple
            prefix, items = items, schema.get("additionalItems", {})
        low = int(schema.get("minItems", 0))
        count = max(low, len(prefix or []), 0 if depth >= _DEEP else 2)
        if schema.get("maxItems") is not None:
            count = min(count, int(schema["maxItems"]))
        out: list[Any] = []
        for index in range(count):
            sub = prefix[index] if prefix and index < len(prefix) else items
            value = self.value(sub, f"{path}[{index}]", depth + 1, refs)
            if schema.get("uniqueItems") and value in out:
                value = self.value(sub, f"{path}[{index}]#{len(out)}", depth + 1, refs)
                if value in out and len(out) >= low:
                    break
            out.append(value)
        if "contains" in schema and not any(self.is_valid(v, schema["contains"]) for v in out):
            value = self.value(schema["contains"], f"{path}.contains", depth + 1, refs)
            out = (
                [*out[:-1], value]
                if schema.get("maxItems") is not None and len(out) >= schema["maxItems"]
                else [*out, value]
            )
        return out

    def string(self, schema: Mapping[str, Any], path: str, depth: int, refs: tuple[str, ...]) -> str:
        low = int(schema.get("minLength", 0))
        high = schema.get("maxLength")
        name = _field(path)
        pattern = schema.get("pattern")

        def fits(text: str) -> bool:
            long_enough = low <= len(text) <= (high if high is not None else len(text))
            return long_enough and (not pattern or self.is_valid(text, {"pattern": pattern}))

        value: str | None = None
        if facts.is_email_field(name, schema.get("format")):
            value = self.found(facts.emails(self.text), fits)
        if value is None and pattern:
            value = self.found(facts.pattern_matches(str(pattern), self.text), fits)
        if value is not None:
            return value
        if schema.get("format") == "uuid":
            value = str(uuid.UUID(int=_digest(self.text, path) << 64 | _digest(path, self.text), version=4))
        elif schema.get("format") in _FORMATS:
            value = _FORMATS[schema["format"]]
        elif schema.get("pattern"):
            value = regex_example(str(schema["pattern"]), seed=_digest(self.text, path), low=low, high=high)
        if value is None:
            name = name.lower()
            value = self.sentence(high or 200) if _SUMMARY_NAMES.search(name) else self.phrase(path, 4)
        if len(value) < low:
            filler = " ".join(self.words * (low // max(len(self.text), 1) + 1))
            value = (value + " " + filler)[:low] if value else filler[:low]
            value = value.ljust(low, "x")
        if high is not None and len(value) > high:
            value = value[: int(high)].rstrip() or value[: int(high)]
        return value

    def sentence(self, limit: int) -> str:
        first = re.split(r"(?<=[.!?])\s", self.text, maxsplit=1)[0] if self.text else "example"
        if len(first) <= limit:
            return first
        cut = first[:limit].rsplit(" ", 1)[0]
        return cut or first[:limit]

    def phrase(self, path: str, size: int) -> str:
        start = _digest(self.text, path) % len(self.words)
        return " ".join((self.words * 2)[start : start + size][: len(self.words)])

    def bounds(self, schema: Mapping[str, Any]) -> tuple[float | None, float | None, bool, bool]:
        low, high = schema.get("minimum"), schema.get("maximum")
        low_open = high_open = False
        exclusive_low, exclusive_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if exclusive_low is True:
            low_open = True
        elif is_number(exclusive_low) and (low is None or exclusive_low >= low):
            low, low_open = exclusive_low, True
        if exclusive_high is True:
            high_open = True
        elif is_number(exclusive_high) and (high is None or exclusive_high <= high):
            high, high_open = exclusive_high, True
        return low, high, low_open, high_open

    def integer(self, schema: Mapping[str, Any], path: str, depth: int, refs: tuple[str, ...]) -> int:
        low, high, low_open, high_open = self.bounds(schema)
        first = None if low is None else math.floor(low) + 1 if low_open else math.ceil(low)
        last = None if high is None else math.ceil(high) - 1 if high_open else math.floor(high)
        if first is None:
            first = 1 if last is None or last >= 1 else last - 9
        step = schema.get("multipleOf")

        def fits(number: float) -> bool:
            whole = float(number).is_integer() and inside(number, first, last, (False, False))
            return whole and (not step or is_multiple(number, step))

        found = self.found(facts.numbers(self.text, _field(path)), fits)
        if found is not None:
            return int(found)
        if last is None:
            last = first + 9
        value = first + _digest(self.text, path) % (min(max(last - first, 0), 9) + 1)
        return int(multiple_in(value, step, first, last)) if step else value

    def number(self, schema: Mapping[str, Any], path: str, depth: int, refs: tuple[str, ...]) -> float | int:
        lowest, highest, low_open, high_open = self.bounds(schema)
        step = schema.get("multipleOf")

        def fits(number: float) -> bool:
            within = inside(number, lowest, highest, (low_open, high_open))
            return within and (not step or is_multiple(number, step))

        found = self.found(facts.numbers(self.text, _field(path)), fits)
        if found is not None:
            return found
        if lowest is None and highest is None:
            lowest, highest = 0.0, 10.0
        low = lowest if lowest is not None else highest - 10.0  # type: ignore[operator]
        high = highest if highest is not None else low + 10.0
        fraction = (_digest(self.text, path) % 89 + 5) / 100  # 0.05 .. 0.93: inside open bounds
        value = low + (high - low) * fraction
        if step:
            return float(multiple_in(value, step, low, high, (low_open, high_open)))
        if high == low:
            return low
        rounded = round(value, 2)
        return rounded if low < rounded < high else value

    def boolean(self, schema: Mapping[str, Any], path: str, depth: int, refs: tuple[str, ...]) -> bool:
        return _digest(self.text, path) % 2 == 0


def _field(path: str) -> str:
    """The property name a value's path ends with (``$.items[0].qty`` -> ``qty``)."""
    return re.sub(r"\[\d+\](#\d+)?$", "", path.rsplit(".", 1)[-1])
