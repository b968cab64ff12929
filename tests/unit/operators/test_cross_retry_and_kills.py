"""Hostile pass over how issue 16's features meet (1/2): the retry policy on an error a deferred call
brings back through its trigger event, against the same error in the worker; kills and timeouts
while a deferred call resumes; a mapped deferred decorated task under the policy (``dag.test()``);
a budgeted resume whose cost journal cannot be read; a trigger that timed out."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskAwaitingInput, TaskDeferred

from airflow_provider_qwen.client import errors
from airflow_provider_qwen.client.errors import Charge, error_for_status
from airflow_provider_qwen.operators import QwenChatOperator
from airflow_provider_qwen.retry_policy import QwenRetryPolicy, RetryAction
from tests.integration import conftest as dag_tests
from tests.support import deferral_fakes
from tests.support.deferral_fakes import PausedTask, approve, decorated_task, fire
from tests.support.operator_fakes import (
    answer,
    with_client,
)

# the DAG-test fixtures (a migrated SQLite metadata DB, ``run_dag``) of tests/integration
airflow_db = dag_tests.airflow_db
run_dag = dag_tests.run_dag


pytestmark = pytest.mark.usefixtures("deferral_storage")
deferral_storage = deferral_fakes.deferral_storage


def _raised(call: Any) -> BaseException:
    try:
        call()
    except BaseException as exc:  # whatever the task raised is what the policy sees
        return exc
    raise AssertionError("the task did not fail")


def _worker_error(mocker: Any, reply: Any, **params: Any) -> BaseException:
    with_client(mocker, QwenChatOperator, reply)
    task = PausedTask(QwenChatOperator(task_id="chat", prompt="hi", max_completion_tokens=1000, **params))
    return _raised(task.execute)


def _deferred_error(mocker: Any, reply: Any, **params: Any) -> tuple[BaseException, PausedTask]:
    client = with_client(mocker, QwenChatOperator, reply)
    task = PausedTask(
        QwenChatOperator(task_id="chat", prompt="hi", max_completion_tokens=1000, deferrable=True, **params)
    )
    deferred = task.defer()
    event = fire(deferred.trigger, mocker, client)
    kwargs = {**(deferred.kwargs or {}), "event": event}
    return _raised(lambda: task.resume_execution(deferred.method_name, kwargs)), task


def _decision(exc: BaseException) -> tuple[RetryAction, timedelta | None]:
    decision = QwenRetryPolicy().evaluate(exc, try_number=1, max_tries=4)
    return decision.action, decision.retry_delay


# -- the retry policy: a deferred call's error decides as in the worker ----------------------------

QUOTA_BODY = b'{"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}'
CUT = errors.StreamError("the stream was cut", client_request_id="r", charge=Charge(unconfirmed_tries=1))

SAME_DECISION = {
    "401": lambda: error_for_status(401, b'{"error": {"message": "bad key"}}'),
    "403": lambda: error_for_status(403, b'{"error": {"message": "no credits"}}'),
    "404": lambda: error_for_status(404, b"not found"),
    "301": lambda: error_for_status(301, b""),
    "429 Retry-After 7": lambda: error_for_status(429, b"{}", retry_after=7.0),
    "429 Retry-After 1e20": lambda: error_for_status(429, b"{}", retry_after=1e20),
    "503 Retry-After 30": lambda: error_for_status(503, b"upstream", retry_after=30.0),
    "504": lambda: error_for_status(504, b""),
    "cut stream": lambda: CUT,
    "read timeout": lambda: errors.APITimeoutError("timed out", charge=Charge(unconfirmed_tries=1)),
    "dropped": lambda: errors.APIConnectionError("dropped"),
    "unreadable 200": lambda: errors.InvalidResponseError("not json"),
}


@pytest.mark.parametrize("name", list(SAME_DECISION))
def test_a_deferred_calls_error_gets_the_worker_paths_decision(mocker, name):
    worker = _worker_error(mocker, SAME_DECISION[name]())
    deferred, task = _deferred_error(mocker, SAME_DECISION[name]())
    assert type(deferred) is type(worker)
    assert _decision(deferred) == _decision(worker)
    assert _decision(worker)[0] is not RetryAction.DEFAULT
    assert task.cost["requests"] >= 0  # qwen_cost pushed on the failing resume


def test_a_spent_quota_429_fails_at_once_deferred_as_in_the_worker(mocker):
    worker = _worker_error(mocker, error_for_status(429, QUOTA_BODY, retry_after=1.0))
    assert _decision(worker)[0] is RetryAction.FAIL
    deferred, _ = _deferred_error(mocker, error_for_status(429, QUOTA_BODY, retry_after=1.0))
    assert _decision(deferred)[0] is RetryAction.FAIL


def test_an_unbounded_retry_after_waits_max_retry_delay_deferred_too(mocker):
    worker = _worker_error(mocker, error_for_status(429, b"{}", retry_after=float("inf")))
    assert _decision(worker) == (RetryAction.RETRY, QwenRetryPolicy().max_retry_delay)
    deferred, _ = _deferred_error(mocker, error_for_status(429, b"{}", retry_after=float("inf")))
    assert _decision(deferred) == _decision(worker)


def test_a_budget_refusal_fails_at_once_deferred_or_not_and_sends_nothing(mocker):
    """The refusal of a deferrable call is raised before deferring (nothing reaches the triggerer)."""
    worker = _worker_error(mocker, answer("never"), max_cost_usd="0.0000001")
    client = with_client(mocker, QwenChatOperator, answer("never"))
    task = PausedTask(
        QwenChatOperator(
            task_id="chat", prompt="hi", max_completion_tokens=1000, deferrable=True, max_cost_usd="0.0000001"
        )
    )
    deferred = _raised(task.execute)
    assert not isinstance(deferred, TaskDeferred)
    assert type(deferred) is type(worker)
    assert _decision(deferred)[0] is _decision(worker)[0] is RetryAction.FAIL
    assert client.requests == []
    assert task.cost["requests"] == 0


# -- a kill while a deferred call resumes -------------------------------------------------------


def _killed_while(mocker: Any, where: str, how: str = "sigterm") -> PausedTask:
    """Defer a chat, fire its trigger (a paid answer), then resume it with a stop arriving in ``where``
    of the resumed operator: a SIGTERM (``on_kill``, as the task runner's handler calls it) or its
    ``execution_timeout`` (SIGALRM's AirflowTaskTimeout, as the routed handler stops the body)."""
    from airflow.sdk.exceptions import AirflowTaskTimeout

    from airflow_provider_qwen.operators.kill import QwenTaskKilled

    client = with_client(mocker, QwenChatOperator, answer("the answer"))
    task = PausedTask(
        QwenChatOperator(task_id="chat", prompt="hi", max_completion_tokens=1000, deferrable=True)
    )
    deferred = task.defer()
    event = fire(deferred.trigger, mocker, client)
    original = getattr(QwenChatOperator, where)

    def stopped(self: Any, *args: Any, **kwargs: Any) -> Any:
        if how == "sigterm":
            self.on_kill()  # in the body's thread, as the signal handler runs
        else:
            cause = AirflowTaskTimeout("Timeout, PID: 1")
            self._stop(self._qwen_run, QwenTaskKilled(f"timed out: {cause}", cause=cause))
        return original(self, *args, **kwargs)

    mocker.patch.object(QwenChatOperator, where, stopped)
    expected = QwenTaskKilled if how == "sigterm" else AirflowTaskTimeout
    with pytest.raises(expected):
        task.resume_execution(deferred.method_name, {**(deferred.kwargs or {}), "event": event})
    return task


@pytest.mark.parametrize("how", ["sigterm", "timeout"])
def test_a_kill_while_the_deferred_call_resumes_still_counts_its_paid_answer(mocker, how):
    task = _killed_while(mocker, "turn_request", how)
    cost = task.cost
    assert cost["requests"] == 1, cost
    assert cost["usd_spent"] != "0" or cost["estimated"] is True


def test_a_kill_once_the_deferred_answer_is_recorded_counts_it_once(mocker):
    """SIGTERM after the event's answer is recorded (in after_turn): the paid answer counts exactly once,
    as the service billed it, and is not counted again as a possibly paid interrupted try."""
    task = _killed_while(mocker, "after_turn")
    cost = task.cost
    assert (cost["requests"], cost["usd_spent"], cost["estimated"]) == (1, "0.001", False)
    assert cost["estimates"] == []


# -- dag.test(): a mapped, deferred decorated task under the retry policy, a hostile server -----------


def test_a_mapped_deferred_decorated_task_meets_a_key_echoing_400(run_dag, qwen_emulator, capfd, caplog):
    """``.expand()`` over three returned prompts, each call deferred (the trigger runs inline), retries=2
    under QwenRetryPolicy. The first call meets a server that echoes the request's headers (the key)
    in a 400: that map index fails at once (one try), the others answer their own prompt verbatim; each
    map index has its own qwen_cost adding up to what the emulator billed; the key is in no XCom and no
    log line."""
    import logging
    from decimal import Decimal

    import pendulum
    from airflow.sdk import DAG, task

    from airflow_provider_qwen.testing.faults import Fault

    caplog.set_level(logging.INFO)
    qwen_emulator.add_faults(Fault.echo_headers(status=400))
    with DAG("qwen_cross_mapped", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:

        @task
        def topics() -> list[str]:
            return ["tides {{ 7*7 }}", "volcanoes {% raw %}", "comets"]

        @task.qwen(
            deferrable=True,
            max_completion_tokens=300,
            retries=2,
            retry_delay=timedelta(seconds=0),
            retry_policy=QwenRetryPolicy(),
        )
        def explain(topic: str) -> str:
            return f"Explain {topic}"

        explain.expand(topic=topics())

    result = run_dag(dag)

    states = {m: s for (t, m), s in result.task_states.items() if t == "explain"}
    assert sorted(states.values()) == ["failed", "success", "success"], states
    chats = [r for r in qwen_emulator.requests if r.path.endswith("/chat/completions")]
    sent = sorted(r.body["messages"][-1]["content"] for r in chats)
    # the failed index is not retried (400 fails at once): one request per map index
    assert sent == sorted(f"Explain {t}" for t in ["tides {{ 7*7 }}", "volcanoes {% raw %}", "comets"])
    costs = {m: v for (t, k, m), v in result.xcoms.items() if t == "explain" and k == "qwen_cost"}
    assert sorted(costs) == [0, 1, 2]
    failed = next(m for m, s in states.items() if s == "failed")
    assert (costs[failed]["requests"], costs[failed]["usd_spent"]) == (0, "0")  # a 400 is not billed
    credits, usd = qwen_emulator.total_charged()
    assert sum(c["credits_used"] for c in costs.values()) == credits
    assert sum(Decimal(c["usd_spent"]) for c in costs.values()) == usd
    key = qwen_emulator.api_key
    assert all(key not in repr(v) for v in result.xcoms.values())
    out, err = capfd.readouterr()
    assert key not in out + err + caplog.text


@pytest.mark.parametrize(
    "fault",
    ["cut", "rate_limited", "server_error"],
)
def test_a_transient_failure_then_a_retry_costs_the_same_deferred_as_in_the_worker(
    run_dag, qwen_emulator, monkeypatch, fault
):
    """A streamed chat meets a transient fault on every client try of its first task try (a cut stream,
    a 429 with Retry-After, a 503): QwenRetryPolicy retries the task; the second try answers. Deferred
    or not: the same task states, the same sends, and a qwen_cost covering both tries equally, adding
    up to what the emulator billed."""
    from decimal import Decimal

    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_qwen.testing.faults import Fault
    from tests.support.cost_fakes import COST_FIELDS

    make = {
        "cut": lambda: Fault.cut(after_chunks=3),
        "rate_limited": lambda: Fault.rate_limited(retry_after=0.01),
        "server_error": lambda: Fault.server_error(503, retry_after=0.01),
    }[fault]
    monkeypatch.setenv(
        "AIRFLOW_CONN_QWEN_DEFAULT",
        qwen_emulator.conn_json().replace('"password"', '"extra": {"max_retries": 0}, "password"'),
    )
    runs = {}
    for deferrable in (False, True):
        qwen_emulator.reset()
        qwen_emulator.add_faults(make())
        with DAG(
            f"qwen_cross_retry_{fault}_{deferrable}",
            schedule=None,
            start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        ) as dag:
            QwenChatOperator(
                task_id="chat",
                prompt="Tell a story",
                stream=True,
                max_completion_tokens=300,
                deferrable=deferrable,
                retries=1,
                retry_delay=timedelta(seconds=0),
                retry_policy=QwenRetryPolicy(max_retry_delay=timedelta(seconds=1)),
            )
        result = run_dag(dag)
        chats = [r for r in qwen_emulator.requests if r.path.endswith("/chat/completions")]
        runs[deferrable] = (result, [r.status for r in chats], qwen_emulator.total_charged())
    (worker, worker_sent, worker_billed), (deferred, deferred_sent, deferred_billed) = runs[False], runs[True]
    assert worker.task_states == deferred.task_states == {("chat", -1): "success"}
    assert deferred_sent == worker_sent
    assert len(worker_sent) == 2  # one per task try: the retry was the task's
    worker_cost, deferred_cost = worker.xcom("chat", "qwen_cost"), deferred.xcom("chat", "qwen_cost")
    assert {k: deferred_cost[k] for k in COST_FIELDS} == {k: worker_cost[k] for k in COST_FIELDS}
    assert len(deferred_cost["tries"]) == len(worker_cost["tries"]) == 2
    assert deferred_billed == worker_billed
    assert Decimal(deferred_cost["usd_spent"]) >= deferred_billed[1]


# -- a journal that cannot be read when a budgeted deferred call resumes ------------------------------


@pytest.mark.parametrize("pause", ["deferral", "review"])
def test_a_budgeted_resume_whose_journal_cannot_be_read_still_counts_the_paid_answer(mocker, pause):
    from airflow_provider_qwen.cost.journal import CostJournal, JournalError

    client = with_client(mocker, QwenChatOperator, answer("the answer"))
    mocker.patch("airflow.sdk.execution_time.hitl.upsert_hitl_detail")
    task = PausedTask(
        QwenChatOperator(
            task_id="chat",
            prompt="hi",
            max_completion_tokens=1000,
            max_cost_usd="1",
            deferrable=pause == "deferral",
            require_approval=pause == "review",
        )
    )
    if pause == "deferral":
        deferred: Any = task.defer()
        kwargs = {**(deferred.kwargs or {}), "event": fire(deferred.trigger, mocker, client)}
    else:
        with pytest.raises(TaskAwaitingInput) as parked:
            task.execute()
        deferred = parked.value
        kwargs = {**deferred.kwargs, "event": approve()}
    mocker.patch.object(CostJournal, "read", side_effect=JournalError("storage is down"))
    # nothing new is sent, so no budget decision is needed: the paid answer is delivered and counted
    assert task.resume_execution(deferred.method_name, kwargs) == "the answer"
    assert len(client.requests) == 1  # the answer was paid for before the pause
    assert task.cost["requests"] == 1
    assert task.cost["usd_spent"] == "0.001"


def test_a_repair_after_a_budgeted_resume_whose_journal_cannot_be_read_is_refused_unsent(mocker):
    from pydantic import BaseModel

    from airflow_provider_qwen.cost.journal import CostJournal, JournalError
    from airflow_provider_qwen.operators import QwenToolCallOperator
    from airflow_provider_qwen.operators.spend import BudgetRefusedError

    class Ticket(BaseModel):
        priority: int

    client = with_client(
        mocker, QwenToolCallOperator, answer(None, tool_calls=[("c1", "Ticket", {"priority": "high"})])
    )
    task = PausedTask(
        QwenToolCallOperator(
            task_id="chat",
            prompt="hi",
            output_model=Ticket,
            max_completion_tokens=300,
            max_cost_usd="1",
            deferrable=True,
        )
    )
    deferred = task.defer()
    kwargs = {**(deferred.kwargs or {}), "event": fire(deferred.trigger, mocker, client)}
    mocker.patch.object(CostJournal, "read", side_effect=JournalError("storage is down"))
    with pytest.raises(BudgetRefusedError, match="storage is down"):  # the repair would need a send
        task.resume_execution(deferred.method_name, kwargs)
    assert len(client.requests) == 1  # the invalid answer only; the repair was not sent
    assert task.cost["requests"] == 1  # and the invalid answer is counted


# -- execution_timeout over a deferred decorated call ---------------------------------------------------


def test_a_deferred_decorated_call_whose_trigger_timed_out_counts_it_and_decides_as_a_worker_timeout(
    mocker, tmp_path
):
    """Airflow resumes a task whose trigger passed ``execution_timeout`` only to fail it: the call in
    flight is counted as one possibly paid try, the function is not run again, and QwenRetryPolicy
    leaves the timeout to the task's retries, as it does for a timeout in the worker."""
    from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason
    from airflow.sdk.exceptions import AirflowTaskTimeout, TaskDeferralTimeout

    with_client(mocker, QwenChatOperator)
    operator, calls = decorated_task(
        tmp_path, "qwen", "{{ 7*7 }}", deferrable=True, execution_timeout=timedelta(seconds=5)
    )
    task = PausedTask(operator)
    deferred = task.defer()
    assert deferred.timeout == timedelta(seconds=5)
    rid = deferred.trigger.client_request_id
    kwargs = {**(deferred.kwargs or {}), "error": TriggerFailureReason.TRIGGER_TIMEOUT, "traceback": ["x"]}
    failed = _raised(lambda: task.resume_execution(TRIGGER_FAIL_REPR, kwargs))
    assert isinstance(failed, TaskDeferralTimeout)
    assert calls == [1]
    cost = task.cost
    assert (cost["requests"], cost["estimated"]) == (1, True)
    assert [(e["kind"], e["client_request_id"]) for e in cost["estimates"]] == [("unconfirmed", rid)]
    assert _decision(failed) == _decision(AirflowTaskTimeout("timed out")) == (RetryAction.DEFAULT, None)
