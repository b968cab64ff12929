"""The agent loop: send, run the answer's tool calls, send their results, until the model answers.

Every model call goes through the caller's ``send`` (the operator's ``Calls.asend``, so budgets and
``qwen_cost`` hold across turns: the loop never touches money). Each answer and each call's
record is journaled as it becomes final, so a new try replays the journal and pays for no
answered turn and runs no finished call again. What a tool does wrong (it raises, it times out,
the model named no such tool or gave bad arguments) goes back to the model as the tool result.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_qwen.agent.bounds import DEFAULT_MAX_RESULT_BYTES
from airflow_provider_qwen.agent.errors import (
    AgentLoopDetectedError,
    AgentMaxTurnsError,
    AgentToolErrorsError,
    Decision,
)
from airflow_provider_qwen.agent.journal import (
    AgentJournal,
    MemoryJournal,
    OnMismatch,
    Replayed,
    answer_event,
    decision_event,
    replay,
    start_event,
)
from airflow_provider_qwen.agent.runner import (
    ApprovalPolicy,
    Approve,
    CallRunner,
    ContextFactory,
    Log,
    append_or_say,
)
from airflow_provider_qwen.agent.tools import Tool, ToolContext, as_tools
from airflow_provider_qwen.agent.transcript import Outcome, Transcript, Turn, TurnKind, abridge
from airflow_provider_qwen.client.errors import InvalidRequestError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from airflow_provider_qwen.client.models import ChatCompletion
    from airflow_provider_qwen.client.request import ChatRequest
    from airflow_provider_qwen.client.structured import ToolSpec

__all__ = ["OUTPUT_PROMPT", "AgentLoop", "AgentResult"]

Send = Callable[["ChatRequest"], Awaitable["ChatCompletion"]]
BuildRequest = Callable[[list[dict[str, Any]], list[dict[str, Any]], Any], "ChatRequest"]

OUTPUT_PROMPT = "Now give your final answer by calling {name}."
_TOOL_ERRORS: frozenset[Outcome] = frozenset({"error", "timeout"})


@dataclass(frozen=True)
class AgentResult:
    """The run's answer: ``output`` is the text, or the validated value of ``output_model`` (JSON-safe);
    ``text`` is the model's last text answer either way."""

    output: Any
    text: str | None
    transcript: Transcript

    @property
    def turns(self) -> int:
        """Answers of the model, the output turns included (each one was paid once)."""
        return len(self.transcript.turns)


class AgentLoop:
    """One agent run over ``tools`` (functions or Tools), resumable from ``journal``.

    ``build_request(messages, tools, tool_choice)`` turns a conversation into a validated request
    (the operator's parameters; ``tools`` is ``[]`` and ``tool_choice`` None without tools); ``send``
    sends it. ``context(turn, call_id)`` makes the ToolContext of a call.

    Limits: ``max_turns`` answers of the model in the tool loop (the output turns aside); the calls of
    one answer run side by side, at most ``max_parallel_tools`` at once (past ``max_calls_per_turn``
    calls of one answer, the rest are not run, the model told so), each stopped after its
    tool's ``timeout`` or ``tool_timeout``; more than ``max_tool_errors`` calls that raised or timed
    out in the run fail it; the same call (tool and arguments) made ``max_repeats`` times stops it
    as a loop. ``spent()``, when given, is the spend so far shown in the log.

    Approval: a call of a tool with ``requires_approval`` (or one ``tool_approval(tool, kwargs)``
    picks) waits for ``approve(pending)``; when that is absent or returns None, the call is
    journaled as pending and ``run`` raises ApprovalRequired once the answer's other calls ran.
    Resume, in any process, with ``run(messages, decisions={call_id: Decision(...)})``.

    A journal of another prompt or other tools is refused (JournalMismatchError) unless
    ``on_journal_mismatch="restart"``: see ``agent/journal.py``.

    ``redact(text)`` scrubs every tool result before it is journaled, logged or sent: a result or
    error that holds a secret (a repr with a key, a driver error with a DSN) carries ``***``.
    """

    def __init__(
        self,
        *,
        send: Send,
        build_request: BuildRequest,
        tools: Sequence[Callable[..., Any] | Tool] | Mapping[str, Tool] = (),
        journal: AgentJournal | None = None,
        context: ContextFactory | None = None,
        logger: Log | None = None,
        max_turns: int = 10,
        max_parallel_tools: int = 4,
        max_calls_per_turn: int = 32,
        tool_timeout: float | None = 60.0,
        max_tool_errors: int = 3,
        max_repeats: int = 3,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        output_model: type[BaseModel] | None = None,
        max_repairs: int = 2,
        tool_approval: ApprovalPolicy | None = None,
        approve: Approve | None = None,
        spent: Callable[[], Any] | None = None,
        on_journal_mismatch: OnMismatch = "fail",
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.send = send
        self.build_request = build_request
        self.tools = as_tools(list(tools.values()) if isinstance(tools, Mapping) else tools)
        self.journal: AgentJournal = journal if journal is not None else MemoryJournal()
        self.context = context or _bare_context
        self.log = logger
        self.max_turns = _count("max_turns", max_turns, 1)
        self.max_parallel_tools = _count("max_parallel_tools", max_parallel_tools, 1)
        self.max_calls_per_turn = _count("max_calls_per_turn", max_calls_per_turn, 1)
        self.max_tool_errors = _count("max_tool_errors", max_tool_errors, 0)
        self.max_repeats = _count("max_repeats", max_repeats, 2)
        self.max_result_bytes = _count("max_result_bytes", max_result_bytes, 1)
        self.max_repairs = _count("max_repairs", max_repairs, 0)
        if tool_timeout is not None and (
            isinstance(tool_timeout, bool) or not isinstance(tool_timeout, (int, float)) or tool_timeout <= 0
        ):
            raise InvalidRequestError(f"tool_timeout={tool_timeout!r} must be a number of seconds above 0")
        if on_journal_mismatch not in ("fail", "restart"):
            raise InvalidRequestError(
                f"on_journal_mismatch={on_journal_mismatch!r}; allowed: 'fail', 'restart'"
            )
        self.tool_timeout = tool_timeout
        self.tool_approval = tool_approval
        self.approve = approve
        self.spent = spent
        self.on_journal_mismatch: OnMismatch = on_journal_mismatch
        self.output_spec = _output_spec(output_model, self.tools) if output_model is not None else None
        self._wire = [t.to_wire() for t in self.tools.values()]
        self.runner = CallRunner(
            tools=self.tools,
            journal=self.journal,
            context=self.context,
            log=logger,
            max_parallel_tools=self.max_parallel_tools,
            tool_timeout=tool_timeout,
            max_result_bytes=self.max_result_bytes,
            tool_approval=tool_approval,
            approve=approve,
            redact=redact,
            max_calls_per_turn=self.max_calls_per_turn,
        )

    # -- the run ---------------------------------------------------------------------------

    async def run(
        self, messages: Sequence[Mapping[str, Any]], *, decisions: Mapping[str, Decision] | None = None
    ) -> AgentResult:
        """Run (or resume) the conversation that starts with ``messages`` to its answer."""
        state = self._resume(messages)
        transcript = state.transcript
        self._take_decisions(state, decisions or {})
        while True:
            turns = transcript.agent_turns
            last = turns[-1] if turns else None
            if last is not None and not last.tool_calls:
                break
            if last is not None:
                if len(turns) >= self.max_turns:
                    raise AgentMaxTurnsError(
                        f"the model was still calling tools after max_turns={self.max_turns} turn(s) (turn "
                        f"{last.index} asked for {', '.join(_names(last))}); its calls were not run. Raise "
                        "max_turns or narrow the task; every turn is counted in qwen_cost"
                    )
                self._check_repeats(transcript, last)
                if last.unfinished:
                    await self.runner.run(last, state)
                self._check_tool_errors(transcript)
            await self._ask(transcript, transcript.messages(), self._wire, "auto" if self._wire else None)
        text = transcript.agent_turns[-1].content
        if self.output_spec is None:
            return AgentResult(text, text, transcript)
        return AgentResult(await self._output(transcript, self.output_spec), text, transcript)

    def _resume(self, messages: Sequence[Mapping[str, Any]]) -> Replayed:
        output = self.output_spec.name if self.output_spec is not None else None
        start = start_event(messages, list(self.tools), output)
        events = self.journal.load()
        state = replay(events, start, messages, on_mismatch=self.on_journal_mismatch)
        if state is None:
            if events:
                self._warn("the agent journal was written for another prompt or tools: starting over")
            self.journal.append(start)
            return Replayed(Transcript.start(messages))
        if state.transcript.turns:
            self._info(
                "resuming from the agent journal: %d turn(s) answered and %d tool call(s) finished before; "
                "none is sent or run again",
                len(state.transcript.turns),
                state.finished_calls,
            )
        return state

    def _take_decisions(self, state: Replayed, decisions: Mapping[str, Decision]) -> None:
        """Journal the decisions given for calls still waiting (a call decided before keeps its first
        decision; one that already ran is never run again)."""
        turns = state.transcript.agent_turns
        waiting = {c["id"] for c in turns[-1].unfinished} if turns else set()
        for call_id, decision in decisions.items():
            if call_id in state.decisions or call_id not in waiting:
                continue
            if not isinstance(decision, Decision):
                raise InvalidRequestError(f"decisions[{call_id!r}]={decision!r} must be a Decision")
            self.journal.append(decision_event(turns[-1].index, call_id, decision))
            state.decisions[call_id] = decision

    async def _ask(
        self,
        transcript: Transcript,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        choice: Any,
        *,
        kind: TurnKind = "agent",
    ) -> Turn:
        """One paid request; its answer is journaled before anything else happens."""
        request = self.build_request(messages, tools, choice)
        started = time.monotonic()
        completion = await self.send(request)
        index = len(transcript.turns) + 1
        taken = [c["id"] for t in transcript.turns for c in t.tool_calls]
        turn = Turn.from_completion(
            index, completion, duration_s=time.monotonic() - started, kind=kind, taken=taken
        )
        lost = (
            f"turn {index} was answered and paid (${turn.usd_spent}) but not journaled: a retry sends it "
            "again and pays for it twice"
        )
        append_or_say(self.journal, answer_event(turn), lost)
        transcript.turns.append(turn)
        what = (
            f"calls {', '.join(_names(turn))}"
            if turn.tool_calls
            else f"answers ({len(turn.content or '')} chars)"
        )
        self._info(
            "agent turn %d: the model %s (%.2f s, $%s%s)%s",
            index,
            what,
            turn.duration_s,
            turn.usd_spent,
            ", estimated" if turn.estimated else "",
            self._spent_so_far(),
        )
        return turn

    # -- limits ----------------------------------------------------------------------------

    def _check_repeats(self, transcript: Transcript, last: Turn) -> None:
        seen: dict[tuple[str, str], int] = {}
        for turn in transcript.agent_turns:
            for call in turn.tool_calls:
                key = (call["function"]["name"], _canonical(call["function"].get("arguments") or ""))
                seen[key] = seen.get(key, 0) + 1
                if turn is last and seen[key] >= self.max_repeats:
                    raise AgentLoopDetectedError(
                        f"the model called {abridge(key[0], 64)}({abridge(key[1], 120)}) {seen[key]} times "
                        f"with the same arguments (max_repeats={self.max_repeats}): stopped as a loop at "
                        f"turn {turn.index}; give the tool a clearer result or the model a clearer task"
                    )

    def _check_tool_errors(self, transcript: Transcript) -> None:
        failed = [r for t in transcript.turns for r in t.calls if r.outcome in _TOOL_ERRORS]
        if len(failed) > self.max_tool_errors:
            listed = "; ".join(f"{r.name}: {abridge(r.result, 160)}" for r in failed[-3:])
            raise AgentToolErrorsError(
                f"{len(failed)} tool call(s) failed or timed out in this run, more than max_tool_errors="
                f"{self.max_tool_errors}; the last: {listed}"
            )

    # -- structured output -----------------------------------------------------------------

    async def _output(self, transcript: Transcript, spec: ToolSpec) -> Any:
        """The final value through the forced call of ``spec``, repaired up to ``max_repairs`` times;
        output turns already journaled are replayed, not sent again."""
        from airflow_provider_qwen.client.repair import RepairLoop

        start = [*transcript.messages(), {"role": "user", "content": OUTPUT_PROMPT.format(name=spec.name)}]
        loop = RepairLoop(spec, start, max_repairs=self.max_repairs, on_repair=self._log_repair)
        tools = [*self._wire, spec.to_tool()]
        for turn in [t for t in transcript.turns if t.kind == "output"]:
            if loop.accept(_completion_of(turn)):
                return loop.value
        while True:
            turn = await self._ask(transcript, loop.messages, tools, spec.forced_choice(), kind="output")
            if loop.accept(_completion_of(turn)):
                return loop.value

    def _log_repair(self, errors: list[str], turn: int) -> None:
        self._warn(
            "invalid final value; asking the model to repair it (repair %d of %d): %s",
            turn + 1,
            self.max_repairs,
            "; ".join(errors),
        )

    # -- logging ---------------------------------------------------------------------------

    def _spent_so_far(self) -> str:
        if self.spent is None:
            return ""
        return f"; spent so far ${self.spent()}"

    def _info(self, msg: str, *args: Any) -> None:
        if self.log is not None:
            self.log.info(msg, *args)

    def _warn(self, msg: str, *args: Any) -> None:
        if self.log is not None:
            self.log.warning(msg, *args)


def _bare_context(turn: int, call_id: str) -> ToolContext:
    return ToolContext(None, None, None, None, turn, call_id)


def _count(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InvalidRequestError(f"{name}={value!r} must be a whole number of at least {least}")
    return value


def _output_spec(model: type[BaseModel], tools: Mapping[str, Tool]) -> ToolSpec:
    from airflow_provider_qwen.client.structured import tool_spec

    spec = tool_spec(model)
    if spec.name in tools:
        raise InvalidRequestError(
            f"output_model {model.__name__}: its tool is named {spec.name!r} like one of the tools; "
            "rename one"
        )
    return spec


def _names(turn: Turn) -> list[str]:
    return [abridge(str(c["function"]["name"]), 64) for c in turn.tool_calls]  # a model's name: any size


def _canonical(arguments: str) -> str:
    """Arguments as compared for repeats: the same JSON object however it is spaced or ordered."""
    try:
        return json.dumps(json.loads(arguments or "{}"), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return arguments.strip()


def _completion_of(turn: Turn) -> ChatCompletion:
    """A journaled output turn as the completion the repair loop reads (calls, text, finish reason)."""
    from airflow_provider_qwen.client.models import CallInfo, ChatCompletion

    message = {"role": "assistant", "content": turn.content, "tool_calls": turn.tool_calls or None}
    completion = ChatCompletion.model_validate(
        {"choices": [{"index": 0, "message": message, "finish_reason": turn.finish_reason}]}
    )
    completion.call = CallInfo(inference_id=turn.inference_id)
    return completion
