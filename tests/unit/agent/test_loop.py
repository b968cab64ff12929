"""The agent loop with a scripted model: turns, parallel calls, what goes back to the model, limits."""

from __future__ import annotations

import asyncio
import datetime
import threading
from collections import Counter

import pytest
from pydantic import BaseModel

from airflow_provider_qwen.agent import (
    AgentLoop,
    AgentLoopDetectedError,
    AgentMaxTurnsError,
    AgentToolErrorsError,
    tool,
)
from airflow_provider_qwen.client.errors import InvalidRequestError, StructuredOutputError
from tests.unit.agent._fakes import Lines, Model, answer, build, call

PROMPT = [
    {"role": "system", "content": "Use the tools."},
    {"role": "user", "content": "Weather in Paris and Rome?"},
]


def agent(model: Model, tools, **options) -> AgentLoop:
    return AgentLoop(send=model, build_request=build, tools=tools, **options)


def run(loop: AgentLoop, messages=PROMPT, **kwargs):
    return asyncio.run(loop.run(messages, **kwargs))


def test_a_multi_turn_run_with_parallel_calls_sends_history_the_service_accepts():
    seen: list[tuple[str, datetime.date]] = []
    events: dict[str, asyncio.Event] = {}

    async def forecast(city: str, day: datetime.date) -> dict:
        """The forecast of a city.

        :param city: the city
        """
        events.setdefault("Paris", asyncio.Event())
        events.setdefault("Rome", asyncio.Event())
        seen.append((city, day))
        events[city].set()
        other = "Rome" if city == "Paris" else "Paris"
        await events[other].wait()  # both calls are running at once, or this never returns
        return {"city": city, "day": day, "celsius": 21 if city == "Paris" else 25}

    def hotter(a: int, b: int) -> str:
        return "Rome" if b > a else "Paris"

    model = Model(
        answer(
            None,
            call("forecast", {"city": "Paris", "day": "2026-07-01"}, "c1"),
            call("forecast", {"city": "Rome", "day": "2026-07-01"}, "c2"),
            reasoning="Check both.",
        ),
        answer("Comparing.", call("hotter", {"a": 21, "b": 25}, "c3"), reasoning="Compare."),
        answer("Rome is hotter.", reasoning="Done.", usd="0.002"),
    )
    log = Lines()
    result = run(agent(model, [forecast, hotter], tool_timeout=5, logger=log, spent=lambda: "0.0040"))
    assert result.output == result.text == "Rome is hotter."
    assert result.turns == 3
    assert sorted(seen) == [("Paris", datetime.date(2026, 7, 1)), ("Rome", datetime.date(2026, 7, 1))]
    first, second, third = model.bodies
    assert first["messages"] == PROMPT
    assert first["tool_choice"] == "auto"
    assert [t["function"]["name"] for t in first["tools"]] == ["forecast", "hotter"]
    history = second["messages"][2:]
    assert history[0] == {
        "role": "assistant",
        "tool_calls": [
            call("forecast", {"city": "Paris", "day": "2026-07-01"}, "c1"),
            call("forecast", {"city": "Rome", "day": "2026-07-01"}, "c2"),
        ],
    }
    assert history[1] == {
        "role": "tool",
        "tool_call_id": "c1",
        "content": '{"city": "Paris", "day": "2026-07-01", "celsius": 21}',
    }
    assert history[2]["tool_call_id"] == "c2"
    assert third["messages"][5:] == [
        {
            "role": "assistant",
            "content": "Comparing.",
            "tool_calls": [call("hotter", {"a": 21, "b": 25}, "c3")],
        },
        {"role": "tool", "tool_call_id": "c3", "content": "Rome"},
    ]
    for body in model.bodies:
        assert "reasoning_content" not in str(body)
    assert [t.reasoning_content for t in result.transcript.turns] == ["Check both.", "Compare.", "Done."]
    summary = result.transcript.summary()
    assert summary["usd_spent"] == "0.004"
    assert summary["outcomes"] == {"ok": 3}
    assert any("forecast(" in line and "Paris" in line and "-> ok" in line for line in log.lines)
    assert any("agent turn 1: the model calls forecast, forecast" in line for line in log.lines)
    assert all("spent so far $0.0040" in line for line in log.lines if "the model" in line)


def test_sync_tools_of_one_answer_run_side_by_side_in_threads():
    barrier = threading.Barrier(2, timeout=5)

    def meet(name: str) -> str:
        barrier.wait()  # raises BrokenBarrierError unless both calls run at once
        return name

    model = Model(
        answer(None, call("meet", {"name": "a"}, "c1"), call("meet", {"name": "b"}, "c2")), answer("ok")
    )
    result = run(agent(model, [meet]))
    assert [r.outcome for r in result.transcript.turns[0].calls] == ["ok", "ok"]


def test_max_parallel_tools_bounds_the_calls_running_at_once():
    running = Counter()

    async def work(n: int) -> int:
        running["now"] += 1
        running["peak"] = max(running["peak"], running["now"])
        for _ in range(5):
            await asyncio.sleep(0)
        running["now"] -= 1
        return n

    model = Model(answer(None, *(call("work", {"n": n}, f"c{n}") for n in range(5))), answer("ok"))
    result = run(agent(model, [work], max_parallel_tools=2))
    assert running["peak"] == 2
    assert [r.result for r in result.transcript.turns[0].calls] == ["0", "1", "2", "3", "4"]


class Window(BaseModel):
    start: datetime.date
    days: int


def test_typed_arguments_a_date_and_a_pydantic_model():
    got = []

    def report(day: datetime.date, window: Window) -> str:
        got.append((day, window))
        return "fine"

    model = Model(
        answer(None, call("report", {"day": "2026-01-02", "window": {"start": "2026-01-01", "days": 2}})),
        answer("ok"),
    )
    run(agent(model, [report]))
    assert got == [(datetime.date(2026, 1, 2), Window(start=datetime.date(2026, 1, 1), days=2))]
    assert isinstance(got[0][1], Window)


def test_errors_timeouts_unknown_tools_and_bad_arguments_go_back_to_the_model():
    release = threading.Event()

    @tool(timeout=5)
    def broken(x: int) -> int:
        raise RuntimeError(f"database down for {x}")

    async def stuck() -> str:
        await asyncio.Event().wait()
        return "never"

    @tool(timeout=0.06)  # its own timeout, over the loop's
    def stuck_sync() -> str:
        release.wait(5)
        return "late"

    def lookup(city: str) -> str:
        return city

    model = Model(
        answer(
            None,
            call("broken", {"x": 1}, "c1"),
            call("stuck", {}, "c2"),
            call("stuck_sync", {}, "c3"),
            call("nope", {}, "c4"),
            call("lookup", {"city": 5}, "c5"),
            call("lookup", '{"city": ', "c6"),
        ),
        answer("I could not find out."),
    )
    try:
        result = run(agent(model, [broken, stuck, stuck_sync, lookup], tool_timeout=0.05, max_tool_errors=5))
    finally:
        release.set()
    records = {r.call_id: r for r in result.transcript.turns[0].calls}
    assert [records[c].outcome for c in ("c1", "c2", "c3", "c4", "c5", "c6")] == [
        "error",
        "timeout",
        "timeout",
        "unknown_tool",
        "invalid_arguments",
        "invalid_arguments",
    ]
    sent = {m["tool_call_id"]: m["content"] for m in model.bodies[1]["messages"] if m["role"] == "tool"}
    assert sent["c1"] == "The tool broken failed: RuntimeError: database down for 1"
    assert sent["c2"].startswith("The tool stuck did not finish within 0.05 s")
    assert sent["c3"].startswith("The tool stuck_sync did not finish within 0.06 s")
    assert sent["c4"] == "There is no tool named 'nope'. The tools are: broken, stuck, stuck_sync, lookup."
    assert "city: Input should be a valid string (got 5)" in sent["c5"]
    assert "not valid JSON" in sent["c6"]
    assert result.output == "I could not find out."


def test_a_long_result_is_bounded_with_a_note():
    def dump() -> str:
        return "x" * 5000

    model = Model(answer(None, call("dump", {}, "c1")), answer("ok"))
    result = run(agent(model, [dump], max_result_bytes=1000))
    text = result.transcript.turns[0].calls[0].result
    assert len(text.encode()) <= 1000
    assert "[truncated:" in text


def test_max_turns_stops_with_a_clear_error_and_runs_no_call_of_the_last_answer():
    runs = Counter()

    def lookup(city: str) -> str:
        runs[city] += 1
        return city

    model = Model(
        answer(None, call("lookup", {"city": "a"}, "c1")), answer(None, call("lookup", {"city": "b"}, "c2"))
    )
    with pytest.raises(
        AgentMaxTurnsError,
        match=r"still calling tools after max_turns=2 turn\(s\) \(turn 2 asked for lookup\)",
    ):
        run(agent(model, [lookup], max_turns=2))
    assert runs == {"a": 1}


def test_the_same_call_repeated_stops_the_loop():
    runs = Counter()

    def lookup(city: str, days: int = 1) -> str:
        runs[city] += 1
        return "unknown"

    model = Model(
        answer(None, call("lookup", '{"city": "Paris", "days": 1}', "c1")),
        answer(None, call("lookup", '{"days": 1, "city": "Paris"}', "c2")),  # the same call, reordered
        answer(None, call("lookup", '{"days":1,"city":"Paris"}', "c3")),
    )
    with pytest.raises(AgentLoopDetectedError, match=r"called lookup\(.*\) 3 times .*max_repeats=3.*turn 3"):
        run(agent(model, [lookup], max_repeats=3))
    assert runs == {"Paris": 2}


def test_more_tool_errors_than_allowed_fail_the_run():
    def flaky(n: int) -> int:
        raise ValueError(f"bad {n}")

    model = Model(answer(None, call("flaky", {"n": 1}, "c1")), answer(None, call("flaky", {"n": 2}, "c2")))
    with pytest.raises(AgentToolErrorsError, match=r"2 tool call\(s\) failed .* max_tool_errors=1.*bad 2"):
        run(agent(model, [flaky], max_tool_errors=1))
    assert len(model.requests) == 2


def test_no_tools_sends_no_tools():
    model = Model(answer("Hi."))
    assert run(agent(model, [])).output == "Hi."
    assert "tools" not in model.bodies[0]
    assert "tool_choice" not in model.bodies[0]


class Report(BaseModel):
    city: str
    celsius: int


def test_output_model_comes_through_the_forced_call_with_a_repair():
    def lookup(city: str) -> int:
        return 25

    model = Model(
        answer(None, call("lookup", {"city": "Rome"}, "c1")),
        answer("Rome: 25 C."),
        answer(None, call("Report", {"city": "Rome", "celsius": "hot"}, "o1")),
        answer(None, call("Report", {"city": "Rome", "celsius": 25}, "o2")),
    )
    result = run(agent(model, [lookup], output_model=Report, max_repairs=1))
    assert result.output == {"city": "Rome", "celsius": 25}
    assert result.text == "Rome: 25 C."
    assert [t.kind for t in result.transcript.turns] == ["agent", "agent", "output", "output"]
    forced, repaired = model.bodies[2], model.bodies[3]
    assert forced["tool_choice"] == {"type": "function", "function": {"name": "Report"}}
    assert [t["function"]["name"] for t in forced["tools"]] == ["lookup", "Report"]
    assert forced["messages"][-2] == {"role": "assistant", "content": "Rome: 25 C."}
    assert forced["messages"][-1] == {
        "role": "user",
        "content": "Now give your final answer by calling Report.",
    }
    assert "celsius" in repaired["messages"][-1]["content"]
    assert repaired["messages"][-1]["role"] == "tool"
    assert result.transcript.summary()["turns"] == 4


def test_output_model_gives_up_after_max_repairs():
    model = Model(answer("Hot."), answer(None, call("Report", {"city": "Rome"}, "o1")))
    with pytest.raises(StructuredOutputError, match="still invalid after 0 repair"):
        run(agent(model, [], output_model=Report, max_repairs=0))


def test_an_output_model_named_like_a_tool_is_refused():
    def lookup(x: int) -> int:
        return x

    with pytest.raises(InvalidRequestError, match="named 'Report' like one of the tools"):
        agent(Model(), [tool(lookup, name="Report")], output_model=Report)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_turns", 0),
        ("max_parallel_tools", 0),
        ("max_repeats", 1),
        ("max_tool_errors", -1),
        ("tool_timeout", 0),
    ],
)
def test_limits_are_checked_when_the_loop_is_made(option, value):
    with pytest.raises(InvalidRequestError, match=f"{option}={value}"):
        agent(Model(), [], **{option: value})
