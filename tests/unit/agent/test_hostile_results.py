"""Tools returning what JSON cannot hold, or raising errors that cannot be printed: the model is
told, the run goes on (before, each of these crashed the task, and every retry ran the call again)."""

from __future__ import annotations

import asyncio
import json

import pytest

from airflow_provider_qwen.agent import AgentLoop, tool
from airflow_provider_qwen.agent.bounds import result_text
from tests.unit.agent._fakes import Model, answer, build, call


class BadStr:
    def __str__(self) -> str:
        raise RuntimeError("no text")

    __repr__ = __str__


class Unprintable(Exception):
    def __str__(self) -> str:
        raise ZeroDivisionError


def _deep() -> list:
    value: list = []
    for _ in range(100_000):
        value = [value]
    return value


def _raise(error: Exception):
    raise error


RESULTS = {
    "a __str__ that raises": (lambda: [BadStr()], "error", "RuntimeError: no text"),
    "nested too deep": (_deep, "error", "RecursionError"),
    "an error whose message raises": (lambda: _raise(Unprintable()), "error", "cannot be shown"),
}


@pytest.mark.parametrize("case", sorted(RESULTS))
def test_a_result_or_error_that_cannot_be_written_is_reported(case):
    make, outcome, said = RESULTS[case]

    def hostile() -> object:
        """Hostile."""
        return make()

    model = Model(answer(None, call("hostile", {}, call_id="a")), answer("ok"))
    result = asyncio.run(
        AgentLoop(send=model, build_request=build, tools=[tool(hostile)]).run(
            [{"role": "user", "content": "go"}]
        )
    )
    (record,) = result.transcript.turns[0].calls
    assert record.outcome == outcome
    assert said in record.result
    assert result.output == "ok"


def test_nan_and_infinity_go_back_as_valid_json():
    text = result_text({"mean": float("nan"), "max": float("inf"), "min": float("-inf"), "rows": [1.5]})
    assert json.loads(text) == {"mean": "NaN", "max": "Infinity", "min": "-Infinity", "rows": [1.5]}


def test_a_huge_unknown_tool_name_is_shown_abridged():
    from tests.unit.agent._fakes import Lines

    lines = Lines()
    name = "x\n" * 1_000_000
    model = Model(answer(None, call(name, {}, call_id="a")), answer("ok"))
    loop = AgentLoop(send=model, build_request=build, tools=[], logger=lines)
    result = asyncio.run(loop.run([{"role": "user", "content": "go"}]))

    (record,) = result.transcript.turns[0].calls
    assert record.outcome == "unknown_tool"
    assert len(record.name) <= 64
    assert len(record.result) < 300
    assert max(len(line) for line in lines.lines) < 500
    assert len(json.dumps(result.transcript.summary())) < 5_000
