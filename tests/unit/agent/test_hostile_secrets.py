"""A secret in what a tool returns or raises (a repr holding a key, a driver error with a DSN) never
reaches the journal, the model, the log or an exception: every result goes through ``redact``."""

from __future__ import annotations

import asyncio
import json

import pytest

from airflow_provider_qwen.agent import AgentLoop, AgentToolErrorsError, tool
from airflow_provider_qwen.agent.journal import MemoryJournal
from tests.unit.agent._fakes import Lines, Model, answer, build, call

KEY = "sk-hostile-0123456789abcdef0123456789abcdef"


class Client:
    def __repr__(self) -> str:
        return f"Client(api_key={KEY!r})"


@tool
def leaky() -> object:
    """Returns an object whose text holds the key."""
    return {"client": Client()}


@tool
def raises() -> str:
    """Fails with the key in its message."""
    raise RuntimeError(f"cannot connect to postgresql://user:{KEY}@db/x")


def _scrub(text: str) -> str:
    return text.replace(KEY, "***")


def test_a_secret_in_a_result_or_an_error_reaches_nobody() -> None:
    journal, lines = MemoryJournal(), Lines()
    model = Model(
        answer(None, call("leaky", {}, call_id="a"), call("raises", {}, call_id="b")),
        answer(None, call("raises", {}, call_id="c")),
    )
    loop = AgentLoop(
        send=model,
        build_request=build,
        tools=[leaky, raises],
        journal=journal,
        logger=lines,
        max_tool_errors=1,
        redact=_scrub,
    )
    with pytest.raises(AgentToolErrorsError) as failed:
        asyncio.run(loop.run([{"role": "user", "content": "go"}]))

    assert KEY not in str(failed.value)
    assert KEY not in json.dumps(journal.events)
    assert KEY not in json.dumps(model.bodies)
    assert KEY not in "\n".join(lines.lines)
    assert "***" in json.dumps(model.bodies[1])  # the model learns the call failed, not the key
