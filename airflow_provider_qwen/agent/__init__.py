"""The agent: the model calls Python tools over several turns, each turn journaled. No Airflow here.

``AgentLoop(send=..., build_request=..., tools=[...]).run(messages)`` runs a conversation to its
answer; ``tool()`` makes a tool of a typed function; the journal makes a run resumable in a new
process without paying for an answered turn or running a finished call again.
"""

from airflow_provider_qwen.agent.bounds import DEFAULT_MAX_RESULT_BYTES, bound_text, result_text
from airflow_provider_qwen.agent.errors import (
    AgentError,
    AgentLoopDetectedError,
    AgentMaxTurnsError,
    AgentToolErrorsError,
    ApprovalRequired,
    Decision,
    JournalMismatchError,
    PendingCall,
    ToolArgumentsError,
)
from airflow_provider_qwen.agent.journal import AgentJournal, MemoryJournal, Replayed, replay, start_event
from airflow_provider_qwen.agent.loop import AgentLoop, AgentResult
from airflow_provider_qwen.agent.tools import Tool, ToolContext, as_tools, tool
from airflow_provider_qwen.agent.transcript import ToolCallRecord, Transcript, Turn

__all__ = [
    "DEFAULT_MAX_RESULT_BYTES",
    "AgentError",
    "AgentJournal",
    "AgentLoop",
    "AgentLoopDetectedError",
    "AgentMaxTurnsError",
    "AgentResult",
    "AgentToolErrorsError",
    "ApprovalRequired",
    "Decision",
    "JournalMismatchError",
    "MemoryJournal",
    "PendingCall",
    "Replayed",
    "Tool",
    "ToolArgumentsError",
    "ToolCallRecord",
    "ToolContext",
    "Transcript",
    "Turn",
    "as_tools",
    "bound_text",
    "replay",
    "result_text",
    "start_event",
    "tool",
]
