"""What the emulated model answers: deterministic text, reasoning, tool calls, usage and cost.

- Text: an extractive summary of the last user message (its first sentences), or of the tool
  results when the last message is a tool answer. ``stop`` sequences cut it; the token budget
  (``max_completion_tokens``, else ``max_tokens``) cuts it with ``finish_reason: "length"``.
- Reasoning: present when asked for (``reasoning_effort``, or ``reasoning`` without
  ``exclude: true``) and absent otherwise. The real qwen3.7-max also reasons unasked (the published
  example carries ``reasoning_content``); the emulator keeps unrequested answers short and cheap, and
  a test that wants reasoning asks for it. ``reasoning.exclude`` bills the reasoning but hides it.
  Reasoning counts against the budget first, as on the service.
- Tool calls: ``tool_choice`` naming a function calls it; ``"required"`` calls the first tool, or every
  tool when ``parallel_tool_calls`` is true; ``"auto"`` (the default with tools) plays an agent: it
  calls the tools the latest user message names, several in one answer unless ``parallel_tool_calls``
  is false, then answers in text from their results; with no tool named it calls the first tool
  unless the last message is a tool result, when it answers in text (``agent_play.py`` has the exact
  rules). Arguments come from the tool's parameters schema and validate against it (see
  ``values.py``), each call with a fresh ``call_...`` id. A scripted turn (``scripts.py``) is played
  instead of all this when the request's script has one queued.
- Tool-call faults apply to every call of the answer: ``bad_json_args`` (arguments that are not
  JSON), ``schema_invalid_args`` (JSON that breaks the tool's schema), ``unknown_tool`` (the name of
  a function that was not offered).
- Structured output: ``response_format`` ``json_schema`` makes the content a JSON instance of the
  schema (``json_object``: a small JSON object), built like tool arguments (see ``values.py``).
- Tokens: the service's, from the Qwen3.5/3.6 vocabulary and chat template (``template.py``):
  ``prompt_tokens`` of the rendered prompt, ``completion_tokens`` of the generated reasoning,
  content and tool calls. A token budget cuts text at a token boundary. Cost: exact Decimal from a
  price table (USD per 1M tokens, reasoning billed as output); credits are rounded up to an integer
  and ``usd = credits / 2,000,000``, as the service reports.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from airflow_provider_qwen.testing import agent_play, template, vocabulary
from airflow_provider_qwen.testing.arguments import broken_json, invalid_arguments, tool_arguments
from airflow_provider_qwen.testing.billing import Prices
from airflow_provider_qwen.testing.scripts import Turn
from airflow_provider_qwen.testing.values import UnsupportedSchema

SUMMARY_SENTENCES = 3
SUMMARY_CHARS = 480
REASONING_LINES = {"low": 2, "medium": 4, "high": 7}


def count_tokens(text: str) -> int:
    """Tokens of ``text`` in the Qwen vocabulary (digits one each)."""
    return vocabulary.count(text)


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """Prompt tokens as the service reports them: the chat template around the messages and tools."""
    return template.prompt_tokens(body)


def sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+|\n+", text)
    return [" ".join(p.split()) for p in parts if p.strip()]


def material(text: str) -> str:
    """The part of a prompt that carries its content: from the longest paragraph on.

    Prompts usually put instructions first and the document after them, so an extractive summary
    of the whole message would only repeat the instructions.
    """
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    if len(paragraphs) < 2:
        return text
    longest = max(range(len(paragraphs)), key=lambda i: len(paragraphs[i]))
    return "\n\n".join(paragraphs[longest:])


def summarize(text: str, *, max_sentences: int = SUMMARY_SENTENCES, max_chars: int = SUMMARY_CHARS) -> str:
    """The first sentences of the prompt's content (``material``), at most ``max_chars`` characters."""
    chosen: list[str] = []
    content = [s.lstrip("-*• ") for s in sentences(material(text)) if not s.endswith(":")]
    for sentence in content[:max_sentences]:
        if chosen and len(" ".join([*chosen, sentence])) > max_chars:
            break
        chosen.append(sentence)
    summary = " ".join(chosen)
    if len(summary) > max_chars:
        summary = summary[:max_chars].rsplit(" ", 1)[0] or summary[:max_chars]
    return summary or "I have nothing to summarise: the message is empty."


def last_user_text(body: Mapping[str, Any]) -> str:
    for message in reversed([m for m in body.get("messages") or [] if isinstance(m, Mapping)]):
        if message.get("role") == "user":
            return agent_play.text_of(message.get("content"))
    return ""


def reasoning_effort(body: Mapping[str, Any]) -> tuple[str | None, int | None, bool]:
    """(effort, reasoning token cap, excluded) when reasoning is asked for, else (None, None, False)."""
    reasoning = body.get("reasoning")
    if isinstance(reasoning, Mapping):
        effort = reasoning.get("effort") or body.get("reasoning_effort") or "medium"
        return str(effort), reasoning.get("max_tokens"), bool(reasoning.get("exclude"))
    if body.get("reasoning_effort"):
        return str(body["reasoning_effort"]), None, False
    return None, None, False


def reasoning_text(question: str, effort: str) -> str:
    """Deterministic thinking about ``question``; longer for a higher effort."""
    found = sentences(question) or ["(an empty message)"]
    words = len(question.split())
    lines = [
        f'The user wrote {words} words. The request starts with: "{found[0][:200]}"',
        "A faithful answer keeps the user's own key sentences, in order, and adds nothing.",
    ]
    for index, sentence in enumerate((found * REASONING_LINES["high"])[: REASONING_LINES.get(effort, 4) - 2]):
        lines.append(f"Point {index + 1} to keep: {sentence[:160]}")
    lines.append("Answer: the first sentences of the message, as a short summary.")
    return "\n".join(lines)


@dataclass
class ToolCallOut:
    id: str
    name: str
    arguments: str


@dataclass
class Answer:
    """One generated answer, before it is shaped into a response or a stream."""

    content: str
    reasoning: str | None
    reasoning_tokens: int
    tool_calls: list[ToolCallOut] = field(default_factory=list)
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    budget_used: int | None = None  # set when the token budget stopped the answer: all of it was spent

    @property
    def completion_tokens(self) -> int:
        if self.budget_used is not None:
            return self.budget_used
        calls = [(c.name, c.arguments) for c in self.tool_calls]
        return self.reasoning_tokens + template.completion_tokens("", self.content, calls)

    def usage(self) -> dict[str, Any]:
        completion = self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }


def _cut(text: str, tokens: int) -> str:
    return vocabulary.head(text, tokens)


def plan_answer(
    body: Mapping[str, Any],
    *,
    fault_kind: str | None = None,
    prompt_tokens: int | None = None,
    turn: Turn | None = None,
) -> Answer:
    """The answer to a valid request; ``fault_kind`` shapes it (length, bad or invalid arguments,
    an unknown tool name); ``turn`` is a scripted turn to play instead of deciding (``scripts.py``).

    ``prompt_tokens`` when already counted (the server counts them to check the context window).
    """
    question = last_user_text(body)
    budget = body.get("max_completion_tokens") or body.get("max_tokens")
    budget = int(budget) if budget else None
    total_budget = budget
    effort, reasoning_cap, excluded = reasoning_effort(body)
    if turn is not None and turn.reasoning is not None:
        effort, reasoning = effort or "scripted", turn.reasoning  # shown unless excluded, asked or not
    else:
        reasoning = reasoning_text(question, effort) if effort else ""
    if reasoning_cap:
        reasoning = _cut(reasoning, int(reasoning_cap))
    length = fault_kind == "length"
    if budget is not None and count_tokens(reasoning) >= budget:
        reasoning, budget, length = _cut(reasoning, budget), 0, True
    elif budget is not None:
        budget -= count_tokens(reasoning)
    answer = Answer(
        content="",
        reasoning=None if not effort or excluded else reasoning,
        reasoning_tokens=count_tokens(reasoning),
        prompt_tokens=template.prompt_tokens(body) if prompt_tokens is None else prompt_tokens,
    )
    if length and budget == 0:
        answer.budget_used = total_budget
    move = _scripted_move(body, turn) if turn is not None else agent_play.plan_move(body, summarize)
    if move.calls:
        answer.tool_calls = _tool_calls(body, move, question, fault_kind)
        answer.content = move.content or ""
        answer.finish_reason = "tool_calls"
        if length or (budget is not None and answer.completion_tokens - answer.reasoning_tokens > budget):
            if _truncate_calls(answer.tool_calls, budget, halve=length):
                answer.budget_used = total_budget
            answer.finish_reason = "length"
        return answer
    content = move.content
    if content is None:
        content = structured_content(body, question) or summarize(question)
    content = _apply_stop(content, body.get("stop"))
    if length:
        content = content[: max(len(content) // 2, 1)]
    if budget is not None and count_tokens(content) > budget:
        content, length = _cut(content, budget), True
        answer.budget_used = total_budget
    answer.content = content
    answer.finish_reason = "length" if length else "stop"
    return answer


def _scripted_move(body: Mapping[str, Any], turn: Turn) -> agent_play.Move:
    """A scripted turn as a move: its calls (with the offered tool's schema when there is one)."""
    offered = {str(f.get("name")): f for f in agent_play.offered_functions(body)}
    calls = [
        agent_play.PlannedCall(c.name, (offered.get(c.name) or {}).get("parameters"), c.arguments, c.id)
        for c in turn.tool_calls
    ]
    return agent_play.Move(calls=calls, content=turn.content)


def _tool_calls(
    body: Mapping[str, Any], move: agent_play.Move, question: str, fault_kind: str | None
) -> list[ToolCallOut]:
    """The move's calls with their arguments: as scripted, else generated from each tool's schema
    (from the prompt, see ``values.py``); the argument and name faults apply to every call."""
    offered = [str(f.get("name")) for f in agent_play.offered_functions(body)]
    out = []
    for call in move.calls:
        arguments = call.arguments
        if arguments is None or fault_kind == "schema_invalid_args":
            generate = invalid_arguments if fault_kind == "schema_invalid_args" else tool_arguments
            try:
                arguments = generate(call.parameters, question)
            except UnsupportedSchema as exc:
                raise UnsupportedSchema(f"tools[{call.name}].function.parameters: {exc}") from None
        if fault_kind == "bad_json_args":
            arguments = broken_json(arguments)
        name = agent_play.unknown_name(call.name, offered) if fault_kind == "unknown_tool" else call.name
        out.append(ToolCallOut(call.id or f"call_{uuid.uuid4().hex[:24]}", name, arguments))
    return out


def structured_content(body: Mapping[str, Any], question: str) -> str | None:
    """The JSON content ``response_format`` asks for (None for plain text)."""
    wanted = body.get("response_format")
    if not isinstance(wanted, Mapping):
        return None
    if wanted.get("type") == "json_schema":
        spec = wanted.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        try:
            return tool_arguments(schema if isinstance(schema, Mapping) else None, question)
        except UnsupportedSchema as exc:
            raise UnsupportedSchema(f"response_format.json_schema.schema: {exc}") from None
    if wanted.get("type") == "json_object":
        return json.dumps({"answer": summarize(question)}, ensure_ascii=False)
    return None


def _truncate_calls(calls: list[ToolCallOut], budget: int | None, *, halve: bool) -> bool:
    """Cut arguments to half (a length fault) and so the calls fit ``budget`` tokens (True if cut)."""
    for call in calls:
        if halve:
            call.arguments = call.arguments[: max(len(call.arguments) // 2, 1)]
    if budget is None:
        return False
    cut = False
    for call in calls:
        overhead = template.completion_tokens("", "", [(call.name, "")])
        tokens = overhead + count_tokens(call.arguments)
        if tokens > budget:
            call.arguments, cut = _cut(call.arguments, budget - overhead), True
        budget = max(budget - tokens, 0)
    return cut


def _apply_stop(text: str, stop: str | Sequence[str] | None) -> str:
    """``text`` up to the first stop sequence (which is not included)."""
    sequences = [stop] if isinstance(stop, str) else list(stop or [])
    cuts = [text.find(s) for s in sequences if s and s in text]
    return text[: min(cuts)] if cuts else text


def logprobs(text: str, top: int) -> dict[str, Any]:
    """A ``logprobs`` object for ``text``: one entry per Qwen token, ``top`` alternatives each."""
    content = []
    for index, raw in enumerate(vocabulary.pieces(text)):
        token = raw.decode("utf-8", errors="replace")
        chosen = -0.01 * (1 + index % 7)
        alternatives = [token, *(f"{token}{k}" for k in range(1, top))][:top]
        content.append(
            {
                "token": token,
                "logprob": chosen,
                "bytes": list(raw),
                "top_logprobs": [
                    {"token": alt, "logprob": chosen - 1.5 * k, "bytes": list(alt.encode())}
                    for k, alt in enumerate(alternatives)
                ],
            }
        )
    return {"content": content, "refusal": []}


def bill(model: str, answer: Answer, prices: Prices) -> tuple[int, Decimal]:
    """(credits, usd) for an answer, with the emulator's own arithmetic (see ``billing``)."""
    return prices.bill(model, answer.prompt_tokens, answer.completion_tokens)


def usd_text(usd: Decimal) -> str:
    """A Decimal as plain digits (no exponent), as the cost header carries it."""
    text = format(usd, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
