"""How an agent run stops short of an answer: one class per reason, each saying what to change.

Every failure is a ``QwenError`` (the operators' error handling covers it); ``ApprovalRequired`` is
not a failure but a pause: the operator catches it, asks a person and resumes with the decisions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_qwen.client.errors import QwenError, StructuredOutputError


class ToolArgumentsError(StructuredOutputError):
    """A call's arguments are not JSON or break the tool's signature; ``errors`` lists each problem.

    The message is written for the model: it goes back to it as the tool result.
    """


class AgentError(QwenError):
    """Base of the agent's own failures (the model's calls are paid for and counted in qwen_cost)."""


class AgentMaxTurnsError(AgentError):
    """The model was still calling tools when ``max_turns`` answers had been received."""


class AgentLoopDetectedError(AgentError):
    """The model made the same call (same tool, same arguments) ``max_repeats`` times."""


class AgentToolErrorsError(AgentError):
    """More than ``max_tool_errors`` tool calls of the run raised or timed out."""


class JournalMismatchError(AgentError):
    """The journal was written for another prompt or other tools (the DAG changed between tries)."""


@dataclass(frozen=True)
class PendingCall:
    """A call waiting for a person's decision: what to show them, and what the decision is keyed on."""

    call_id: str
    name: str
    arguments: str
    turn: int
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "name": self.name,
            "arguments": self.arguments,
            "turn": self.turn,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PendingCall:
        return cls(
            call_id=str(data["call_id"]),
            name=str(data["name"]),
            arguments=str(data.get("arguments") or ""),
            turn=int(data["turn"]),
            description=data.get("description"),
        )


@dataclass(frozen=True)
class Decision:
    """A person's answer to a pending call; ``reason`` goes to the model on a rejection, ``by`` to the
    transcript."""

    approved: bool
    reason: str | None = None
    by: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.approved, bool):  # "false" or 1 must not read as an approval
            raise TypeError(f"Decision(approved={self.approved!r}): give True or False")

    def to_dict(self) -> dict[str, Any]:
        return {"approved": self.approved, "reason": self.reason, "by": self.by}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        """A journaled decision: only ``true`` approves (an edited ``"false"`` is no approval)."""
        reason, by = data.get("reason"), data.get("by")
        return cls(
            approved=data["approved"] is True,
            reason=reason if isinstance(reason, str) else None,
            by=by if isinstance(by, str) else None,
        )


class ApprovalRequired(Exception):
    """Calls wait for a person. They are journaled as pending, every other call of the answer has
    run; resume the loop (any process, with the same journal) passing ``decisions`` by call id."""

    def __init__(self, pending: Sequence[PendingCall]) -> None:
        self.pending = list(pending)
        names = ", ".join(f"{p.name} ({p.call_id})" for p in self.pending)
        super().__init__(f"{len(self.pending)} tool call(s) wait for approval: {names}")
