"""A journal that cannot be written: before anything is paid the run fails with nothing sent; after a
turn was paid or a call ran, the error says what that loses (paid twice, run again)."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_qwen.agent import AgentLoop, tool
from airflow_provider_qwen.agent.journal import MemoryJournal
from airflow_provider_qwen.agent.stores import JournalStoreError
from tests.unit.agent._fakes import Model, answer, build, call


class FullDisk(MemoryJournal):
    """Takes ``room`` events, then every write fails."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def append(self, event):
        if len(self.events) >= self.room:
            raise OSError(28, "No space left on device")
        super().append(event)


@tool
def echo(x: int) -> int:
    """Echo."""
    return x


def _run(journal):
    model = Model(answer(None, call("echo", {"x": 1}, call_id="a"), usd="0.25"), answer("ok"))
    loop = AgentLoop(send=model, build_request=build, tools=[echo], journal=journal)
    return model, loop


def test_a_journal_that_cannot_be_written_fails_before_anything_is_paid():
    model, loop = _run(FullDisk(0))
    with pytest.raises(OSError, match="No space"):
        asyncio.run(loop.run([{"role": "user", "content": "go"}]))
    assert model.requests == []


def test_a_paid_turn_that_cannot_be_journaled_says_it_will_be_paid_again():
    model, loop = _run(FullDisk(1))
    with pytest.raises(JournalStoreError, match=r"turn 1 was answered and paid \(\$0.25\) but not journaled"):
        asyncio.run(loop.run([{"role": "user", "content": "go"}]))
    assert len(model.requests) == 1


def test_a_call_that_ran_but_cannot_be_journaled_says_it_runs_again():
    _model, loop = _run(FullDisk(2))
    with pytest.raises(JournalStoreError, match=r"the call echo \(a\) of turn 1 ran but its result was not"):
        asyncio.run(loop.run([{"role": "user", "content": "go"}]))
