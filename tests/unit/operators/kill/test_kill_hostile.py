"""Kills and timeouts at the worst moments (operators/kill.py): while the body waits for an answer of
Airflow's supervisor, while a charge is being recorded, before the body starts, after it ended,
while the try's cost is published, in a batch run from inside an event loop, and a second SIGTERM
while a cancelled batch flushes its checkpoint.

SIGTERM is handled as the task runner's ``_on_term`` does (``on_kill()`` from the handler, which
then returns); a timeout runs through the task runner's own ``_run_execute_callable``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time

import msgspec
import pytest
from airflow.sdk.exceptions import AirflowTaskTimeout
from airflow.sdk.execution_time.comms import CommsDecoder, GetXCom, _RequestFrame, _ResponseFrame

from airflow_provider_qwen.batch.checkpoint import LocalJournal
from airflow_provider_qwen.client.models import ChatCompletion
from airflow_provider_qwen.client.pricing import Cost
from airflow_provider_qwen.cost.ledger import TryLedger
from airflow_provider_qwen.operators import QwenChatOperator
from airflow_provider_qwen.operators.base import QwenBaseOperator
from airflow_provider_qwen.operators.kill import QwenTaskKilled
from tests.support.batch_fakes import BatchTI, with_async_client
from tests.support.client_helpers import bind
from tests.support.kill_helpers import batch, kill_self_after, records, slow_from, task_context, timed
from tests.support.operator_fakes import MODEL, answer, with_client

ANSWER_AFTER = 0.5  # seconds the fake supervisor takes to answer a request


@pytest.fixture
def supervisor():
    """The task's end of a supervisor socket (Airflow's own ``CommsDecoder``); the other end answers
    each request after ``ANSWER_AFTER`` s with an XCom naming the request's key."""
    ours, theirs = socket.socketpair()
    decoder = msgspec.msgpack.Decoder(_RequestFrame)

    def serve() -> None:
        with contextlib.suppress(OSError):  # the task's end closed while an answer was on its way
            while header := theirs.recv(4):
                size, data = int.from_bytes(header, "big"), b""
                while len(data) < size:
                    data += theirs.recv(size - len(data))
                request = decoder.decode(data)
                time.sleep(ANSWER_AFTER)
                body = {"type": "XComResult", "key": request.body["key"], "value": request.id}
                out = msgspec.msgpack.encode(_ResponseFrame(id=request.id, body=body))
                theirs.sendall(len(out).to_bytes(4, "big") + out)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    yield CommsDecoder(socket=ours)
    ours.close()  # the server reads the end of the stream and stops
    server.join(timeout=5)
    theirs.close()


def ask(comms: CommsDecoder, key: str) -> str:
    return comms.send(GetXCom(key=key, dag_id="d", run_id="r", task_id="t")).key


def _waits_for(comms: CommsDecoder, got: list[tuple[str, float]]) -> type[QwenChatOperator]:
    class WaitsForSupervisor(QwenChatOperator):
        """A body that asks the supervisor something (a task state, a connection), then waits."""

        def run(self, context, calls):
            got.append((ask(comms, "first"), time.monotonic()))
            while True:
                time.sleep(0.01)

    return WaitsForSupervisor


# -- a request to the supervisor ----------------------------------------------------------------


def test_a_sigterm_while_the_body_waits_for_the_supervisor_stops_it_once_the_answer_is_read(
    mocker, sigterm, supervisor
):
    with_client(mocker, QwenBaseOperator, answer("never"))
    got: list[tuple[str, float]] = []
    op = _waits_for(supervisor, got)(task_id="chat", prompt="hi")
    sigterm(op)
    ti = BatchTI(task_id="chat")
    kill_self_after(0.1)  # while the supervisor's answer is on its way
    with pytest.raises(QwenTaskKilled, match="killed"):
        op.execute(task_context(op, ti))
    stopped = time.monotonic()
    assert [key for key, _ in got] == ["first"]  # the request's own answer was read, not left behind
    assert stopped - got[0][1] < 1.0  # and the stop came right after it
    assert ask(supervisor, "second") == "second"  # the next request reads its own answer
    assert "qwen_cost" in ti.pushed


def test_a_timeout_while_the_body_waits_for_the_supervisor_fails_the_try_once_the_answer_is_read(
    mocker, supervisor
):
    with_client(mocker, QwenBaseOperator, answer("never"))
    got: list[tuple[str, float]] = []
    op = _waits_for(supervisor, got)(task_id="chat", prompt="hi")
    with pytest.raises(AirflowTaskTimeout):
        timed(op, BatchTI(task_id="chat"), 0.1)
    assert [key for key, _ in got] == ["first"]
    assert ask(supervisor, "second") == "second"


def test_a_sigterm_while_an_answer_is_being_recorded_counts_it_once_exactly(mocker, sigterm):
    client = with_client(mocker, QwenBaseOperator, answer("paid"))
    charge_then_file = TryLedger._file

    def killed_while_filing(self, estimate):
        os.kill(os.getpid(), signal.SIGTERM)  # the answer is charged, its entry not yet filed
        time.sleep(0.05)
        return charge_then_file(self, estimate)

    mocker.patch.object(TryLedger, "_file", killed_while_filing)
    op = QwenChatOperator(task_id="chat", prompt="hi")
    sigterm(op)
    ti = BatchTI(task_id="chat")
    with pytest.raises(QwenTaskKilled):
        op.execute(task_context(op, ti))
    assert len(client.requests) == 1
    cost = ti.pushed["qwen_cost"]
    assert cost["requests"] == 1
    assert cost["estimated"] is False


# -- before the body, after it, and while its cost is published ---------------------------------


def test_a_sigterm_before_the_body_starts_stops_it_before_any_request(mocker):
    client = with_client(mocker, QwenBaseOperator, answer("never"))

    class KilledDuringSetup(QwenChatOperator):
        def metered(self, context, body, **kwargs):
            self.on_kill()  # as a SIGTERM while the price table is fetched, before the body runs
            return super().metered(context, body, **kwargs)

    op = KilledDuringSetup(task_id="chat", prompt="hi")
    ti = BatchTI(task_id="chat")
    with pytest.raises(QwenTaskKilled, match="before"):
        op.execute(task_context(op, ti))
    assert client.requests == []
    assert ti.pushed["qwen_cost"]["requests"] == 0


def test_on_kill_after_a_body_ended_stops_no_later_body(mocker):
    with_client(mocker, QwenBaseOperator, answer("one"), answer("two"))
    op = QwenChatOperator(task_id="chat", prompt="hi")
    assert op.execute(task_context(op, BatchTI(task_id="chat"))) == "one"
    op.on_kill()  # the timeout path calls it once execute has unwound
    assert op.execute(task_context(op, BatchTI(task_id="chat"))) == "two"


# -- the batch --------------------------------------------------------------------------------


def test_a_second_sigterm_while_the_cancelled_batch_flushes_its_checkpoint_loses_no_record(
    mocker, storage, sigterm
):
    from airflow_provider_qwen.batch.feed import SendsFirst

    with_async_client(mocker, slow_from(3))
    turn, put = SendsFirst.turn, LocalJournal.put
    kills: list[str] = []

    async def killed_while_answered(self):  # an answer is here, its record not yet written
        if not kills:
            kills.append("first")
            os.kill(os.getpid(), signal.SIGTERM)  # the main task is cancelled: the record is still due
        await turn(self)

    async def killed_again_while_written(self, record):
        if kills == ["first"]:
            kills.append("second")
            os.kill(os.getpid(), signal.SIGTERM)  # lands in this write, while the batch unwinds
        await put(self, record)

    mocker.patch.object(SendsFirst, "turn", killed_while_answered)
    mocker.patch.object(LocalJournal, "put", killed_again_while_written)
    op = batch(items=[f"doc {i}" for i in range(6)], max_concurrency=6)
    sigterm(op)
    ti = BatchTI()
    with pytest.raises(QwenTaskKilled):
        op.execute(task_context(op, ti))
    assert kills == ["first", "second"]
    assert sorted(r["index"] for r in records(storage)) == [0, 1, 2]  # every answer that came, kept
    cost = ti.pushed["qwen_cost"]
    assert cost["requests"] == 6  # 3 answers, 3 stopped in flight, each once
    assert [e["kind"] for e in cost["estimates"]] == ["unconfirmed"] * 3


def test_a_batch_run_from_inside_an_event_loop_is_cancelled_by_a_sigterm(mocker, storage, sigterm):
    client = with_async_client(mocker, slow_from(2))
    op = batch(items=[f"doc {i}" for i in range(4)], max_concurrency=4)
    sigterm(op)
    ti = BatchTI()
    context = task_context(op, ti)

    async def caller() -> None:  # execute called where a loop runs: the batch gets a thread of its own
        kill_self_after(0.5)
        op.execute(context)

    started = time.monotonic()
    with pytest.raises(QwenTaskKilled):
        asyncio.run(caller())
    assert time.monotonic() - started < 3  # not when the 5 s answers came
    assert client.in_flight == 0
    assert sorted(r["index"] for r in records(storage)) == [0, 1]
    assert ti.pushed["qwen_cost"]["requests"] == 4


def _no_usage(request) -> ChatCompletion:
    parsed = ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1",
            "model": "qwen3.7-max",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
            ],
        }
    )
    return bind(parsed, requested_model=MODEL, cost=Cost(estimated=True))


def test_a_sigterm_while_an_answer_without_usage_is_priced_counts_it_once(mocker, storage, sigterm):
    with_async_client(mocker, _no_usage)
    add = TryLedger.add

    def priced_slowly(self, completion, request=None):
        os.kill(os.getpid(), signal.SIGTERM)  # the answer is here, its pricing under way off the loop
        time.sleep(0.2)
        return add(self, completion, request)

    mocker.patch.object(TryLedger, "add", priced_slowly)
    op = batch(items=["doc 0"])
    sigterm(op)
    ti = BatchTI()
    with pytest.raises(QwenTaskKilled):
        op.execute(task_context(op, ti))
    assert ti.pushed["qwen_cost"]["requests"] == 1


def test_a_stop_held_past_the_end_of_the_body_is_not_raised_into_the_cost_publishing(
    mocker, sigterm, supervisor
):
    with_client(mocker, QwenBaseOperator, answer("never"))
    published: list[str] = []

    class AsksThenReturns(QwenChatOperator):
        def run(self, context, calls):
            return ask(supervisor, "first")  # killed while it waits; returns at once after the answer

        def finish_cost(self, context, cost):
            os.kill(os.getpid(), signal.SIGALRM)  # the timeout passes while the cost is published
            time.sleep(0.05)
            super().finish_cost(context, cost)
            published.append("whole")

    op = AsksThenReturns(task_id="chat", prompt="hi")
    sigterm(op)
    ti = BatchTI(task_id="chat")
    kill_self_after(0.1)
    with pytest.raises(QwenTaskKilled):
        timed(op, ti, 30)
    assert published == ["whole"]
    assert "qwen_cost" in ti.pushed


def test_metered_publishes_the_whole_cost_when_the_timeout_passes_meanwhile(mocker):
    with_client(mocker, QwenBaseOperator, answer("ok"))

    class SlowToPublish(QwenChatOperator):
        def finish_cost(self, context, cost):
            time.sleep(0.4)  # the timeout passes here
            super().finish_cost(context, cost)

    ti = BatchTI(task_id="chat")
    with pytest.raises(AirflowTaskTimeout):
        timed(SlowToPublish(task_id="chat", prompt="hi"), ti, 0.2)
    assert ti.pushed["qwen_cost"]["requests"] == 1
