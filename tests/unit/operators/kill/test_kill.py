"""Kills and timeouts while ``execute`` runs (operators/kill.py): a real ``execution_timeout`` through
the task runner's own ``_run_execute_callable`` (SIGALRM, then ``on_kill``), and SIGTERM handled as
the task runner's ``_on_term`` does (``on_kill()`` from the signal handler, which then returns)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest
from airflow.sdk.exceptions import AirflowTaskTimeout

from airflow_provider_qwen.batch.checkpoint import LocalJournal
from airflow_provider_qwen.operators import QwenAgentOperator, QwenChatOperator
from airflow_provider_qwen.operators.base import QwenBaseOperator
from airflow_provider_qwen.operators.kill import QwenTaskKilled
from tests.support.batch_fakes import BatchTI, echo, user_text, with_async_client
from tests.support.kill_helpers import batch, kill_self_after, records, slow_from, task_context, timed
from tests.support.operator_fakes import answer, with_client

# -- execution_timeout --------------------------------------------------------------------------


def test_a_timeout_inside_a_batch_items_coroutine_stops_the_task_not_just_the_item(mocker, storage):
    client = with_async_client(mocker, slow_from(3, block=0.6))
    ti = BatchTI()
    started = time.monotonic()
    with pytest.raises(AirflowTaskTimeout):
        timed(batch(items=[f"doc {i}" for i in range(6)], max_concurrency=6), ti, 0.3)
    assert time.monotonic() - started < 2  # not when the 5 s answers came
    assert "qwen_batch" not in ti.pushed  # no report of a batch that "finished" with a failed item
    assert sorted(r["index"] for r in records(storage)) == [0, 1, 2]
    cost = ti.pushed["qwen_cost"]
    assert cost["requests"] == 6  # 3 answers, 3 stopped in flight
    assert [e["kind"] for e in cost["estimates"]] == ["unconfirmed"] * 3
    assert client.in_flight == 0  # every request unwound
    assert signal.getsignal(signal.SIGALRM) is not None


def test_a_timeout_landing_in_an_event_loop_callback_is_not_dropped(mocker, storage):
    """asyncio logs and drops an exception raised in a plain callback: raised there, the timeout
    would be lost and the batch would finish as if nothing happened."""

    def reply(request):
        if user_text(request).endswith("doc 0"):
            asyncio.get_running_loop().call_soon(time.sleep, 0.6)  # SIGALRM lands in this callback
        return 1.0, echo(request)

    with_async_client(mocker, reply)
    ti = BatchTI()
    with pytest.raises(AirflowTaskTimeout):
        timed(batch(items=["doc 0", "doc 1"], max_concurrency=2), ti, 0.3)
    assert records(storage) == []
    assert [e["kind"] for e in ti.pushed["qwen_cost"]["estimates"]] == ["unconfirmed"] * 2


def test_a_timeout_inside_an_agent_tool_that_swallows_exceptions_still_stops_the_task(mocker):
    ran: list[str] = []

    async def slow_lookup() -> str:
        """Look something up."""
        try:
            ran.append("started")
            time.sleep(0.6)  # blocks the loop: SIGALRM lands in the tool's own code
        except BaseException:  # a tool's catch-all must not eat the task's timeout
            ran.append("swallowed")
            return "swallowed"
        ran.append("finished")
        return "found"

    replies = iter([answer(None, tool_calls=[("call_1", "slow_lookup", {})]), answer("done")])
    with_async_client(mocker, lambda request: next(replies))
    ti = BatchTI(task_id="agent")
    op = QwenAgentOperator(task_id="agent", prompt="Use slow_lookup.", tools=[slow_lookup])
    with pytest.raises(AirflowTaskTimeout):
        timed(op, ti, 0.3)
    assert ran == ["started", "finished"]  # the timeout was never raised into the tool
    assert "qwen_agent" not in ti.pushed
    assert ti.pushed["qwen_cost"]["requests"] == 1  # turn 1, paid and counted


def test_a_sync_call_blocked_in_a_retry_loop_that_catches_exception_times_out(mocker):
    with_client(mocker, QwenBaseOperator, answer("never"))
    cleaned: list[bool] = []

    class Stubborn(QwenChatOperator):
        def run(self, context, calls):
            try:
                while True:
                    try:
                        time.sleep(0.02)
                    except Exception:  # what a naive retry loop does with any error
                        continue
            finally:
                cleaned.append(True)

    ti = BatchTI(task_id="chat")
    started = time.monotonic()
    with pytest.raises(AirflowTaskTimeout):
        timed(Stubborn(task_id="chat", prompt="hi"), ti, 0.3)
    assert time.monotonic() - started < 2
    assert cleaned == [True]
    assert ti.pushed["qwen_cost"]["requests"] == 0


# -- SIGTERM ------------------------------------------------------------------------------------


def test_sigterm_in_sync_code_unwinds_and_a_second_sigterm_during_the_cleanup_only_logs(mocker, sigterm):
    with_client(mocker, QwenBaseOperator, answer("never"))
    cleaned: list[str] = []

    class Cleans(QwenChatOperator):
        def run(self, context, calls):
            try:
                while True:
                    time.sleep(0.02)
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # the second SIGTERM, mid-cleanup
                time.sleep(0.05)
                cleaned.append("finished")

    op = Cleans(task_id="chat", prompt="hi")
    sigterm(op)
    ti = BatchTI(task_id="chat")
    kill_self_after(0.2)
    with pytest.raises(QwenTaskKilled, match="killed"):
        op.execute(task_context(op, ti))
    assert cleaned == ["finished"]
    assert "qwen_cost" in ti.pushed
    op.on_kill()  # after execute: nothing to stop, nothing raised


def test_sigterm_during_a_checkpoint_write_keeps_the_record_and_the_retry_pays_nothing_twice(
    mocker, storage, sigterm
):
    client = with_async_client(mocker, slow_from(3))
    put = LocalJournal.put
    writes: list[int] = []

    async def put_then_killed(self, record):
        writes.append(record["index"])
        if len(writes) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # lands inside the write, between its lines
        await put(self, record)

    mocker.patch.object(LocalJournal, "put", put_then_killed)
    op = batch(items=[f"doc {i}" for i in range(6)], max_concurrency=6)
    sigterm(op)
    ti = BatchTI()
    with pytest.raises(QwenTaskKilled):
        op.execute(task_context(op, ti))
    kept = sorted(r["index"] for r in records(storage))
    assert len(kept) == len(writes)  # the write under way finished; none is torn
    try_1 = ti.pushed["qwen_cost"]
    paid = try_1["requests"] - len(try_1["estimates"])
    assert paid == len(kept)  # every answer journaled is counted once, as paid

    mocker.patch.object(LocalJournal, "put", put)
    client.reply = echo
    sent_before = len(client.requests)
    retry = BatchTI(try_number=2)
    op2 = batch(items=[f"doc {i}" for i in range(6)], max_concurrency=6)
    result = op2.execute(task_context(op2, retry))
    assert result == [f"summary of: Summarise: doc {i}" for i in range(6)]
    resent = sorted(int(user_text(r).split()[-1]) for r in client.requests[sent_before:])
    assert resent == sorted(set(range(6)) - set(kept))
    cost = retry.pushed["qwen_cost"]
    assert [t["requests"] for t in cost["tries"]] == [try_1["requests"], 6 - len(kept)]


def test_sigterm_as_an_answer_arrives_counts_it_once_and_the_retry_sends_it_again(mocker, storage, sigterm):
    def reply(request):
        if user_text(request).endswith("doc 1"):
            os.kill(os.getpid(), signal.SIGTERM)  # the answer is here, not yet recorded
        return echo(request)

    with_async_client(mocker, reply)
    op = batch(items=["doc 0", "doc 1"], max_concurrency=1)
    sigterm(op)
    ti = BatchTI()
    with pytest.raises(QwenTaskKilled):
        op.execute(task_context(op, ti))
    assert [r["index"] for r in records(storage)] == [0]
    cost = ti.pushed["qwen_cost"]
    assert cost["requests"] == 2  # doc 0 paid; doc 1 once, as possibly paid
    assert [e["kind"] for e in cost["estimates"]] == ["unconfirmed"]


def test_on_kill_outside_execute_and_from_another_thread_raises_nothing(mocker):
    with_client(mocker, QwenBaseOperator, answer("ok"))
    op = QwenChatOperator(task_id="chat", prompt="hi")
    op.on_kill()  # never ran: nothing to stop
    seen: list[BaseException] = []

    class FromThread(QwenChatOperator):
        def run(self, context, calls):
            worker = threading.Thread(target=lambda: self.on_kill())
            worker.start()
            worker.join()
            return "went on"  # stopped at the edge of the body, not in the other thread

    op = FromThread(task_id="chat", prompt="hi")
    try:
        op.execute(task_context(op, BatchTI(task_id="chat")))
    except QwenTaskKilled as exc:
        seen.append(exc)
    assert len(seen) == 1


def test_the_timeout_firing_after_a_sigterm_while_the_cost_is_published_only_logs(mocker, sigterm):
    with_client(mocker, QwenBaseOperator, answer("never"))

    class Loops(QwenChatOperator):
        def run(self, context, calls):
            while True:
                time.sleep(0.02)

    publish = QwenBaseOperator.finish_cost

    def slow_publish(self, context, cost):
        time.sleep(0.4)  # the execution_timeout passes here, after the body unwound
        publish(self, context, cost)

    mocker.patch.object(QwenBaseOperator, "finish_cost", slow_publish)
    op = Loops(task_id="chat", prompt="hi")
    sigterm(op)
    ti = BatchTI(task_id="chat")
    kill_self_after(0.1)
    with pytest.raises(QwenTaskKilled):
        timed(op, ti, 0.3)
    assert "qwen_cost" in ti.pushed  # the late alarm did not cut the publishing short


def test_sigterm_while_a_large_result_is_stored_still_journals_it(mocker, storage, sigterm):
    """A paid answer is stored (above output_size_threshold) and journaled as one step: a stop in
    between would leave it paid and not journaled, so the retry would pay for it again."""
    from airflow_provider_qwen.batch.outputs import OutputStore

    client = with_async_client(mocker, slow_from(3))
    keep = OutputStore.keep
    stored: list[int] = []

    async def keep_then_killed(self, index, key, value):
        stored.append(index)
        if len(stored) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(0.2)  # the stop arrives while the result is being written
        return await keep(self, index, key, value)

    mocker.patch.object(OutputStore, "keep", keep_then_killed)
    op = batch(items=[f"doc {i}" for i in range(6)], max_concurrency=6, output_size_threshold=1)
    sigterm(op)
    ti = BatchTI()
    with pytest.raises(QwenTaskKilled):
        op.execute(task_context(op, ti))
    assert stored[0] in {r["index"] for r in records(storage)}  # journaled, not lost
    client.reply = echo
    sent_before = len(client.requests)
    op2 = batch(items=[f"doc {i}" for i in range(6)], max_concurrency=6, output_size_threshold=1)
    op2.execute(task_context(op2, BatchTI(try_number=2)))
    resent = {int(user_text(r).split()[-1]) for r in client.requests[sent_before:]}
    assert stored[0] not in resent
