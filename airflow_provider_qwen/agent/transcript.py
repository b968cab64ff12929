"""The record of an agent run: one type per thing, each round-tripping through JSON.

A ``Turn`` is one answer of the model (the assistant message as it is sent back, its reasoning kept
apart, what it cost) with a ``ToolCallRecord`` per call it made; a ``Transcript`` is the initial
messages and the turns, and builds the next request's messages from them. ``reasoning_content``
is kept for the person reading the transcript and never sent back: the request schema has no
such field (docs/protocol.md, "Response").
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from airflow_provider_qwen.client.pricing import to_decimal, usd_text

if TYPE_CHECKING:
    from airflow_provider_qwen.client.models import ChatCompletion

__all__ = ["OUTCOMES", "Outcome", "ToolCallRecord", "Transcript", "Turn", "TurnKind", "abridge"]

Outcome = Literal["ok", "error", "timeout", "unknown_tool", "invalid_arguments", "rejected", "not_run"]
OUTCOMES: frozenset[str] = frozenset(get_args(Outcome))
TurnKind = Literal["agent", "output"]
_CALL_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_SHOWN = 200  # characters of arguments in a summary or a log line


def abridge(text: str | None, limit: int = _SHOWN) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


@dataclass(frozen=True)
class ToolCallRecord:
    """One finished tool call: what the model asked (raw arguments), how it ended, what it was told.

    ``result`` is the exact text sent back as the tool message; ``note`` says more where there is
    more to say (who approved or rejected it, why a result was refused).
    """

    call_id: str
    name: str
    arguments: str
    outcome: Outcome
    result: str
    duration_s: float = 0.0
    note: str | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome={self.outcome!r}; allowed: {sorted(OUTCOMES)}")

    def message(self) -> dict[str, Any]:
        """The tool message answering the call."""
        return {"role": "tool", "tool_call_id": self.call_id, "content": self.result}

    def to_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "name": self.name,
            "arguments": self.arguments,
            "outcome": self.outcome,
            "result": self.result,
            "duration_s": self.duration_s,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolCallRecord:
        return cls(
            call_id=str(data["call_id"]),
            name=str(data["name"]),
            arguments=str(data.get("arguments") or ""),
            outcome=cast(Outcome, data["outcome"]),
            result=str(data.get("result") or ""),
            duration_s=float(data.get("duration_s") or 0.0),
            note=data.get("note"),
        )


@dataclass
class Turn:
    """One answer of the model and the records of the calls it made (filled in as they finish).

    ``message`` is the assistant message as it goes back into history: ``content`` and
    ``tool_calls``, never ``reasoning_content`` (kept in ``reasoning_content``). ``kind`` is
    ``"output"`` for the forced call that shapes the final value (``output_model``).
    """

    index: int
    message: dict[str, Any]
    reasoning_content: str | None = None
    calls: list[ToolCallRecord] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    usd_spent: str = "0"
    estimated: bool = False
    inference_id: str | None = None
    duration_s: float = 0.0
    finish_reason: str | None = None
    kind: TurnKind = "agent"

    @classmethod
    def from_completion(
        cls,
        index: int,
        completion: ChatCompletion,
        *,
        duration_s: float = 0.0,
        kind: TurnKind = "agent",
        taken: Collection[str] = (),
    ) -> Turn:
        """The turn of an answer. A call id must be unique in the run (a tool message names the call
        it answers; journal records and a person's decisions are keyed by it): a call without an id,
        with the id of an earlier call (``taken``: the ids of the earlier turns) or of the answer,
        or with one that is not a short plain token (Markdown, control characters: it is shown on
        the approval page and in the log) gets a stand-in."""
        calls: list[dict[str, Any]] = []
        used = set(taken)
        for number, call in enumerate(completion.tool_calls):
            call_id = call.id if call.id and _CALL_ID.fullmatch(call.id) and call.id not in used else None
            suffix = 0
            while call_id is None or call_id in used:
                call_id = f"call_{index}_{number}" + (f"_{suffix}" if suffix else "")
                suffix += 1
            used.add(call_id)
            function = {"name": call.function.name, "arguments": call.function.arguments}
            calls.append({"id": call_id, "type": "function", "function": function})
        message: dict[str, Any] = {"role": "assistant", "content": completion.content}
        if calls:
            message["tool_calls"] = calls
        elif message["content"] is None:
            message["content"] = ""  # an assistant message needs content or calls
        usage = completion.usage
        cost = completion.cost
        return cls(
            index=index,
            message=message,
            reasoning_content=completion.reasoning_content,
            usage={
                "prompt_tokens": usage.prompt_tokens if usage else 0,
                "completion_tokens": usage.completion_tokens if usage else 0,
                "reasoning_tokens": usage.reasoning_tokens if usage else 0,
                "total_tokens": usage.total_tokens if usage else 0,
            },
            usd_spent=usd_text(cost.usd_spent),
            estimated=cost.estimated,
            inference_id=completion.inference_id,
            duration_s=duration_s,
            finish_reason=completion.finish_reason,
            kind=kind,
        )

    @property
    def content(self) -> str | None:
        return cast("str | None", self.message.get("content"))

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """The calls as the model made them (wire shape), in order."""
        return cast("list[dict[str, Any]]", self.message.get("tool_calls") or [])

    def record(self, call_id: str) -> ToolCallRecord | None:
        """The finished call ``call_id``, or None while it has not finished."""
        return next((r for r in self.calls if r.call_id == call_id), None)

    @property
    def unfinished(self) -> list[dict[str, Any]]:
        """The calls that have no record yet, in order."""
        done = {r.call_id for r in self.calls}
        return [c for c in self.tool_calls if c["id"] not in done]

    def messages(self) -> list[dict[str, Any]]:
        """The assistant message, then one tool message per call in the order of the calls."""
        if self.unfinished:
            missing = ", ".join(c["id"] for c in self.unfinished)
            raise ValueError(f"turn {self.index} has calls without a result: {missing}")
        records = {r.call_id: r for r in self.calls}
        return [dict(self.message), *(records[c["id"]].message() for c in self.tool_calls)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "message": self.message,
            "reasoning_content": self.reasoning_content,
            "calls": [r.to_dict() for r in self.calls],
            "usage": dict(self.usage),
            "usd_spent": self.usd_spent,
            "estimated": self.estimated,
            "inference_id": self.inference_id,
            "duration_s": self.duration_s,
            "finish_reason": self.finish_reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Turn:
        kind = data.get("kind") or "agent"
        if kind not in ("agent", "output"):
            raise ValueError(f"turn kind={kind!r}; allowed: 'agent', 'output'")
        return cls(
            index=int(data["index"]),
            message=dict(data["message"]),
            reasoning_content=data.get("reasoning_content"),
            calls=[ToolCallRecord.from_dict(r) for r in data.get("calls") or []],
            usage={str(k): int(v) for k, v in (data.get("usage") or {}).items()},
            usd_spent=usd_text(to_decimal(data.get("usd_spent") or "0")),
            estimated=bool(data.get("estimated")),
            inference_id=data.get("inference_id"),
            duration_s=float(data.get("duration_s") or 0.0),
            finish_reason=data.get("finish_reason"),
            kind=cast(TurnKind, kind),
        )


@dataclass
class Transcript:
    """The initial messages and every turn since, in order."""

    initial: list[dict[str, Any]]
    turns: list[Turn] = field(default_factory=list)

    @property
    def agent_turns(self) -> list[Turn]:
        """The turns of the tool loop (the output turns of ``output_model`` left out)."""
        return [t for t in self.turns if t.kind == "agent"]

    def messages(self) -> list[dict[str, Any]]:
        """The next request's messages: the initial ones, then each agent turn's assistant message
        and tool results. Never a ``reasoning_content``."""
        messages = [dict(m) for m in self.initial]
        for turn in self.agent_turns:
            messages.extend(turn.messages())
        return messages

    @property
    def usd_spent(self) -> Decimal:
        """What the turns cost, in total (every try's turns once: a resumed turn is not paid again)."""
        return sum((to_decimal(t.usd_spent) for t in self.turns), Decimal(0))

    def summary(self, *, max_argument_chars: int = _SHOWN) -> dict[str, Any]:
        """A short JSON-safe account for XCom: per turn its cost, tokens, the model's time and its calls
        (arguments abridged, outcome, time); the totals (``tools_s`` adds up calls that may have run
        side by side). No message text, no reasoning."""
        turns = []
        for turn in self.turns:
            turns.append(
                {
                    "turn": turn.index,
                    "kind": turn.kind,
                    "usd_spent": turn.usd_spent,
                    "estimated": turn.estimated,
                    "total_tokens": turn.usage.get("total_tokens", 0),
                    "duration_s": round(turn.duration_s, 3),
                    "inference_id": turn.inference_id,
                    "finish_reason": turn.finish_reason,
                    "tool_calls": [
                        {
                            "call_id": r.call_id,
                            "name": r.name,
                            "arguments": abridge(r.arguments, max_argument_chars),
                            "outcome": r.outcome,
                            "duration_s": round(r.duration_s, 3),
                            **({"note": r.note} if r.note else {}),
                        }
                        for r in turn.calls
                    ],
                }
            )
        records = [r for t in self.turns for r in t.calls]
        return {
            "turns": len(self.turns),
            "tool_calls": len(records),
            "outcomes": {o: n for o in sorted(OUTCOMES) if (n := sum(r.outcome == o for r in records))},
            "usd_spent": usd_text(self.usd_spent),
            "estimated": any(t.estimated for t in self.turns),
            "total_tokens": sum(t.usage.get("total_tokens", 0) for t in self.turns),
            "model_s": round(sum(t.duration_s for t in self.turns), 3),
            "tools_s": round(sum(r.duration_s for r in records), 3),
            "per_turn": turns,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"initial": [dict(m) for m in self.initial], "turns": [t.to_dict() for t in self.turns]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Transcript:
        return cls(
            initial=[dict(m) for m in data.get("initial") or []],
            turns=[Turn.from_dict(t) for t in data.get("turns") or []],
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Transcript:
        return cls.from_dict(json.loads(text))

    @classmethod
    def start(cls, messages: Sequence[Mapping[str, Any]]) -> Transcript:
        """A transcript with no turn yet."""
        return cls(initial=[dict(m) for m in messages])
