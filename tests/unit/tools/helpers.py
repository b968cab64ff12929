"""Helpers of the built-in tools' tests: a tool context, ``call(tool, **arguments)`` (through the
tool's own argument parsing and invocation, as the agent loop does) and a database's state."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_qwen.agent.tools import Tool, ToolContext

CONN_ID = "agent_db"
ROWS = 250


def make_context(airflow_context: Any = None) -> ToolContext:
    """The context of call ``call_1`` in turn 1 of task ``agent``."""
    from airflow_provider_qwen.agent.tools import ToolContext

    return ToolContext(
        run_id="manual__1",
        task_id="agent",
        map_index=None,
        try_number=1,
        turn=1,
        call_id="call_1",
        airflow_context=airflow_context,
    )


def call(tool: Tool, context: ToolContext | None = None, **arguments: Any) -> Any:
    """Run one call of ``tool`` as the loop does: JSON arguments parsed and validated, then invoked."""
    kwargs = tool.parse(json.dumps(arguments))
    return asyncio.run(tool.invoke(kwargs, context or make_context()))


def db_state(path: Path) -> tuple[str, list[Any], int]:
    """(sha256 of the file, the schema, the row count), read through a connection of its own."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with sqlite3.connect(path) as conn:
        schema = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        count = conn.execute("SELECT count(*) FROM items").fetchone()[0]
    conn.close()
    return digest, schema, count
