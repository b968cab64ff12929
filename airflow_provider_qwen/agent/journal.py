"""Durability: the agent's append-only journal of events, and the replay that rebuilds a run from it.

The loop appends an event the moment something is final: the model's answer of a turn as soon as
it arrives (a crash while the tools run does not pay for it again), each tool call's record as the
call finishes (a resume runs no finished call again), calls waiting for a person and the
decisions. A new try (any process) replays the events and carries on where the last one stopped.

Events are JSON objects with a ``type``:

- ``start``: the run's fingerprint (initial messages, tool names, output tool), first of a run;
- ``answer``: a ``Turn`` as received (``turn``: ``Turn.to_dict()``, no call records yet);
- ``call``: one finished call (``turn``: its index, ``record``: ``ToolCallRecord.to_dict()``);
- ``pending``: calls that wait for approval (``calls``: ``PendingCall.to_dict()`` each);
- ``decision``: a person's decision on one call (``call_id``, ``decision``: ``Decision.to_dict()``).

A journal written for another prompt or other tools (the DAG changed between tries) is refused
by default with JournalMismatchError saying what changed: reusing its turns would answer another
question, and starting over silently would pay again and may act twice. ``on_mismatch="restart"``
starts over instead: a new ``start`` event is appended and replay reads from the last one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from airflow_provider_qwen.agent.errors import Decision, JournalMismatchError, PendingCall
from airflow_provider_qwen.agent.transcript import ToolCallRecord, Transcript, Turn

__all__ = [
    "EVENT_VERSION",
    "AgentJournal",
    "MemoryJournal",
    "OnMismatch",
    "Replayed",
    "answer_event",
    "call_event",
    "decision_event",
    "pending_event",
    "replay",
    "start_event",
]

EVENT_VERSION = 1
OnMismatch = Literal["fail", "restart"]


@runtime_checkable
class AgentJournal(Protocol):
    """Where a run's events live between tries. ``append`` returns once the event is durable;
    ``load`` returns every event appended so far, in order (a torn last one left out)."""

    def load(self) -> list[dict[str, Any]]: ...

    def append(self, event: dict[str, Any]) -> None: ...


class MemoryJournal:
    """A journal in memory (tests, one-process runs). Events go through JSON both ways, so what
    works here also works with a journal on disk."""

    def __init__(self, events: Sequence[Mapping[str, Any]] = ()) -> None:
        self.events: list[dict[str, Any]] = [json.loads(json.dumps(e)) for e in events]

    def load(self) -> list[dict[str, Any]]:
        return [json.loads(json.dumps(e)) for e in self.events]

    def append(self, event: dict[str, Any]) -> None:
        self.events.append(json.loads(json.dumps(event)))


# -- events -----------------------------------------------------------------------------------


def start_event(
    messages: Sequence[Mapping[str, Any]], tool_names: Sequence[str], output_tool: str | None = None
) -> dict[str, Any]:
    """The first event of a run: what the journal's turns answer (messages and tools, hashed)."""
    messages_sha256 = _sha256(list(messages))
    tools = list(tool_names)
    return {
        "type": "start",
        "version": EVENT_VERSION,
        "fingerprint": _sha256({"messages": messages_sha256, "tools": tools, "output_tool": output_tool}),
        "messages_sha256": messages_sha256,
        "tools": tools,
        "output_tool": output_tool,
    }


def answer_event(turn: Turn) -> dict[str, Any]:
    data = turn.to_dict()
    data["calls"] = []
    return {"type": "answer", "turn": data}


def call_event(turn: int, record: ToolCallRecord) -> dict[str, Any]:
    return {"type": "call", "turn": turn, "record": record.to_dict()}


def pending_event(turn: int, calls: Sequence[PendingCall]) -> dict[str, Any]:
    return {"type": "pending", "turn": turn, "calls": [c.to_dict() for c in calls]}


def decision_event(turn: int, call_id: str, decision: Decision) -> dict[str, Any]:
    return {"type": "decision", "turn": turn, "call_id": call_id, "decision": decision.to_dict()}


# -- replay -----------------------------------------------------------------------------------


@dataclass
class Replayed:
    """A run rebuilt from its events: the transcript, calls journaled as pending, the decisions."""

    transcript: Transcript
    pending: dict[str, PendingCall] = field(default_factory=dict)
    decisions: dict[str, Decision] = field(default_factory=dict)

    @property
    def finished_calls(self) -> int:
        return sum(len(t.calls) for t in self.transcript.turns)


def replay(
    events: Sequence[Mapping[str, Any]],
    start: Mapping[str, Any],
    messages: Sequence[Mapping[str, Any]],
    *,
    on_mismatch: OnMismatch = "fail",
) -> Replayed | None:
    """The run the events after the last ``start`` describe, or None to start afresh (no events, or
    a mismatch with ``on_mismatch="restart"``). ``start`` is the current run's ``start_event``.

    Raises JournalMismatchError for a journal of another prompt or other tools (``"fail"``), or a
    journal that does not read as one run (events out of order, an unknown version).
    """
    odd = next((i for i, e in enumerate(events, start=1) if not isinstance(e, Mapping)), None)
    if odd is not None:
        raise JournalMismatchError(
            f"the agent journal's event {odd} is {type(events[odd - 1]).__name__}, not an event: the journal "
            "was edited or damaged. Clear the task's state (or its storage folder) to start over"
        )
    last = max((i for i, e in enumerate(events) if e.get("type") == "start"), default=None)
    if last is None:
        if events:
            raise JournalMismatchError(f"the agent journal has {len(events)} event(s) but no start event")
        return None
    found = events[last]
    if found.get("version") != EVENT_VERSION:
        raise JournalMismatchError(
            f"the agent journal has version {found.get('version')!r}; this provider reads {EVENT_VERSION}"
        )
    if found.get("fingerprint") != start["fingerprint"]:
        if on_mismatch == "restart":
            return None
        raise JournalMismatchError(_mismatch(found, start, events[last + 1 :]))
    state = Replayed(Transcript.start(messages))
    for number, event in enumerate(events[last + 1 :], start=last + 2):
        try:
            _apply(state, event)
        except JournalMismatchError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # edited or torn by hand
            what = event.get("type")
            raise JournalMismatchError(
                f"the agent journal's event {number} ({what!r}) is malformed ({type(exc).__name__}: "
                f"{str(exc)[:200]}): the journal was edited or damaged. Clear the task's state (or its "
                "storage folder) to start over; every turn is paid again"
            ) from None
    return state


def _check_turn(turn: Turn) -> None:
    """A journaled answer has the shape the loop wrote: text or None, calls with ids and names."""
    content = turn.message.get("content")
    if content is not None and not isinstance(content, str):
        raise TypeError(f"turn {turn.index}: content is {type(content).__name__}")
    calls = turn.message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise TypeError(f"turn {turn.index}: tool_calls is {type(calls).__name__}")
    ids = []
    for call in calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        if not (
            isinstance(function, Mapping)
            and isinstance(call.get("id"), str)
            and isinstance(function.get("name"), str)
            and isinstance(function.get("arguments") or "", str)
        ):
            raise TypeError(f"turn {turn.index}: a tool call is {call!r:.120}")
        ids.append(call["id"])
    if len(set(ids)) != len(ids):
        raise ValueError(f"turn {turn.index}: two tool calls share an id")


def _apply(state: Replayed, event: Mapping[str, Any]) -> None:
    turns = state.transcript.turns
    kind = event.get("type")
    if kind == "answer":
        turn = Turn.from_dict(event["turn"])
        _check_turn(turn)
        if turn.index != len(turns) + 1:
            raise JournalMismatchError(
                f"the agent journal is out of order: turn {turn.index} follows {len(turns)} turn(s)"
            )
        turn.calls = []
        turns.append(turn)
        return
    if kind not in ("call", "pending", "decision"):
        raise JournalMismatchError(f"the agent journal has an event of unknown type {kind!r}")
    index = int(event.get("turn") or 0)
    if not 1 <= index <= len(turns):
        raise JournalMismatchError(f"the agent journal has a {kind!r} event for turn {index}, never answered")
    turn = turns[index - 1]
    if kind == "call":
        record = ToolCallRecord.from_dict(event["record"])
        if record.call_id not in {c["id"] for c in turn.tool_calls}:
            raise JournalMismatchError(f"the agent journal has a result for {record.call_id!r}, never called")
        if turn.record(record.call_id) is None:  # a duplicate (two writers) is the same call once
            add_record(turn, record)
        state.pending.pop(record.call_id, None)
    elif kind == "pending":
        for data in event.get("calls") or []:
            pending = PendingCall.from_dict(data)
            if turn.record(pending.call_id) is None:
                state.pending[pending.call_id] = pending
    else:
        state.decisions.setdefault(str(event["call_id"]), Decision.from_dict(event["decision"]))


def add_record(turn: Turn, record: ToolCallRecord) -> None:
    """Add ``record`` to ``turn``, the records kept in the order of the calls."""
    order = {c["id"]: i for i, c in enumerate(turn.tool_calls)}
    turn.calls.append(record)
    turn.calls.sort(key=lambda r: order.get(r.call_id, len(order)))


def _mismatch(found: Mapping[str, Any], start: Mapping[str, Any], rest: Sequence[Mapping[str, Any]]) -> str:
    changed = []
    if found.get("messages_sha256") != start.get("messages_sha256"):
        changed.append("other messages (the prompt, system prompt or messages changed)")
    old, new = list(found.get("tools") or []), list(start.get("tools") or [])
    if old != new:
        added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
        parts = [f"added {added}" if added else "", f"removed {removed}" if removed else ""]
        said = "; ".join(p for p in parts if p) or "reordered"
        changed.append(f"other tools ({said})")
    if found.get("output_tool") != start.get("output_tool"):
        changed.append(
            f"another output tool ({found.get('output_tool')!r}, now {start.get('output_tool')!r})"
        )
    answered = sum(e.get("type") == "answer" for e in rest)
    ran = sum(e.get("type") == "call" for e in rest)
    return (
        f"the agent journal of this task was written for {' and '.join(changed) or 'another run'}: its "
        f"{answered} answered turn(s) and {ran} tool call(s) cannot be reused. Restore the DAG as it was, "
        "or pass on_journal_mismatch='restart' to start over (every turn is paid again, every tool may run "
        "again)"
    )


def _sha256(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
