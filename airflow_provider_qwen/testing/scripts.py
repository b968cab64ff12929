"""Scripted mode: a test sets the exact turns the emulated model plays, in order.

A ``Turn`` is one answer of the model: text (``Turn.text("...")``), or tool calls with the names and
argument strings given (``Turn.call("lookup", {"id": 7})``, ``Turn.calls(("a", "{}"), ("b", '{"x": '))``
-- argument strings are sent as written, so invalid JSON and names that were never offered are
allowed: the test is the model). Turns are queued per script id, like faults:

- ``QwenEmulator.script(*turns, script_id="run-1")``: chat requests with the header
  ``X-Emulator-Script: run-1`` play them, one turn per answered request, in order;
- ``QwenEmulator.script(*turns)`` (no id): the next chat requests that carry no such header;
- over HTTP, for an emulator in another process: ``POST /_emulator/scripts`` with
  ``{"script_id": "run-1" | null, "turns": [<turn JSON>, ...]}`` (see ``control.py``).

A turn is taken only by a request that is answered: one refused before generation (401, 400, 429,
403) or failed by a fault (``status``, ``drop`` ...) leaves it queued, so a retry plays it. When a
script's turns are used up its requests are answered normally again (agent play, see
``agent_play.py``). A scripted turn is played whatever ``tool_choice`` says. Everything after the
choice of what to generate is the service's as usual: ``reasoning`` is generated when asked (or the
turn's own ``reasoning``), ``stop`` and the token budget cut it (``finish_reason: "length"``), the
shaping faults break it (``bad_json_args``, ``schema_invalid_args``, ``unknown_tool``, ``length``),
and tokens and cost are counted from what was generated, as for any answer.

Turn JSON (the HTTP form, also accepted by ``script``): ``{"content": "text"}`` or
``{"tool_calls": [{"name": "lookup", "arguments": "{\\"id\\": 7}", "id": "call_optional"}],
"content": "optional text beside the calls"}``, optionally with ``"reasoning": "..."``; an
``arguments`` object is sent as its JSON.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

SCRIPT_HEADER = "x-emulator-script"
SCRIPT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
TURN_KEYS = frozenset({"content", "tool_calls", "reasoning"})
CALL_KEYS = frozenset({"name", "arguments", "id"})


def check_script_id(script_id: str | None) -> str | None:
    """``script_id`` when it is None or 1-128 of ``[A-Za-z0-9._:-]``; ValueError otherwise."""
    if script_id is not None and not (isinstance(script_id, str) and SCRIPT_ID.match(script_id)):
        raise ValueError(f"script id {script_id!r} must be 1-128 characters of [A-Za-z0-9._:-]")
    return script_id


def _arguments_text(arguments: str | Mapping[str, Any] | None) -> str:
    if arguments is None:
        return "{}"
    if isinstance(arguments, str):
        return arguments
    if isinstance(arguments, Mapping):
        return json.dumps(dict(arguments), ensure_ascii=False)
    raise TypeError(f"tool-call arguments must be a string or a mapping, got {type(arguments).__name__}")


@dataclass(frozen=True)
class ScriptedCall:
    """One tool call of a scripted turn: ``arguments`` is the string sent, as written (any text)."""

    name: str
    arguments: str = "{}"
    id: str | None = None  # None: a fresh ``call_...`` id when played

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a scripted tool call needs a non-empty name, got {self.name!r}")
        if not isinstance(self.arguments, str):
            object.__setattr__(self, "arguments", _arguments_text(self.arguments))
        if self.id is not None and (not isinstance(self.id, str) or not self.id):
            raise ValueError(f"a scripted tool call id must be a non-empty string, got {self.id!r}")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "arguments": self.arguments}
        if self.id is not None:
            out["id"] = self.id
        return out


CallSpec: TypeAlias = "ScriptedCall | tuple[str, str | Mapping[str, Any] | None] | str"


@dataclass(frozen=True)
class Turn:
    """One scripted answer: ``content`` text, ``tool_calls``, or both; ``reasoning`` optional."""

    content: str | None = None
    tool_calls: tuple[ScriptedCall, ...] = ()
    reasoning: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tool_calls", tuple(self.tool_calls))
        if self.content is None and not self.tool_calls:
            raise ValueError("a scripted turn needs content or at least one tool call")
        if self.content is not None and not isinstance(self.content, str):
            raise ValueError(f"a scripted turn's content must be a string, got {type(self.content).__name__}")
        if self.reasoning is not None and not isinstance(self.reasoning, str):
            raise ValueError("a scripted turn's reasoning must be a string")
        for call in self.tool_calls:
            if not isinstance(call, ScriptedCall):
                raise TypeError(f"tool_calls takes ScriptedCall objects, got {call!r}")

    @classmethod
    def text(cls, content: str, *, reasoning: str | None = None) -> Turn:
        """A text answer (``finish_reason: "stop"`` unless the budget or ``stop`` cuts it)."""
        return cls(content=content, reasoning=reasoning)

    @classmethod
    def call(
        cls,
        name: str,
        arguments: str | Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
        content: str | None = None,
        reasoning: str | None = None,
    ) -> Turn:
        """One tool call; ``arguments`` a string sent as written, or a mapping sent as JSON."""
        return cls(content, (ScriptedCall(name, _arguments_text(arguments), id),), reasoning)

    @classmethod
    def calls(cls, *calls: CallSpec, content: str | None = None, reasoning: str | None = None) -> Turn:
        """Several calls in one answer: each a ``ScriptedCall``, a ``(name, arguments)`` pair or a name."""
        made = []
        for spec in calls:
            if isinstance(spec, ScriptedCall):
                made.append(spec)
            elif isinstance(spec, str):
                made.append(ScriptedCall(spec))
            else:
                name, arguments = spec
                made.append(ScriptedCall(name, _arguments_text(arguments)))
        return cls(content, tuple(made), reasoning)

    @classmethod
    def from_json(cls, data: Any) -> Turn:
        """A turn from its JSON form (see the module docstring); ValueError naming what is wrong."""
        if isinstance(data, str):
            return cls.text(data)
        if not isinstance(data, Mapping):
            raise ValueError(f"a turn must be a JSON object or a string, got {type(data).__name__}")
        unknown = sorted(set(data) - TURN_KEYS)
        if unknown:
            raise ValueError(f"unknown turn field(s) {unknown}; allowed: {sorted(TURN_KEYS)}")
        raw_calls = data.get("tool_calls") or []
        if not isinstance(raw_calls, list):
            raise ValueError("tool_calls must be a list of {name, arguments, id?} objects")
        made = []
        for index, raw in enumerate(raw_calls):
            if not isinstance(raw, Mapping) or set(raw) - CALL_KEYS:
                raise ValueError(f"tool_calls[{index}] must be an object with name, arguments and id?")
            try:
                arguments = _arguments_text(raw.get("arguments"))
                made.append(ScriptedCall(raw.get("name", ""), arguments, raw.get("id")))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"tool_calls[{index}]: {exc}") from None
        return cls(data.get("content"), tuple(made), data.get("reasoning"))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.content is not None:
            out["content"] = self.content
        if self.tool_calls:
            out["tool_calls"] = [call.to_json() for call in self.tool_calls]
        if self.reasoning is not None:
            out["reasoning"] = self.reasoning
        return out


def as_turn(turn: Turn | str | Mapping[str, Any]) -> Turn:
    """A ``Turn`` from a ``Turn``, a plain string (a text turn) or the JSON form."""
    return turn if isinstance(turn, Turn) else Turn.from_json(turn)


class ScriptBook:
    """Queued turns per script id (None: requests without ``X-Emulator-Script``); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._turns: dict[str | None, deque[Turn]] = {}
        self._played: dict[str | None, int] = {}

    def add(self, script_id: str | None, turns: Iterable[Turn]) -> int:
        """Queue ``turns`` after the ones already queued; returns how many are pending now."""
        check_script_id(script_id)
        with self._lock:
            queue = self._turns.setdefault(script_id, deque())
            queue.extend(turns)
            return len(queue)

    def take(self, script_id: str | None) -> tuple[Turn, int] | None:
        """The next turn of ``script_id`` and its number in the script (1 for the first), or None."""
        with self._lock:
            queue = self._turns.get(script_id)
            if not queue:
                return None
            number = self._played.get(script_id, 0) + 1
            self._played[script_id] = number
            return queue.popleft(), number

    def give_back(self, script_id: str | None, turn: Turn) -> None:
        """Put a taken turn back at the head (its request was refused after all)."""
        with self._lock:
            self._turns.setdefault(script_id, deque()).appendleft(turn)
            self._played[script_id] = max(self._played.get(script_id, 1) - 1, 0)

    def pending(self, script_id: str | None = None) -> list[Turn]:
        with self._lock:
            return list(self._turns.get(script_id) or ())

    def scripts(self) -> dict[str | None, Sequence[Turn]]:
        """Every script with turns still queued (a copy)."""
        with self._lock:
            return {key: list(queue) for key, queue in self._turns.items() if queue}

    def clear(self, script_id: str | None = None, *, everything: bool = False) -> None:
        """Forget the queued turns of ``script_id`` (or of every script)."""
        with self._lock:
            if everything:
                self._turns.clear()
                self._played.clear()
            else:
                self._turns.pop(script_id, None)
                self._played.pop(script_id, None)
