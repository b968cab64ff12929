"""Repair turns for invalid tool calls: show the model its own call and the violations, ask again.

``RepairLoop`` drives a forced call to a valid value (QwenToolCallOperator and the batch share it);
``repair_calls_messages`` builds the turn for several tools.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_qwen.client.errors import StructuredOutputError
from airflow_provider_qwen.client.structured import CheckedCall, ToolSpec, response_calls, structured_value

if TYPE_CHECKING:
    from airflow_provider_qwen.client.models import ChatCompletion


def repair_messages(
    completion: ChatCompletion, errors: Sequence[str], *, tool_name: str
) -> list[dict[str, Any]]:
    """The follow-up turn after ``structured_value`` failed: the model's own call and a tool answer
    listing ``errors`` that asks it to call ``tool_name`` again. Append it to the conversation and
    resend with the tool still forced."""
    calls = response_calls(completion)
    if not calls:
        return _no_call_turn(completion, errors, tool_name)
    target = next((c for c in calls if c.name == tool_name), calls[0])
    answers = {
        c.id: _rejected(c.name, errors) if c is target else f"Ignored: call {tool_name} exactly once."
        for c in calls
    }
    return _calls_turn(calls, answers)


class RepairLoop:
    """The forced-call repair loop, shared by the operator (sync) and the batch (async).

    Send ``messages``, pass the answer to ``accept``; repeat while it returns False::

        loop = RepairLoop(spec, messages, max_repairs=2)
        while not loop.accept(send(build(loop.messages))):
            pass
        loop.value

    ``on_repair(errors, turn)`` is called before each repair turn is appended; after the last turn
    ``give_up(errors)`` builds the exception raised (default: a StructuredOutputError listing them).
    """

    def __init__(
        self,
        spec: ToolSpec,
        messages: Sequence[dict[str, Any]],
        *,
        max_repairs: int,
        on_repair: Callable[[list[str], int], None] | None = None,
        give_up: Callable[[list[str]], BaseException] | None = None,
    ) -> None:
        self.spec = spec
        self.messages: list[dict[str, Any]] = list(messages)
        self.max_repairs = max_repairs
        self.on_repair = on_repair
        self.give_up = give_up
        self.turn = 0
        self.value: Any = None
        self.errors: list[str] = []

    def accept(self, completion: ChatCompletion) -> bool:
        """True when the answer holds a valid call (``value`` is set); False when a repair turn was
        appended to ``messages``; raises after the last turn."""
        try:
            self.value = structured_value(completion, self.spec)
            return True
        except StructuredOutputError as exc:
            self.errors = exc.errors
        if self.turn >= self.max_repairs:
            raise self._gave_up()
        if self.on_repair is not None:
            self.on_repair(self.errors, self.turn)
        self.messages = [*self.messages, *repair_messages(completion, self.errors, tool_name=self.spec.name)]
        self.turn += 1
        return False

    def _gave_up(self) -> BaseException:
        if self.give_up is not None:
            return self.give_up(self.errors)
        return StructuredOutputError(
            f"the arguments for {self.spec.name} were still invalid after {self.max_repairs} repair "
            f"turn(s): " + "; ".join(self.errors),
            errors=self.errors,
        )


def repair_calls_messages(
    completion: ChatCompletion, checked: Sequence[CheckedCall], *, missing: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The follow-up turn for several tools: each call answered (accepted, or its errors); without
    any call, a user message listing ``missing``."""
    if not checked:
        return _no_call_turn(completion, missing, "a tool")
    return _calls_turn(checked, {c.id: "Accepted." if c.ok else _rejected(c.name, c.errors) for c in checked})


def _calls_turn(calls: Sequence[CheckedCall], answers: Mapping[str, str]) -> list[dict[str, Any]]:
    """The assistant's calls echoed (``content=None``; never ``reasoning_content``, which the request
    schema lacks), then one tool message per call id."""
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ],
    }
    return [assistant, *({"role": "tool", "tool_call_id": c.id, "content": answers[c.id]} for c in calls)]


def _no_call_turn(completion: ChatCompletion, errors: Sequence[str], tool: str) -> list[dict[str, Any]]:
    listed = "".join(f"\n- {e}" for e in errors)
    return [
        {"role": "assistant", "content": completion.content or ""},
        {"role": "user", "content": f"You did not call {tool}.{listed}\nCall {tool} now."},
    ]


def _rejected(name: str, errors: Sequence[str]) -> str:
    listed = "".join(f"\n- {e}" for e in errors)
    return (
        f"Your call of {name} was rejected. Problems:{listed}\n"
        f"Call {name} again with corrected arguments that satisfy its JSON schema."
    )
