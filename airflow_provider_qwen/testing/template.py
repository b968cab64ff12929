"""The Qwen3.5/3.6 chat template, rendered the way the service counts ``prompt_tokens``.

The emulator's own rendering (an oracle does not import the client's)::

    <|im_start|>system\\n{system}\\n\\n# Tools ... <tools>\\n{tool JSON}\\n...</tools> ...<|im_end|>\\n
    <|im_start|>user\\n{text}<|im_end|>\\n
    <|im_start|>assistant\\n{content}\\n<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>
        <|im_end|>\\n
    <|im_start|>user\\n<tool_response>\\n{result}\\n</tool_response><|im_end|>\\n
    <|im_start|>assistant\\n<think>\\n                     (the generation prompt)

With tools the system turn always exists (the tools block, after the system text when the first
message is a system one); without tools a system message is a turn like the others. Consecutive
tool results share one user turn. ``enable_thinking: false`` closes the thinking block at once
(``\\n</think>\\n\\n``). Special tokens count one each, text goes through ``vocabulary.count``. For
the seed's ``"Hi! What do you think about mankind?"`` this gives the 19 ``prompt_tokens`` the
service reported.

Completion tokens are the generated text counted the same way: reasoning, content and each tool
call in its template form (``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow_provider_qwen.testing import vocabulary

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
THINK, END_THINK = "<think>", "</think>"
TOOL_CALL, END_TOOL_CALL = "<tool_call>", "</tool_call>"
TOOL_RESPONSE, END_TOOL_RESPONSE = "<tool_response>", "</tool_response>"
TOOLS_INTRO = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\n"
)
TOOLS_EXAMPLE = '\n{"name": <function-name>, "arguments": <args-json-object>}\n'


class Special(str):
    """A special token of the template (one token, whatever its characters)."""


def content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list concatenated."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def tool_call_parts(name: str, arguments: Any) -> list[str]:
    """One tool call as the model writes it (``arguments`` as sent when a string, else as JSON)."""
    args = arguments if isinstance(arguments, str) else _json(arguments)
    return [Special(TOOL_CALL), f'\n{{"name": {_json(name)}, "arguments": {args}}}\n', Special(END_TOOL_CALL)]


def _messages(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [m for m in body.get("messages") or [] if isinstance(m, Mapping)]


def render(body: Mapping[str, Any]) -> list[str]:
    """The prompt of a chat-completions body as template parts (``Special`` or plain text)."""
    messages = _messages(body)
    tools = [t for t in body.get("tools") or [] if isinstance(t, Mapping)]
    parts: list[str] = []
    if tools:
        parts += [Special(IM_START), "system\n"]
        if messages and messages[0].get("role") == "system":
            parts.append(content_text(messages[0].get("content")) + "\n\n")
            messages = messages[1:]
        parts.append(TOOLS_INTRO)
        parts += ["\n" + _json(tool) for tool in tools]
        parts += [TOOLS_OUTRO, Special(TOOL_CALL), TOOLS_EXAMPLE, Special(END_TOOL_CALL)]
        parts += [Special(IM_END), "\n"]
    for index, message in enumerate(messages):
        role = str(message.get("role") or "user")
        text = content_text(message.get("content"))
        if role == "tool":
            if index == 0 or messages[index - 1].get("role") != "tool":
                parts += [Special(IM_START), "user"]
            parts += ["\n", Special(TOOL_RESPONSE), f"\n{text}\n", Special(END_TOOL_RESPONSE)]
            if index == len(messages) - 1 or messages[index + 1].get("role") != "tool":
                parts += [Special(IM_END), "\n"]
            continue
        parts += [Special(IM_START), f"{role}\n{text}"]
        if role == "assistant":
            for number, call in enumerate(message.get("tool_calls") or []):
                function = call.get("function") if isinstance(call, Mapping) else None
                if not isinstance(function, Mapping):
                    continue
                if number or text:
                    parts.append("\n")
                parts += tool_call_parts(str(function.get("name", "")), function.get("arguments", "{}"))
        parts += [Special(IM_END), "\n"]
    parts += [Special(IM_START), "assistant\n", Special(THINK), "\n"]
    if body.get("enable_thinking") is False:
        parts += ["\n", Special(END_THINK), "\n\n"]
    return parts


def count_parts(parts: Iterable[str]) -> int:
    """Tokens of template parts: one per special token, runs of text encoded together.

    Counted in one call when no text holds a special token's characters (the usual case), else
    run by run, so a user's ``<|im_start|>`` counts as the characters it is.
    """
    parts = list(parts)
    if not any(vocabulary.has_special(p) for p in parts if not isinstance(p, Special)):
        return vocabulary.count_marked("".join(parts))
    total, run = 0, list[str]()
    for part in parts:
        if isinstance(part, Special):
            total += 1 + vocabulary.count("".join(run))
            run = []
        else:
            run.append(part)
    return total + vocabulary.count("".join(run))


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """``prompt_tokens`` of a request body, as the service reports them."""
    return count_parts(render(body))


def prompt_chars(body: Mapping[str, Any]) -> int:
    """Characters of the prompt's text (cheap: decides whether counting is worth a thread)."""
    total = sum(len(content_text(m.get("content"))) for m in _messages(body))
    return total + len(_json(body.get("tools") or []))


def completion_tokens(reasoning: str, content: str, calls: Sequence[tuple[str, str]]) -> int:
    """Tokens of a generated answer: reasoning, content and each ``(name, arguments)`` tool call."""
    total = vocabulary.count(reasoning) + vocabulary.count(content)
    return total + sum(count_parts(tool_call_parts(name, args)) for name, args in calls)
