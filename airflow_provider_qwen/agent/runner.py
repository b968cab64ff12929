"""The tool calls of one answer: run side by side, bounded, each with its timeout; approvals asked.

What a call does wrong comes back as its record (the result text the model reads): the model named
no such tool, gave bad arguments, the tool raised or ran out of time, a person rejected it. Each
record is journaled the moment it is final, so a resume runs no finished call again.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from airflow_provider_qwen.agent.bounds import bound_text, result_text
from airflow_provider_qwen.agent.errors import ApprovalRequired, Decision, PendingCall, ToolArgumentsError
from airflow_provider_qwen.agent.journal import (
    AgentJournal,
    Replayed,
    add_record,
    call_event,
    decision_event,
    pending_event,
)
from airflow_provider_qwen.agent.tools import Tool, ToolContext
from airflow_provider_qwen.agent.transcript import Outcome, ToolCallRecord, Turn, abridge
from airflow_provider_qwen.client.errors import InvalidRequestError

__all__ = ["ApprovalPolicy", "Approve", "CallRunner", "ContextFactory", "Log", "append_or_say"]

ContextFactory = Callable[[int, str], ToolContext]
ApprovalPolicy = Callable[[Tool, dict[str, Any]], bool]
Approve = Callable[[PendingCall], "Decision | Awaitable[Decision | None] | None"]


class Log(Protocol):
    """The logger the loop writes to (``logging.Logger``, an operator's ``self.log``)."""

    def info(self, msg: str, *args: Any) -> None: ...

    def warning(self, msg: str, *args: Any) -> None: ...


class CallRunner:
    """Runs the unfinished calls of a turn (see AgentLoop for what each option means)."""

    def __init__(
        self,
        *,
        tools: Mapping[str, Tool],
        journal: AgentJournal,
        context: ContextFactory,
        log: Log | None,
        max_parallel_tools: int,
        tool_timeout: float | None,
        max_result_bytes: int,
        tool_approval: ApprovalPolicy | None,
        approve: Approve | None,
        redact: Callable[[str], str] | None = None,
        max_calls_per_turn: int | None = None,
    ) -> None:
        self.tools = tools
        self.journal = journal
        self.context = context
        self.log = log
        self.max_parallel_tools = max_parallel_tools
        self.tool_timeout = tool_timeout
        self.max_result_bytes = max_result_bytes
        self.tool_approval = tool_approval
        self.approve = approve
        self.redact = redact
        self.max_calls_per_turn = max_calls_per_turn

    async def run(self, turn: Turn, state: Replayed) -> None:
        """Every unfinished call of ``turn``, side by side (at most ``max_parallel_tools`` running);
        each record journaled as it finishes. Raises ApprovalRequired for calls left waiting."""
        limit = asyncio.Semaphore(self.max_parallel_tools)
        waiting: list[PendingCall] = []

        async def one(call: dict[str, Any]) -> None:
            found = await self._call(turn, call, limit, state)
            if isinstance(found, PendingCall):
                waiting.append(found)
                return
            add_record(turn, found)
            if found.outcome == "not_run":  # nothing ran: not journaled, the same on a resume
                return
            lost = (
                f"the call {found.name} ({found.call_id}) of turn {turn.index} ran but its result was not "
                "journaled: a retry runs it again (with the same idempotency key)"
            )
            append_or_say(self.journal, call_event(turn.index, found), lost)
            state.pending.pop(found.call_id, None)
            self._info(
                "agent turn %d: %s(%s) -> %s in %.2f s%s",
                turn.index,
                found.name,
                abridge(found.arguments, 120),
                found.outcome,
                found.duration_s,
                f" ({found.note})" if found.note else "",
            )

        tasks = [asyncio.ensure_future(one(call)) for call in turn.unfinished]
        if self.max_calls_per_turn is not None and len(turn.tool_calls) > self.max_calls_per_turn:
            self._info(
                "agent turn %d: the model made %d tool calls; only the first %d run (max_calls_per_turn)",
                turn.index,
                len(turn.tool_calls),
                self.max_calls_per_turn,
            )
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        if waiting:
            order = [c["id"] for c in turn.tool_calls]
            waiting.sort(key=lambda p: order.index(p.call_id))
            new = [p for p in waiting if p.call_id not in state.pending]
            if new:
                self.journal.append(pending_event(turn.index, new))
                state.pending.update({p.call_id: p for p in new})
            self._info(
                "agent turn %d: waiting for approval of %s", turn.index, ", ".join(p.name for p in waiting)
            )
            raise ApprovalRequired(waiting)

    async def _call(
        self, turn: Turn, call: dict[str, Any], limit: asyncio.Semaphore, state: Replayed
    ) -> ToolCallRecord | PendingCall:
        call_id = str(call["id"])
        # A name no tool has may be anything the model wrote (10 MB, newlines): shown abridged in the
        # record, the log, the summary and the message back (the assistant message keeps it whole).
        name = str(call["function"]["name"])
        name = name if name in self.tools else abridge(name, 64)
        arguments = str(call["function"].get("arguments") or "")

        def record(
            outcome: Outcome, result: str, duration: float = 0.0, note: str | None = None
        ) -> ToolCallRecord:
            if self.redact is not None:  # a secret in a result (a repr, an error) reaches no one
                result = self.redact(result)
                note = self.redact(note) if note is not None else None
            return ToolCallRecord(call_id, name, arguments, outcome, result, duration, note)

        position = [c["id"] for c in turn.tool_calls].index(call_id) + 1
        if self.max_calls_per_turn is not None and position > self.max_calls_per_turn:
            return record(
                "not_run",
                f"Not run: one answer may make at most {self.max_calls_per_turn} tool calls and this was "
                f"call {position} of {len(turn.tool_calls)}. Make the calls you still need in your next "
                "answer.",
            )
        found = self.tools.get(name)
        if found is None:
            listed = ", ".join(self.tools) or "(none)"
            return record("unknown_tool", f"There is no tool named {name!r}. The tools are: {listed}.")
        try:
            kwargs = found.parse(arguments)
        except ToolArgumentsError as exc:
            return record("invalid_arguments", bound_text(exc.message, self.max_result_bytes))
        note = None
        if self._needs_approval(found, kwargs, call_id, state):
            decision = await self._decision(turn, found, call_id, arguments, state)
            if decision is None:
                return PendingCall(call_id, name, arguments, turn.index, found.description)
            if not decision.approved:
                because = f": {decision.reason.rstrip('.')}." if decision.reason else "."
                text = f"A person rejected this call{because} Do not make it again unless you are asked to."
                by = f"rejected by {decision.by}" if decision.by else "rejected"
                return record("rejected", bound_text(text, self.max_result_bytes), note=by)
            note = f"approved by {decision.by}" if decision.by else "approved"
        async with limit:
            return await self._invoke(found, kwargs, self.context(turn.index, call_id), record, note)

    async def _invoke(
        self,
        found: Tool,
        kwargs: dict[str, Any],
        context: ToolContext,
        record: Callable[..., ToolCallRecord],
        note: str | None,
    ) -> ToolCallRecord:
        timeout = found.timeout if found.timeout is not None else self.tool_timeout
        started = time.monotonic()
        task = asyncio.ensure_future(found.invoke(kwargs, context))
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except BaseException:
            task.cancel()
            raise
        duration = time.monotonic() - started
        if not done:
            task.cancel()
            task.add_done_callback(_retrieve)
            text = (
                f"The tool {found.name} did not finish within {timeout:g} s and was stopped. Try a "
                "smaller request, or go on without it."
            )
            return record("timeout", text, duration, note)
        error = CancelledByTool() if task.cancelled() else task.exception()
        if error is not None and not isinstance(error, Exception):
            raise error  # the process is going down (SystemExit, KeyboardInterrupt): not the model's news
        if error is not None:
            text = bound_text(
                f"The tool {found.name} failed: {type(error).__name__}: {_text_of(error)}",
                self.max_result_bytes,
            )
            return record("error", text, duration, note)
        try:
            return record("ok", result_text(task.result(), self.max_result_bytes), duration, note)
        except Exception as exc:  # a result JSON cannot hold (a cycle, too deep, a __str__ that raises)
            why = f"{type(exc).__name__}: {_text_of(exc)}"
            text = f"The tool {found.name} returned a result that is not JSON: {why}"
            return record("error", bound_text(text, self.max_result_bytes), duration, note)

    def _needs_approval(self, found: Tool, kwargs: dict[str, Any], call_id: str, state: Replayed) -> bool:
        """Whether a person decides this call (once journaled as pending, always: the policy may differ
        on a later try)."""
        if found.requires_approval or call_id in state.pending or call_id in state.decisions:
            return True
        return self.tool_approval is not None and bool(self.tool_approval(found, kwargs))

    async def _decision(
        self, turn: Turn, found: Tool, call_id: str, arguments: str, state: Replayed
    ) -> Decision | None:
        decision = state.decisions.get(call_id)
        if decision is not None or self.approve is None:
            return decision
        answer = self.approve(PendingCall(call_id, found.name, arguments, turn.index, found.description))
        if inspect.isawaitable(answer):
            answer = await answer
        if answer is None:
            return None
        if not isinstance(answer, Decision):
            raise InvalidRequestError(f"approve() returned {answer!r}; return a Decision or None (ask later)")
        self.journal.append(decision_event(turn.index, call_id, answer))
        state.decisions[call_id] = answer
        return answer

    def _info(self, msg: str, *args: Any) -> None:
        if self.log is not None:
            self.log.info(msg, *args)


class CancelledByTool(Exception):
    """A tool's own code cancelled it (not the loop): reported to the model as an error."""

    def __str__(self) -> str:
        return "the tool's task was cancelled"


def append_or_say(journal: AgentJournal, event: dict[str, Any], lost: str) -> None:
    """Journal ``event``; when the journal cannot be written, fail saying what that loses."""
    from airflow_provider_qwen.agent.stores import JournalStoreError

    try:
        journal.append(event)
    except Exception as exc:
        raise JournalStoreError(f"{_text_of(exc)}; {lost}") from exc


def _text_of(error: BaseException) -> str:
    """``str(error)``, or a stand-in when even that fails (a hostile ``__str__``)."""
    try:
        return str(error)
    except Exception:
        return "(its message cannot be shown)"


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Read a stopped tool's outcome, so asyncio does not report it as never retrieved."""
    if not task.cancelled():
        task.exception()
