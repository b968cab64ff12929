"""QwenAgentOperator: the model calls Python tools over several turns, durably, within the budgets.

The loop is ``agent.AgentLoop`` (no Airflow); this is the glue: the rendered prompt, every turn
sent through the try's ``Calls`` (budgets hold across turns, ``qwen_cost`` counts each), the
journal in the task state store (else ``[qwen] storage_base``) so a retry resumes at the last
finished turn, a person's approval through Airflow's human-in-the-loop machinery (the task waits
in ``awaiting_input``, holding no worker slot), and the transcript summary in XCom.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from airflow_provider_qwen.agent.bounds import DEFAULT_MAX_RESULT_BYTES
from airflow_provider_qwen.operators.base import QwenBaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context
    from pydantic import BaseModel

    from airflow_provider_qwen.agent import AgentResult, Decision, PendingCall, Tool, ToolContext
    from airflow_provider_qwen.calls import Calls
    from airflow_provider_qwen.client.request import ChatRequest

AGENT_XCOM_KEY = "qwen_agent"
APPROVE, REJECT = "Approve", "Reject"
REASON_PARAM = "reason"
REASON_FIELD = {"value": "", "schema": {"type": "string"}, "description": "why (optional)"}
# The summary goes to XCom whole under this size; above it the transcript goes to storage.
SUMMARY_XCOM_MAX_BYTES = 48_000
# Characters that hide or reorder what a person reads on the approval page (bidi overrides,
# zero-width, control, line separators): shown as JSON escapes. (No line of indented JSON can
# start with a backtick, so the arguments cannot close their code fence.)
_UNSEEN = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]"
)


class QwenAgentOperator(QwenBaseOperator):
    """Let the model call ``tools`` over several turns and return its final answer.

    :param tools: Python functions (sync or async) with type hints and docstrings, or ``tool(...)``
        results (``airflow_provider_qwen.agent.tool``, e.g. with ``requires_approval=True``), or the
        built-in ``airflow_provider_qwen.tools`` (``sql_tool``, ``xcom_tool``, ``object_storage_tool``).
    :param output_model: a pydantic model: the final answer is a validated value of it, through a
        forced tool call (with ``max_repairs`` repairs), instead of text.
    :param max_turns: model answers before the task fails saying so.
    :param max_parallel_tools: calls of one answer run at the same time, at most this many.
    :param max_calls_per_turn: calls of one answer that run; the model is told the rest were not
        run (a model asking for a thousand calls at once runs 32, each journaled and paid for).
    :param tool_timeout: seconds a call may take (a tool's own ``timeout`` wins); a timeout is
        reported to the model as the call's result.
    :param max_tool_errors: tool failures (raised or timed out) reported back to the model before
        the task fails.
    :param max_repeats: the same call (tool and arguments) this many times stops the run as a loop.
    :param max_result_bytes: a tool result sent to the model is cut past this, with a note.
    :param tool_approval: ``(tool, arguments) -> bool``: calls that wait for a person, on top of
        the tools made with ``requires_approval=True``.
    :param approval_timeout: how long to wait for a person (a ``timedelta``); past it the calls
        are rejected and the model told so. None: no limit.
    :param fail_on_truncation: fail when an answer was cut at the token limit (default: warn).
    :param parallel_tool_calls: False asks the model for one call per answer (None: its default).

    Every parameter of :class:`QwenBaseOperator` applies (prompt files, generation parameters,
    ``max_cost_usd``, ``dag_run_budget_usd``). ``return_value`` is the answer; ``qwen_agent`` the
    transcript summary (or, when long, ``{"transcript_path": ...}`` and the totals).
    """

    def __init__(
        self,
        *,
        tools: Sequence[Callable[..., Any] | Tool] = (),
        output_model: type[BaseModel] | None = None,
        max_turns: int = 10,
        max_parallel_tools: int = 4,
        max_calls_per_turn: int = 32,
        tool_timeout: float | None = 60.0,
        max_tool_errors: int = 3,
        max_repeats: int = 3,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        max_repairs: int = 2,
        tool_approval: Callable[[Tool, Mapping[str, Any]], bool] | None = None,
        approval_timeout: timedelta | None = None,
        fail_on_truncation: bool = False,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> None:
        from airflow_provider_qwen.agent import as_tools

        super().__init__(**kwargs)
        self.agent_tools = as_tools(list(tools))  # a bad tool fails when the DAG is parsed
        self.output_model = output_model
        self.loop_options: dict[str, Any] = {
            "max_turns": max_turns,
            "max_parallel_tools": max_parallel_tools,
            "max_calls_per_turn": max_calls_per_turn,
            "tool_timeout": tool_timeout,
            "max_tool_errors": max_tool_errors,
            "max_repeats": max_repeats,
            "max_result_bytes": max_result_bytes,
            "max_repairs": max_repairs,
        }
        self.tool_approval = tool_approval
        if approval_timeout is not None and not isinstance(approval_timeout, timedelta):
            raise TypeError(f"approval_timeout={approval_timeout!r}: give a datetime.timedelta or None")
        if approval_timeout is not None and approval_timeout <= timedelta(0):
            raise ValueError(f"approval_timeout={approval_timeout!r}: give a positive timedelta, or None")
        self.approval_timeout = approval_timeout
        self.fail_on_truncation = fail_on_truncation
        self.parallel_tool_calls = parallel_tool_calls
        self.check_flags(fail_on_truncation=fail_on_truncation)
        if parallel_tool_calls is not None:
            self.check_flags(parallel_tool_calls=parallel_tool_calls)
        self._agent_loop(send=None, context=None)  # the loop's own checks, at parse time
        self.validate_static_parameters()

    # -- running ------------------------------------------------------------------------------

    def run(self, context: Context, calls: Calls) -> Any:
        return self._run_agent(context, calls, decisions=None)

    def execute_approval(
        self, context: Context, event: Mapping[str, Any], pending: Sequence[str] = ()
    ) -> Any:
        """Resume after a person answered (or the wait timed out): their decision goes to the loop,
        which carries on from the journal; what this try spent before the pause is counted again."""
        decision = approval_decision(event)
        self.log.info(
            "approval of %s: %s%s",
            ", ".join(pending) or "the waiting calls",
            "approved" if decision.approved else "rejected",
            f" ({decision.reason})" if decision.reason else "",
        )
        decisions = dict.fromkeys(pending, decision)
        return self.metered(
            context, lambda ctx, calls: self._run_agent(ctx, calls, decisions=decisions), resumed=True
        )

    def _run_agent(self, context: Context, calls: Calls, decisions: Mapping[str, Decision] | None) -> Any:
        from airflow_provider_qwen.agent import ApprovalRequired

        messages = self.rendered_messages(context)

        async def go() -> AgentResult:
            self.attach_loop()  # a kill or a timeout cancels this task: the turn or tool unwinds
            async with self.hook.async_client() as client:

                async def send(request: ChatRequest) -> Any:
                    return await calls.asend(request, client, fail_on_truncation=self.fail_on_truncation)

                loop = self._agent_loop(
                    send=send, context=context, spent=lambda: calls.cost.spent_usd, redact=_redactor(client)
                )
                return await loop.run(messages, decisions=decisions)

        try:
            result = asyncio.run(go())
        except ApprovalRequired as waiting:
            self._ask_for_approval(context, waiting.pending)  # raises TaskAwaitingInput
            raise
        self._push_summary(context, result)
        return result.output

    def _agent_loop(
        self,
        *,
        send: Any,
        context: Context | None,
        spent: Callable[[], Any] | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> Any:
        from airflow_provider_qwen.agent import AgentLoop, MemoryJournal
        from airflow_provider_qwen.storage import agent_journal

        return AgentLoop(
            send=send,
            build_request=self._build_turn,
            tools=self.agent_tools,
            journal=agent_journal(context) if context is not None else MemoryJournal(),
            context=tool_context_factory(context),
            logger=cast(Any, self.log),  # structlog's logger takes the same calls
            output_model=self.output_model,
            tool_approval=self.tool_approval,
            spent=spent,
            redact=redact,
            **self.loop_options,
        )

    def extra_request_params(self) -> dict[str, Any]:
        """A recursive output model is sent with ``$defs`` for the gateway to rewrite (as
        QwenToolCallOperator does), unless the user set ``normalize_tool_schemas``."""
        from airflow_provider_qwen.client.structured import tool_spec

        if self.output_model is None or "normalize_tool_schemas" in self.generation_params:
            return {}
        recursive = tool_spec(self.output_model).needs_gateway_normalization
        return {"normalize_tool_schemas": True} if recursive else {}

    def _build_turn(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], tool_choice: Any
    ) -> ChatRequest:
        overrides: dict[str, Any] = {}
        if tools:
            overrides = {"tools": tools, "tool_choice": tool_choice}
            if self.parallel_tool_calls is not None:
                overrides["parallel_tool_calls"] = self.parallel_tool_calls
        return self.build_request(messages, **overrides)

    # -- approval -----------------------------------------------------------------------------

    def _ask_for_approval(self, context: Context, pending: Sequence[PendingCall]) -> None:
        """Show the waiting calls to a person (Airflow's HITL detail) and park the task."""
        from airflow.sdk.exceptions import TaskAwaitingInput
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail

        names = ", ".join(f"{p.name} ({p.call_id})" for p in pending)
        self.log.info("waiting for a person to approve %s; no worker slot is held meanwhile", names)
        upsert_hitl_detail(
            ti_id=context["task_instance"].id,
            options=[APPROVE, REJECT],
            subject=f"Qwen agent {self.task_id}: approve {len(pending)} tool call(s)?",
            body=approval_body(pending),
            defaults=[REJECT],
            multiple=False,
            params={REASON_PARAM: REASON_FIELD},
        )
        raise TaskAwaitingInput(
            method_name="execute_approval",
            kwargs={"pending": [p.call_id for p in pending]},
            timeout=self.approval_timeout,
        )

    # -- results ------------------------------------------------------------------------------

    def _push_summary(self, context: Context, result: AgentResult) -> None:
        summary = result.transcript.summary()
        if len(json.dumps(summary)) > SUMMARY_XCOM_MAX_BYTES:
            summary = {
                **{k: v for k, v in summary.items() if k != "per_turn"},
                "transcript_path": self._store_transcript(context, result),
            }
        self.log.info(
            "agent answered after %d turn(s), %d tool call(s), %s USD",
            summary["turns"],
            summary["tool_calls"],
            summary["usd_spent"],
        )
        if self.do_xcom_push:
            context["ti"].xcom_push(key=AGENT_XCOM_KEY, value=summary)

    @staticmethod
    def _store_transcript(context: Context, result: AgentResult) -> str:
        from airflow_provider_qwen.storage import task_folder

        ti = context["ti"]
        folder = task_folder(context) / "agent"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"transcript-try-{getattr(ti, 'try_number', 0)}.json"
        path.write_text(result.transcript.to_json())
        return str(path)


def approval_decision(event: Mapping[str, Any]) -> Decision:
    """A person's answer (the HITL resume event) as the loop's ``Decision``; a timeout rejects."""
    from airflow_provider_qwen.agent import Decision

    if event.get("timedout") or event.get("error_type") == "timeout":
        return Decision(approved=False, reason="no decision came within approval_timeout")
    chosen = event.get("chosen_options")
    params = event.get("params_input")
    params = params if isinstance(params, Mapping) else {}  # any other shape: no reason given
    reason = params.get(REASON_PARAM)
    reason = (reason.strip() or None) if isinstance(reason, str) else None
    user = event.get("responded_by_user") or {}
    by = str(user.get("name") or user.get("id") or "") or None if isinstance(user, Mapping) else None
    approved = isinstance(chosen, (list, tuple)) and list(chosen) == [APPROVE]  # exactly Approve
    return Decision(approved=approved, reason=reason, by=by)


def approval_body(pending: Sequence[PendingCall]) -> str:
    """The calls a person is asked about, in Markdown: tool, what it does, arguments."""
    parts = ["The agent wants to run these tool calls. Approve runs them all; Reject tells the model no."]
    for call in pending:
        try:
            arguments = json.dumps(json.loads(call.arguments), indent=2, ensure_ascii=False)
        except ValueError:
            arguments = json.dumps(call.arguments, ensure_ascii=False)  # one quoted line, fenced
        arguments = _UNSEEN.sub(lambda m: f"\\u{ord(m.group()):04x}", arguments)
        about = f"\n\n{call.description}" if call.description else ""
        heading = f"### {call.name} (turn {call.turn}, call `{call.call_id}`)"
        parts.append(f"{heading}{about}\n\n```json\n{arguments}\n```")
    return "\n\n".join(parts)


def _redactor(client: Any) -> Callable[[str], str]:
    """What scrubs a tool result: Airflow's secrets masker (every connection password and variable
    the task read, the API key among them), then the client's own scrubber (the key in any form)."""
    from airflow.sdk.log import redact as airflow_redact

    own = getattr(client, "_redact", None)

    def scrub(text: str) -> str:
        masked = airflow_redact(text)
        text = str(masked)
        return own(text) if callable(own) else text

    return scrub


def tool_context_factory(context: Context | None) -> Callable[[int, str], ToolContext]:
    """Makes each call's ``ToolContext`` from the task's Airflow context."""
    from airflow_provider_qwen.agent import ToolContext

    ti = context.get("ti") if context is not None else None

    def make(turn: int, call_id: str) -> ToolContext:
        return ToolContext(
            run_id=getattr(ti, "run_id", None),
            task_id=getattr(ti, "task_id", None),
            map_index=getattr(ti, "map_index", None),
            try_number=getattr(ti, "try_number", None),
            turn=turn,
            call_id=call_id,
            airflow_context=context,
            dag_id=getattr(ti, "dag_id", None),
        )

    return make
