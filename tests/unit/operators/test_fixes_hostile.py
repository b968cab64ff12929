"""Hostile pass over the settling of deferred calls (double or under counting across pauses, stops,
stale journals), the budget after an unreadable journal, a trigger event error's body and
Retry-After, and the inference ids the client keeps."""

from __future__ import annotations

import math
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskAwaitingInput, TaskDeferred

from airflow_provider_qwen.client import errors
from airflow_provider_qwen.client.errors import error_for_status, error_from_dict, error_to_dict
from airflow_provider_qwen.cost.journal import CostJournal, JournalError
from airflow_provider_qwen.operators import QwenChatOperator
from airflow_provider_qwen.retry_policy import QwenRetryPolicy, RetryAction
from tests.support import deferral_fakes
from tests.support.deferral_fakes import PausedTask, approve, fire
from tests.support.operator_fakes import answer, no_usage_answer, with_client

pytestmark = pytest.mark.usefixtures("deferral_storage")
deferral_storage = deferral_fakes.deferral_storage


def _failing_writes(mocker: Any, *failing: int) -> list[int]:
    """CostJournal.write fails (JournalError) on the given 1-based calls from now; returns the call log."""
    original = CostJournal.write
    seen: list[int] = []

    def write(self: Any, record: Any) -> None:
        seen.append(len(seen) + 1)
        if len(seen) in failing:
            raise JournalError("storage blinked")
        original(self, record)

    mocker.patch.object(CostJournal, "write", write)
    return seen


def _failing_reads(mocker: Any, *failing: int) -> list[int]:
    """CostJournal.read fails (JournalError) on the given 1-based calls."""
    original = CostJournal.read
    seen: list[int] = []

    def read(self: Any) -> Any:
        seen.append(len(seen) + 1)
        if len(seen) in failing:
            raise JournalError("storage blinked")
        return original(self)

    mocker.patch.object(CostJournal, "read", read)
    return seen


# -- double counting: a stale journal record meets the pause's carried record ------------------------


def _repaired_ticket(mocker: Any) -> tuple[PausedTask, Any]:
    """A deferrable tool call whose first answer is invalid (a repair follows), its second valid."""
    from pydantic import BaseModel

    from airflow_provider_qwen.operators import QwenToolCallOperator

    class Ticket(BaseModel):
        priority: int

    client = with_client(
        mocker,
        QwenToolCallOperator,
        answer(None, tool_calls=[("c1", "Ticket", {"priority": "high"})]),
        answer(None, tool_calls=[("c2", "Ticket", {"priority": 1})]),
    )
    op = QwenToolCallOperator(
        task_id="chat", prompt="hi", output_model=Ticket, max_completion_tokens=300, deferrable=True
    )
    return PausedTask(op), client


def test_a_review_after_a_deferred_call_whose_pause_was_not_journaled_counts_the_answer_once(mocker):
    """Deferral journaled (the call in flight); the answer recorded on resume; the review pause's
    journal write fails, so the journal still holds the deferral's record. The review's own record
    wins on resume: the stale one would put the settled call back in flight, counted again."""
    client = with_client(mocker, QwenChatOperator, answer("the answer"))
    mocker.patch("airflow.sdk.execution_time.hitl.upsert_hitl_detail")
    task = PausedTask(
        QwenChatOperator(
            task_id="chat", prompt="hi", max_completion_tokens=1000, deferrable=True, require_approval=True
        )
    )
    deferred = task.defer()
    event = fire(deferred.trigger, mocker, client)
    _failing_writes(mocker, 1)  # the review pause's write (the deferral's already went through)
    with pytest.raises(TaskAwaitingInput) as parked:
        task.resume_execution(deferred.method_name, {**(deferred.kwargs or {}), "event": event})
    review = parked.value
    assert task.resume_execution(review.method_name, {**review.kwargs, "event": approve()}) == "the answer"
    cost = task.cost
    assert (cost["requests"], cost["usd_spent"], cost["estimated"]) == (1, "0.001", False), cost


def test_a_repair_deferred_after_an_unjournaled_pause_counts_the_first_turn_once(mocker):
    """A tool call: turn 1 deferred (journaled), its invalid answer recorded on resume, the repair
    deferred but that journal write fails. The second deferral's own record wins on resume (the
    journal's stale one holds turn 1 in flight): turn 1 is not counted again as abandoned."""

    task, client = _repaired_ticket(mocker)
    first = task.defer()
    event = fire(first.trigger, mocker, client)
    _failing_writes(mocker, 1)  # the repair's deferral is not journaled
    with pytest.raises(TaskDeferred) as again:
        task.resume_execution(first.method_name, {**(first.kwargs or {}), "event": event})
    second = again.value
    event = fire(second.trigger, mocker, client)
    result = task.resume_execution(second.method_name, {**(second.kwargs or {}), "event": event})
    assert result == {"priority": 1}
    assert len(client.requests) == 2
    cost = task.cost
    assert (cost["requests"], cost["usd_spent"], cost["estimated"]) == (2, "0.002", False), cost


# -- under counting: a stop before the event's record could be restored ------------------------------


def test_a_stop_before_the_carried_record_is_restored_still_counts_the_paid_answer(mocker):
    """The journal cannot be read on resume; a SIGTERM arrives as the pause's own record is carried
    (before the body starts). The hold it carries is still counted: the paid answer at its worst case."""
    from airflow_provider_qwen.cost.task import TaskCost
    from airflow_provider_qwen.operators.kill import QwenTaskKilled

    client = with_client(mocker, QwenChatOperator, answer("the answer"))
    task = PausedTask(
        QwenChatOperator(task_id="chat", prompt="hi", max_completion_tokens=1000, deferrable=True)
    )
    deferred = task.defer()
    event = fire(deferred.trigger, mocker, client)
    mocker.patch.object(CostJournal, "read", side_effect=JournalError("storage is down"))
    operators: list[Any] = []
    metered = QwenChatOperator.metered

    def tracked(self: Any, *args: Any, **kwargs: Any) -> Any:
        operators.append(self)
        return metered(self, *args, **kwargs)

    resume = TaskCost.resume

    def stopped(self: Any, carried: Any = None) -> None:
        operators[-1].on_kill()  # SIGTERM in the body's thread, as the task runner's handler runs
        resume(self, carried)

    mocker.patch.object(QwenChatOperator, "metered", tracked)
    mocker.patch.object(TaskCost, "resume", stopped)
    with pytest.raises(QwenTaskKilled):
        task.resume_execution(deferred.method_name, {**(deferred.kwargs or {}), "event": event})
    assert task.cost["requests"] == 1, task.cost
    assert task.cost["estimated"] is True  # counted at its worst case: the event was never read


# -- the budget after a resume whose journal could not be read ----------------------------------------


def _agent_paused_for_approval(mocker: Any, tmp_path: Any) -> tuple[Any, Any, Any, Any, Any]:
    from airflow.sdk import DAG

    from airflow_provider_qwen.agent import tool
    from airflow_provider_qwen.operators.agent import QwenAgentOperator
    from airflow_provider_qwen.operators.base import QwenBaseOperator
    from tests.support.cost_fakes import FakeRun, FakeStateStore

    def delete_region(region: str) -> str:
        """Delete every row of a region."""
        return "deleted"

    client = with_client(
        mocker,
        QwenBaseOperator,
        answer(None, tool_calls=[("call_9", "delete_region", {"region": "EMEA"})]),
        answer("done"),
    )
    mocker.patch("airflow.sdk.execution_time.hitl.upsert_hitl_detail")
    with DAG("agent_dag", schedule=None) as dag:
        op = QwenAgentOperator(
            task_id="agent",
            prompt="Clean EMEA",
            tools=[tool(delete_region, requires_approval=True)],
            max_completion_tokens=100,
            max_cost_usd="0.0025",  # one turn's worst case fits, not a second after the first's answer
        )
    ti = FakeRun("agent_dag").ti("agent")
    ti.id = "ti-uuid"
    state = FakeStateStore()
    context = {"ti": ti, "task_instance": ti, "params": {}, "run_id": ti.run_id, "dag": dag}
    context["task_state_store"] = state
    op.render_template_fields(context)
    with pytest.raises(TaskAwaitingInput):
        op.execute(context)
    assert len(client.requests) == 1
    return op, context, client, ti, state


APPROVED = {"chosen_options": ["Approve"], "params_input": {}, "responded_by_user": None}


def test_an_agents_approval_resume_refuses_the_turn_over_budget(mocker, tmp_path):
    """The control: the journal gives back turn 1's spend, so turn 2 is refused unsent."""
    from airflow_provider_qwen.operators.spend import BudgetRefusedError

    op, context, client, ti, _ = _agent_paused_for_approval(mocker, tmp_path)
    with pytest.raises(BudgetRefusedError):
        op.execute_approval(context, APPROVED, pending=["call_9"])
    assert len(client.requests) == 1
    assert ti.pushed["qwen_cost"]["requests"] == 1


def test_an_agents_approval_resume_with_a_blinking_journal_still_refuses_the_turn_over_budget(
    mocker, tmp_path
):
    from airflow_provider_qwen.operators.spend import BudgetRefusedError

    op, context, client, ti, _ = _agent_paused_for_approval(mocker, tmp_path)
    _failing_reads(mocker, 1)  # TaskCost.resume's read fails; the budget's next read works
    with pytest.raises(BudgetRefusedError):
        op.execute_approval(context, APPROVED, pending=["call_9"])
    assert len(client.requests) == 1
    assert ti.pushed["qwen_cost"]["requests"] == 1


def test_an_agents_approval_resume_with_an_unreadable_journal_refuses_the_next_turn_unsent(mocker, tmp_path):
    """A journal down for good: the next turn is still refused where the budget reads it."""
    from airflow_provider_qwen.operators.spend import BudgetRefusedError

    op, context, client, _, _ = _agent_paused_for_approval(mocker, tmp_path)
    mocker.patch.object(CostJournal, "read", side_effect=JournalError("storage is down"))
    with pytest.raises(BudgetRefusedError, match="storage is down"):
        op.execute_approval(context, APPROVED, pending=["call_9"])
    assert len(client.requests) == 1


def test_a_trigger_timeout_over_an_unreadable_journal_still_counts_the_call_in_flight(mocker):
    """Airflow resumes a task whose trigger timed out only to fail it; the journal that held the call in
    flight cannot be read then. The pause's record travels in next_kwargs too, so the call that may
    have been sent and billed is counted, at its worst case."""
    from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason
    from airflow.sdk.exceptions import TaskDeferralTimeout

    with_client(mocker, QwenChatOperator)
    task = PausedTask(
        QwenChatOperator(task_id="chat", prompt="hi", max_completion_tokens=1000, deferrable=True)
    )
    deferred = task.defer()
    mocker.patch.object(CostJournal, "read", side_effect=JournalError("storage is down"))
    kwargs = {**(deferred.kwargs or {}), "error": TriggerFailureReason.TRIGGER_TIMEOUT, "traceback": ["x"]}
    with pytest.raises(TaskDeferralTimeout):
        task.resume_execution(TRIGGER_FAIL_REPR, kwargs)
    cost = task.cost
    assert (cost["requests"], cost["estimated"]) == (1, True), cost


# -- the error event: Retry-After and the body's codes -------------------------------------------------


def _worker_and_deferred(mocker: Any, make: Any) -> tuple[BaseException, BaseException]:
    def raised(call: Any) -> BaseException:
        try:
            call()
        except BaseException as exc:
            return exc
        raise AssertionError("the task did not fail")

    with_client(mocker, QwenChatOperator, make())
    worker = raised(
        PausedTask(QwenChatOperator(task_id="chat", prompt="hi", max_completion_tokens=1000)).execute
    )
    client = with_client(mocker, QwenChatOperator, make())
    task = PausedTask(
        QwenChatOperator(task_id="chat", prompt="hi", max_completion_tokens=1000, deferrable=True)
    )
    deferred = task.defer()
    kwargs = {**(deferred.kwargs or {}), "event": fire(deferred.trigger, mocker, client)}
    return worker, raised(lambda: task.resume_execution(deferred.method_name, kwargs))


def _decision(exc: BaseException) -> Any:
    decision = QwenRetryPolicy().evaluate(exc, try_number=1, max_tries=4)
    return decision.action, decision.retry_delay


def test_a_negative_infinite_retry_after_decides_the_same_deferred_as_in_the_worker(mocker):
    worker, deferred = _worker_and_deferred(
        mocker, lambda: error_for_status(429, b"{}", retry_after=-math.inf)
    )
    assert _decision(worker) == (RetryAction.RETRY, None)
    assert _decision(deferred) == _decision(worker)


def test_a_negative_infinite_retry_after_round_trips_as_no_delay():
    """The unit of the above: -inf is not an unbounded delay."""
    back = error_from_dict(error_to_dict(error_for_status(429, b"{}", retry_after=-math.inf)))
    assert back.retry_after is None or back.retry_after < 0


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"code": "x" * 1_000_000, "type": ["insufficient_quota"]}},
        {"error": "insufficient_quota"},
        {"error": {"code": {"nested": "insufficient_quota"}, "type": 429}},
        ["insufficient_quota"],
        "insufficient_quota",
        {"error": {"code": None, "type": True}},
    ],
    ids=["huge code, listed type", "string error", "nested code", "list", "string", "junk scalars"],
)
@pytest.mark.parametrize(
    "retry_after", ["inf", "Infinity", "-inf", "nan", True, -5, 1e308 * 10, [1], {"a": 1}]
)
def test_a_hostile_error_event_reads_as_a_plain_transient_error(body, retry_after):
    """A trigger event's error with junk in its body and Retry-After: read without raising, no code
    kept, a delay only for the unbounded forms (and never a negative or NaN one)."""
    data = {
        "type": "RateLimitError",
        "message": "slow down",
        "status_code": 429,
        "body": body,
        "retry_after": retry_after,
        "charge": {},
    }
    error = error_from_dict(data)
    assert isinstance(error, errors.RateLimitError)
    assert error.body is None
    after = error.retry_after
    if retry_after == "inf" or retry_after == math.inf:
        assert after == math.inf
    else:
        assert after is None
    assert QwenRetryPolicy().evaluate(error, try_number=1, max_tries=4).action is RetryAction.RETRY


def test_only_the_bodys_short_string_codes_travel_and_the_policy_reads_them_as_in_the_worker():
    body = b'{"error": {"message": "m", "code": 1, "type": "INSUFFICIENT_QUOTA", "param": {"a": [1]}}}'
    worker = error_for_status(429, body, retry_after=1.0)
    back = error_from_dict(error_to_dict(worker))
    assert back.body == {"error": {"type": "INSUFFICIENT_QUOTA"}}
    assert _decision(back) == _decision(worker)
    assert _decision(back)[0] is RetryAction.FAIL


# -- inference ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "0190aaaa-0000-7000-8000-000000000000",
        "chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz012",
        "gen-1712345678-AbCdEfGhIjKlMnOpQrSt",
        "req_8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d",
        "01JDQ8Z3ABCDEF0123456789XY",
        "f3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4",
    ],
)
def test_a_real_looking_inference_id_is_kept_under_the_clients_scrubber(value):
    from airflow_provider_qwen.client.scrub import Scrubber, server_id

    key = "3f9a1c7e5b2d4068a1b3c5d7e9f02468"
    scrub = Scrubber(key)
    assert server_id(value, scrub) == value
    assert server_id(key, scrub) is None
    assert server_id(f"id-{key}", scrub) is None
    assert server_id(f"{value} ", scrub) is None  # not id-shaped


# -- held: a stop while a resume records its event, then a retry; a second deferral ----------------


def test_a_killed_resume_then_a_deferred_retry_counts_each_paid_answer_once(mocker):
    """Try 1 defers, its answer comes, a SIGTERM arrives as it resumes (before the event is recorded):
    try 1's record holds its answer exactly. Try 2 reads the journal, defers again and is answered:
    the task's qwen_cost is the two answers, exact, nothing abandoned or in flight left."""
    from airflow_provider_qwen.operators.kill import QwenTaskKilled
    from tests.support.deferral_fakes import DeferTI

    client = with_client(mocker, QwenChatOperator, answer("first"), answer("second"))
    task = PausedTask(
        QwenChatOperator(task_id="chat", prompt="hi", max_completion_tokens=1000, deferrable=True)
    )
    deferred = task.defer()
    event = fire(deferred.trigger, mocker, client)
    kill = [True]
    original = QwenChatOperator.turn_request

    def turn_request(self: Any, *args: Any, **kwargs: Any) -> Any:
        if kill[0]:
            kill[0] = False
            self.on_kill()
        return original(self, *args, **kwargs)

    mocker.patch.object(QwenChatOperator, "turn_request", turn_request)
    with pytest.raises(QwenTaskKilled):
        task.resume_execution(deferred.method_name, {**(deferred.kwargs or {}), "event": event})
    first = task.cost
    assert (first["requests"], first["usd_spent"], first["estimated"]) == (1, "0.001", False), first

    def retry_context() -> dict[str, Any]:
        ti = DeferTI(try_number=2)
        task.ti = ti
        return {
            "ti": ti,
            "task_instance": ti,
            "params": {},
            "run_id": "manual__1",
            "task_state_store": task.store,
        }

    mocker.patch.object(task, "context", retry_context)
    again = task.defer()
    event = fire(again.trigger, mocker, client)
    assert task.resume_execution(again.method_name, {**(again.kwargs or {}), "event": event}) == "second"
    cost = task.cost
    assert (cost["requests"], cost["usd_spent"], cost["estimated"]) == (2, "0.002", False), cost
    assert [t["requests"] for t in cost["tries"]] == [1, 1]
    assert cost["estimates"] == []


def test_a_timeout_during_the_second_deferrals_resume_counts_both_turns_exactly(mocker):
    """A tool call repaired over two deferrals; its execution_timeout fires as the second resume starts
    (before that event is recorded): both turns count exactly, once."""
    from airflow.sdk.exceptions import AirflowTaskTimeout

    from airflow_provider_qwen.operators import QwenToolCallOperator
    from airflow_provider_qwen.operators.kill import QwenTaskKilled

    task, client = _repaired_ticket(mocker)
    first = task.defer()
    event = fire(first.trigger, mocker, client)
    with pytest.raises(TaskDeferred) as again:
        task.resume_execution(first.method_name, {**(first.kwargs or {}), "event": event})
    second = again.value
    event = fire(second.trigger, mocker, client)
    original = QwenToolCallOperator.turn_request

    def turn_request(self: Any, *args: Any, **kwargs: Any) -> Any:
        cause = AirflowTaskTimeout("Timeout, PID: 1")
        self._stop(self._qwen_run, QwenTaskKilled(f"timed out: {cause}", cause=cause))
        return original(self, *args, **kwargs)

    mocker.patch.object(QwenToolCallOperator, "turn_request", turn_request)
    with pytest.raises(AirflowTaskTimeout):
        task.resume_execution(second.method_name, {**(second.kwargs or {}), "event": event})
    cost = task.cost
    assert (cost["requests"], cost["usd_spent"], cost["estimated"]) == (2, "0.002", False), cost
    assert cost["estimates"] == []


def _resume_no_usage(mocker: Any, stop: bool) -> dict[str, Any]:
    from airflow_provider_qwen.client.models import ChatCompletion
    from airflow_provider_qwen.operators.kill import QwenTaskKilled

    client = with_client(mocker, QwenChatOperator, no_usage_answer("ok"))
    task = PausedTask(
        QwenChatOperator(task_id="chat", prompt="hi " * 200, max_completion_tokens=1000, deferrable=True)
    )
    deferred = task.defer()
    event = fire(deferred.trigger, mocker, client)
    kwargs = {**(deferred.kwargs or {}), "event": event}
    if not stop:
        assert task.resume_execution(deferred.method_name, kwargs) == "ok"
        return task.cost
    operators: list[Any] = []
    metered = QwenChatOperator.metered

    def tracked(self: Any, *args: Any, **kw: Any) -> Any:
        operators.append(self)
        return metered(self, *args, **kw)

    original = ChatCompletion.from_dict.__func__

    def from_dict(cls: Any, data: Any) -> Any:
        operators[-1].on_kill()  # SIGTERM while the event's answer is parsed (the request was built)
        return original(cls, data)

    mocker.patch.object(QwenChatOperator, "metered", tracked)
    mocker.patch.object(ChatCompletion, "from_dict", classmethod(from_dict))
    with pytest.raises(QwenTaskKilled):
        task.resume_execution(deferred.method_name, kwargs)
    return task.cost


def test_a_stop_while_an_answer_without_usage_is_read_estimates_it_as_without_the_stop(mocker):
    calm = _resume_no_usage(mocker, stop=False)
    stopped = _resume_no_usage(mocker, stop=True)
    assert calm["prompt_tokens"] > 100  # the estimate counts the prompt
    assert (stopped["requests"], stopped["prompt_tokens"], stopped["usd_spent"]) == (
        calm["requests"],
        calm["prompt_tokens"],
        calm["usd_spent"],
    )
