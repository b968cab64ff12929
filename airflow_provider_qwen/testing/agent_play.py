"""What the emulated model decides to do with the tools it was offered: call some, or write text.

``plan_move(body)`` returns a ``Move``: the tools to call (their arguments are generated later from
each tool's schema, see ``answers.py``) or the text to answer with (None: the usual summary or
structured content). Scripted turns bypass it (``scripts.py``).

``tool_choice`` as the service has it: ``"none"`` never calls; a named function calls it;
``"required"`` calls the first tool, or every tool with ``parallel_tool_calls: true``;
``allowed_tools`` narrows the tools, then its ``mode`` applies.

``"auto"`` (the default with tools) plays an agent:

- **Named tools.** A tool is named when its function name appears in the *latest* user message as
  a whole word (case-insensitive; letters, digits, ``_`` and ``-`` around it make it another word):
  "Use get_weather for Paris" names ``get_weather``. Only the latest user message counts: a new
  question starts a new task, and the tool results of the current task are the tool messages
  after it. Each mention is one call: a name written twice is called twice ("get_weather for
  Paris, then get_weather again for Rome"), the second time in a later answer, after the first
  call's result came back (the model wanting a tool again).
- **Arguments.** When the prompt writes them out, a JSON object within ``SPELLED_GAP`` characters
  after the tool's name that is valid for its schema ("call sql_query with {"query": "SELECT
  ..."}"), the call sends exactly that (the one after the k-th mention for the k-th call, else the
  first spelled out); otherwise they are generated from the schema and the prompt (``values.py``).
- **Calls.** The calls still owed are the mentions not yet answered: a tool's answered count is the
  number of tool messages after the latest user message whose ``tool_call_id`` is the id of an
  assistant call of that tool. With ``parallel_tool_calls`` absent or true, one answer calls every
  tool still owed once (in the order of first mention); with ``parallel_tool_calls: false``, one
  call per answer, in the order of mention.
- **Final text.** When every named tool is answered, the answer is text drawn from the tool results
  received: ``"Based on the tool results: <tool>: <its result's first sentences> ..."`` for each
  tool message after the latest user message, in order, so a test can check a result reached the
  model.
- **Nothing named** (today's behaviour, kept): the first tool is called, unless the last message is
  a tool result, which is answered in text (``"Based on the tool results: "`` + a summary of the
  trailing tool messages).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_qwen.testing.values import SchemaValues

RESULT_SENTENCES = 2
RESULT_CHARS = 240
SPELLED_GAP = 40  # characters between a tool's name and the JSON arguments the prompt writes for it
WORD = "A-Za-z0-9_-"


@dataclass(frozen=True)
class PlannedCall:
    """A tool call the model makes: the function's name and ``parameters`` schema (None when it was
    not offered: a scripted call may name any function)."""

    name: str
    parameters: Mapping[str, Any] | None
    arguments: str | None = None  # None: generated from ``parameters``; a string: sent as written
    id: str | None = None  # None: a fresh ``call_...`` id


@dataclass
class Move:
    """What the model does this turn: ``calls`` to make, else ``content`` (None: the default text)."""

    calls: list[PlannedCall] = field(default_factory=list)
    content: str | None = None


def messages_of(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [m for m in body.get("messages") or [] if isinstance(m, Mapping)]


def text_of(content: Any) -> str:
    """The text of a message ``content`` (a string or a list of text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def offered_functions(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The ``function`` objects of the request's tools, in order."""
    return [
        t["function"]
        for t in body.get("tools") or []
        if isinstance(t, Mapping) and t.get("type") == "function" and isinstance(t.get("function"), Mapping)
    ]


def latest_user_index(messages: Sequence[Mapping[str, Any]]) -> int:
    """Index of the last user message (-1 when there is none)."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            return index
    return -1


def mention_spans(text: str, names: Sequence[str]) -> list[tuple[int, int, str]]:
    """``(start, end, name)`` of every whole-word occurrence of one of ``names``, by position."""
    found: list[tuple[int, int, str]] = []
    for name in dict.fromkeys(names):
        pattern = re.compile(rf"(?<![{WORD}]){re.escape(name)}(?![{WORD}])", re.IGNORECASE)
        found += [(match.start(), match.end(), name) for match in pattern.finditer(text)]
    return sorted(found)


def mentions(text: str, names: Sequence[str]) -> list[str]:
    """Every whole-word occurrence of one of ``names`` in ``text``, in order of position."""
    return [name for _, _, name in mention_spans(text, names)]


def spelled_arguments(
    text: str, name: str, occurrence: int, parameters: Mapping[str, Any] | None
) -> str | None:
    """The arguments the prompt writes out for a call: a JSON object within ``SPELLED_GAP``
    characters after a mention of ``name`` ("call sql_query with {"query": "SELECT ..."}") that is
    valid for ``parameters``. The one after the ``occurrence``-th mention (0 for the first) first,
    else the first one after any mention; None when the prompt spells out none."""
    schema = parameters if parameters else {"type": "object", "properties": {}}
    found: list[str] = []
    for _, end, _ in mention_spans(text, [name]):
        start = text.find("{", end, end + SPELLED_GAP + 1)
        value: Any = None
        ok = False
        try:
            if start >= 0:
                value = json.JSONDecoder(strict=False).raw_decode(text, start)[0]  # a line break in a string
            ok = isinstance(value, dict) and SchemaValues(schema, text).is_valid(value)
        except Exception:  # not JSON, or a schema that cannot be checked: nothing spelled out here
            ok = False
        found.append(json.dumps(value, ensure_ascii=False) if ok else "")
    if occurrence < len(found) and found[occurrence]:
        return found[occurrence]
    return next((f for f in found if f), None)


def tool_results(messages: Sequence[Mapping[str, Any]], since: int) -> list[tuple[str, str]]:
    """``(function name, result text)`` of each tool message after index ``since``, in order.

    The name is the one of the assistant call whose id the message answers ("" when none matches).
    """
    called: dict[str, str] = {}
    out: list[tuple[str, str]] = []
    for message in messages[since + 1 :]:
        if message.get("role") == "assistant":
            for call in message.get("tool_calls") or []:
                if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):
                    called[str(call.get("id"))] = str(call["function"].get("name", ""))
        elif message.get("role") == "tool":
            out.append((called.get(str(message.get("tool_call_id")), ""), text_of(message.get("content"))))
    return out


def owed_calls(plan: Sequence[str], answered: Mapping[str, int], *, parallel: bool) -> list[str]:
    """The tool names the next answer calls, given the mentions ``plan`` and answered counts.

    Pure: the k-th mention of a tool is owed while fewer than k of its calls were answered.
    """
    seen: Counter[str] = Counter()
    owed: list[str] = []
    for name in plan:
        seen[name] += 1
        if seen[name] > answered.get(name, 0) and name not in owed:
            if not parallel:
                return [name]
            owed.append(name)
    return owed


def results_text(results: Sequence[tuple[str, str]], summarize: Callable[..., str]) -> str:
    """The final answer drawn from the tool results: each tool's name and its first sentences."""
    parts = [
        f"{name or 'tool'}: {summarize(text, max_sentences=RESULT_SENTENCES, max_chars=RESULT_CHARS)}"
        for name, text in results
    ]
    return "Based on the tool results: " + " ".join(parts)


def _fallback_text(messages: Sequence[Mapping[str, Any]], summarize: Callable[..., str]) -> str | None:
    """Today's text after tool results: a summary of the trailing tool messages (None otherwise)."""
    trailing: list[str] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        trailing.insert(0, text_of(message.get("content")))
    if not trailing:
        return None
    return "Based on the tool results: " + summarize(" ".join(trailing))


def _calls(functions: Sequence[Mapping[str, Any]]) -> list[PlannedCall]:
    return [PlannedCall(str(f.get("name")), f.get("parameters")) for f in functions]


def plan_move(body: Mapping[str, Any], summarize: Callable[..., str]) -> Move:
    """The model's move for a valid request (see the module docstring); ``summarize(text, ...)``
    makes the summaries (``answers.summarize``)."""
    messages = messages_of(body)
    functions = offered_functions(body)
    choice = body.get("tool_choice", "auto")
    if functions and isinstance(choice, Mapping):
        if choice.get("type") == "allowed_tools":
            allowed = choice.get("allowed_tools") or {}
            names = [(t.get("function") or {}).get("name") for t in allowed.get("tools") or []]
            functions = [f for f in functions if f.get("name") in names] or functions
            choice = allowed.get("mode", "auto")
        else:
            name = (choice.get("function") or {}).get("name")
            return Move(calls=_calls([f for f in functions if f.get("name") == name][:1]))
    if not functions or choice == "none":
        return Move(content=_fallback_text(messages, summarize))
    if choice == "required":
        return Move(calls=_calls(functions if body.get("parallel_tool_calls") is True else functions[:1]))
    start = latest_user_index(messages)
    question = text_of(messages[start].get("content")) if start >= 0 else ""
    plan = mentions(question, [str(f.get("name")) for f in functions])
    if not plan:
        fallback = _fallback_text(messages, summarize)
        return Move(content=fallback) if fallback is not None else Move(calls=_calls(functions[:1]))
    results = tool_results(messages, start)
    answered = Counter(name for name, _ in results)
    owed = owed_calls(plan, answered, parallel=body.get("parallel_tool_calls") is not False)
    if not owed:
        return Move(content=results_text(results, summarize))
    by_name = {str(f.get("name")): f for f in functions}
    calls = []
    for name in owed:
        parameters = by_name[name].get("parameters")
        spelled = spelled_arguments(question, name, answered.get(name, 0), parameters)
        calls.append(PlannedCall(name, parameters, spelled))
    return Move(calls=calls)


def unknown_name(name: str, offered: Sequence[str]) -> str:
    """A function name like ``name`` that is not among ``offered`` (the ``unknown_tool`` fault)."""
    candidate = f"{name[:54]}_unoffered"
    while candidate in offered:
        candidate = "x" + candidate[:63]
    return candidate
