"""The agent: the model calls Python tools over several turns, each turn journaled. No Airflow here.

``tool()`` makes a tool of a typed function: its schema from the signature, typed arguments back.
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
from airflow_provider_qwen.agent.tools import Tool, ToolContext, as_tools, tool

__all__ = [
    "DEFAULT_MAX_RESULT_BYTES",
    "AgentError",
    "AgentLoopDetectedError",
    "AgentMaxTurnsError",
    "AgentToolErrorsError",
    "ApprovalRequired",
    "Decision",
    "JournalMismatchError",
    "PendingCall",
    "Tool",
    "ToolArgumentsError",
    "ToolContext",
    "as_tools",
    "bound_text",
    "result_text",
    "tool",
]
