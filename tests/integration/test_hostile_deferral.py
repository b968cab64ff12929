"""Deferrable calls under ``dag.test()`` against a hostile server (the emulator's faults) and a hostile
environment: ``qwen_cost`` the same as in the worker whatever the fault, a triggerer that cannot read
the connection, a server that echoes the key."""

from __future__ import annotations

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_qwen.operators import QwenChatOperator
from airflow_provider_qwen.testing.faults import Fault
from tests.support.cost_fakes import COST_FIELDS

START = pendulum.datetime(2025, 1, 1, tz="UTC")


@pytest.fixture(autouse=True)
def _fire_at_once(monkeypatch):
    """dag.test() runs the trigger inline: no scheduler to race, so no resume guard."""
    monkeypatch.setenv("AIRFLOW__QWEN__RESUME_GUARD_SECONDS", "0")


def _chats(emulator):
    return [r for r in emulator.requests if r.path.endswith("/chat/completions")]


def _cost_view(cost):
    return (
        {k: cost[k] for k in COST_FIELDS},
        [(e["kind"], e["estimated_usd"], e["reported_usd"], e["unsettled_usd"]) for e in cost["estimates"]],
    )


# Faults whose cost must be estimated (no usage, a stream cut after its answer, a dropped try that is
# retried): the figures deferred must be those of the worker, unsettled included.
ESTIMATED = {
    "no_usage": ([Fault.no_usage()], {}),
    "stream_no_usage": ([Fault.no_usage()], {"stream": True}),
    "cut_after_finish": ([Fault.cut_after_finish()], {"stream": True}),
    "dropped_try": ([Fault.drop()], {}),
    "no_usage_budget": ([Fault.no_usage()], {"max_cost_usd": "1"}),
}


@pytest.mark.parametrize("case", sorted(ESTIMATED))
def test_an_estimated_cost_is_the_same_deferred_as_in_the_worker(run_dag, qwen_emulator, case):
    faults, params = ESTIMATED[case]
    seen = {}
    for deferrable in (False, True):
        qwen_emulator.reset()
        qwen_emulator.add_faults(*faults)
        with DAG(f"qwen_hostile_deferral_{case}_{deferrable}", schedule=None, start_date=START) as dag:
            QwenChatOperator(
                task_id="chat",
                prompt="Hello there",
                max_completion_tokens=100,
                deferrable=deferrable,
                retries=0,
                **params,
            )
        result = run_dag(dag)
        cost = result.xcom("chat", "qwen_cost")
        seen[deferrable] = (result.task_states, _cost_view(cost), qwen_emulator.total_charged())
        assert cost["estimated"] is True
    assert seen[True] == seen[False]


def test_a_triggerer_that_cannot_read_the_connection_counts_nothing_sent(run_dag, qwen_emulator, mocker):
    """The worker reads the connection, the triggerer cannot (another secrets backend): the task fails
    saying why, and qwen_cost shows no request, since none was sent (it showed one, estimated)."""
    from airflow_provider_qwen.hooks.qwen import QwenHook

    mocker.patch.object(
        QwenHook, "aconfig", side_effect=RuntimeError("The conn_id `qwen_default` isn't defined")
    )
    with DAG("qwen_hostile_deferral_conn", schedule=None, start_date=START) as dag:
        QwenChatOperator(task_id="chat", prompt="Hello", max_completion_tokens=50, deferrable=True, retries=0)
    result = run_dag(dag)
    assert result.task_states[("chat", -1)] == "failed"
    assert _chats(qwen_emulator) == []
    cost = result.xcom("chat", "qwen_cost")
    assert (cost["requests"], cost["usd_spent"], cost["estimated"], cost["usd_unsettled"]) == (
        0,
        "0",
        False,
        "0",
    )


def test_a_server_echoing_the_key_never_puts_it_in_a_log_event_or_xcom_deferred(
    run_dag, monkeypatch, capfd, caplog
):
    """The malformed HTTP answer that echoes the request headers, the key among them, met in the
    triggerer: the key is in no log line, trigger event (the resumed task's next_kwargs) or XCom."""
    import json
    import logging

    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    from tests.unit.client.test_secrets_hostile import KEY, HostileServer, echo_status_line

    server = HostileServer(echo_status_line)
    conn = {"conn_type": "qwen", "host": server.base_url, "password": KEY, "extra": {"max_retries": 1}}
    monkeypatch.setenv("AIRFLOW_CONN_QWEN_DEFAULT", json.dumps(conn))
    caplog.set_level(logging.DEBUG)
    try:
        with DAG("qwen_hostile_deferral_secrets", schedule=None, start_date=START) as dag:
            QwenChatOperator(
                task_id="ask", prompt="hello", max_completion_tokens=100, retries=0, deferrable=True
            )
        result = run_dag(dag)
    finally:
        server.close()
    assert result.task_states[("ask", -1)] == "failed"
    assert all(KEY in raw.decode("latin-1") for raw in server.requests)
    out, err = capfd.readouterr()
    records = "\n".join(logging.Formatter().format(record) for record in caplog.records)
    seen = [
        out,
        err,
        caplog.text,
        records,
        json.dumps({str(k): v for k, v in result.xcoms.items()}, default=str),
    ]
    with create_session() as session:
        for ti in session.query(TaskInstance).filter(TaskInstance.dag_id == dag.dag_id):
            seen.append(json.dumps(ti.next_kwargs, default=str))
    text = "\n".join(seen)
    assert "Bad status line" in text or "illegal status line" in text  # the failure is there
    assert text.count(KEY) == 0
    assert text.count(KEY[:16]) == 0
