"""The batch engine's order on its event loop: a worker's next request is built while the request
before it is in flight, answers that come back together free their slots for the requests already
built before any of them is recorded, and an answer is journaled even when the batch is cancelled
while it waits its turn."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from airflow_provider_qwen.batch.checkpoint import Journal
from airflow_provider_qwen.batch.feed import ItemFeed
from airflow_provider_qwen.batch.items import ItemPlan, ItemProcessor
from airflow_provider_qwen.batch.outputs import OutputStore
from airflow_provider_qwen.batch.runner import BatchOptions, BatchRunner
from airflow_provider_qwen.batch.sender import RateLimitedSender
from airflow_provider_qwen.batch.streams import GrowingResults
from airflow_provider_qwen.client.builder import RequestBuilder
from tests.support.operator_fakes import answer

MODEL = "alibaba/qwen3.7-max"


class RecordingJournal(Journal):
    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events
        self.put_records: list[dict[str, Any]] = []

    async def put(self, record: dict[str, Any]) -> None:
        self.events.append(f"journal {record['index']}")
        self.put_records.append(record)


class RecordingBuilder(RequestBuilder):
    events: list[str] = []

    def build(self, messages: Any, **overrides: Any) -> Any:
        self.events.append(f"build {messages[-1]['content']}")
        return super().build(messages, **overrides)


class Engine:
    """A runner, sender and item processor as the operator wires them, with a server the test answers."""

    def __init__(self, items: int, concurrency: int) -> None:
        self.events: list[str] = []
        self.answers: dict[str, asyncio.Future[None]] = {}
        builder = RecordingBuilder(MODEL, {"max_completion_tokens": 10})
        builder.events = self.events
        self.plan = ItemPlan(render_prompt=lambda v: str(v["index"]), requests=builder)
        self.journal = RecordingJournal(self.events)
        self.sink = GrowingResults(0, items)
        self.feed = ItemFeed(enumerate(range(items)), total=items, threaded=False)
        self.concurrency = concurrency

    async def send_once(self, request: Any) -> Any:
        self.runner.check_running()
        prompt = request.messages[-1].content
        self.events.append(f"send {prompt}")
        future = self.answers[prompt] = asyncio.get_running_loop().create_future()
        await future
        self.events.append(f"answer {prompt}")
        return answer(f"result {prompt}")

    async def run(self) -> Any:
        sender = RateLimitedSender(self.send_once, max_concurrency=self.concurrency)
        log = logging.getLogger("test")
        self.runner = BatchRunner(sender, options=BatchOptions(self.concurrency, 60), log=log)
        processor = ItemProcessor(self.plan, sender.send, self.journal, OutputStore(lambda: None, None), log)
        return await self.runner.run(processor.process, self.feed, self.sink)

    async def until(self, condition: Any) -> None:
        for _ in range(1000):
            if condition():
                return
            await asyncio.sleep(0)
        raise AssertionError(f"not reached; events: {self.events}")

    def answer(self, *prompts: str) -> None:
        for prompt in prompts:
            self.answers[prompt].set_result(None)


def test_the_next_request_is_built_while_the_current_one_is_in_flight():
    async def main() -> None:
        engine = Engine(items=4, concurrency=2)
        running = asyncio.ensure_future(engine.run())
        await engine.until(lambda: {"0", "1"} <= set(engine.answers))
        await engine.until(lambda: "build 3" in engine.events)
        assert not any(event.startswith("answer") for event in engine.events)  # all built, none answered
        engine.answer("0", "1")
        await engine.until(lambda: {"2", "3"} <= set(engine.answers))
        engine.answer("2", "3")
        report = await running
        assert report.succeeded == 4
        assert engine.sink.results == ["result 0", "result 1", "result 2", "result 3"]

    asyncio.run(main())


def test_answers_arriving_together_free_their_slots_before_they_are_recorded():
    async def main() -> None:
        engine = Engine(items=4, concurrency=2)
        running = asyncio.ensure_future(engine.run())
        await engine.until(lambda: {"0", "1"} <= set(engine.answers) and "build 3" in engine.events)
        engine.answer("0", "1")
        await engine.until(lambda: {"2", "3"} <= set(engine.answers))
        engine.answer("2", "3")
        report = await running
        assert report.succeeded == 4
        events = engine.events
        # both requests built ahead went out before either answered item was journaled
        assert max(events.index("send 2"), events.index("send 3")) < min(
            events.index("journal 0"), events.index("journal 1")
        )
        assert sorted(r["index"] for r in engine.journal.put_records) == [0, 1, 2, 3]

    asyncio.run(main())


def test_a_batch_cancelled_right_after_an_answer_arrives_still_journals_it():
    async def main() -> None:
        engine = Engine(items=4, concurrency=2)
        running = asyncio.ensure_future(engine.run())
        await engine.until(lambda: {"0", "1"} <= set(engine.answers) and "build 3" in engine.events)
        engine.answer("0")
        await engine.until(lambda: "answer 0" in engine.events)  # paid for, not yet recorded
        assert "journal 0" not in engine.events
        running.cancel()
        try:
            await running
        except asyncio.CancelledError:
            pass
        else:  # pragma: no cover
            raise AssertionError("the batch was not cancelled")
        assert [r["index"] for r in engine.journal.put_records] == [0]
        assert engine.journal.put_records[0]["result"] == "result 0"

    asyncio.run(main())
