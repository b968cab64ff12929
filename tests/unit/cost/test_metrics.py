"""Airflow metrics of Qwen spend: names, counts, dag/task/model tags; once per try, never failing a task."""

from __future__ import annotations

from decimal import Decimal

import pytest
from airflow.sdk import DAG

from airflow_provider_qwen import metrics
from airflow_provider_qwen.client.errors import ServerError
from airflow_provider_qwen.client.pricing import Cost
from airflow_provider_qwen.cost.record import CostTotals
from airflow_provider_qwen.operators.base import QwenBaseOperator
from airflow_provider_qwen.operators.chat import QwenChatOperator
from tests.support.operator_fakes import MODEL, answer, run, with_client

TAGS = {"dag_id": "metrics_dag", "task_id": "chat", "model": MODEL}


@pytest.fixture
def stats(mocker):
    """Airflow's real Stats facade with ``incr`` mocked: proves the provider reaches the right object."""
    from airflow.sdk.observability.stats import Stats

    return mocker.patch.object(Stats, "incr")


def _chat():
    with DAG("metrics_dag", schedule=None):
        return QwenChatOperator(task_id="chat", prompt="?")


def _emitted(incr) -> dict[str, tuple[object, dict]]:
    return {call.args[0]: (call.kwargs["count"], call.kwargs["tags"]) for call in incr.call_args_list}


def test_a_task_try_emits_its_spend_with_dag_task_and_model_tags(mocker, stats):
    with_client(mocker, QwenBaseOperator, answer("ok", usd=Decimal("0.0000035")))
    run(_chat())
    assert _emitted(stats) == {
        "qwen.requests": (1, TAGS),
        "qwen.tokens.prompt": (10, TAGS),
        "qwen.tokens.completion": (5, TAGS),
        "qwen.cost.credits": (7, TAGS),
        "qwen.cost.usd": (pytest.approx(0.0000035), TAGS),
    }
    assert isinstance(_emitted(stats)["qwen.cost.credits"][0], int)  # exact integer counter


def test_a_failed_try_emits_what_it_was_charged(mocker, stats):
    with_client(mocker, QwenBaseOperator, answer("cut", finish_reason="length"))
    op = _chat()
    op.fail_on_truncation = True
    with pytest.raises(Exception, match="token limit"):
        run(op)
    assert _emitted(stats)["qwen.requests"] == (1, TAGS)


def test_a_try_that_paid_nothing_emits_nothing(mocker, stats):
    with_client(mocker, QwenBaseOperator, ServerError("down", status_code=503))
    with pytest.raises(ServerError):
        run(_chat())
    stats.assert_not_called()


def test_one_set_of_counters_per_model(stats):
    cheap, dear = CostTotals(), CostTotals()
    cheap.add_charge("alibaba/qwen-turbo", Cost(10, Decimal("0.000005")))
    dear.add_charge(MODEL, Cost(2000, Decimal("0.001")))
    dear.add_charge(MODEL, Cost(2000, Decimal("0.001")))
    metrics.emit_cost_metrics({"alibaba/qwen-turbo": cheap, MODEL: dear}, dag_id="d", task_id="t")
    requests = [
        (c.kwargs["tags"]["model"], c.kwargs["count"])
        for c in stats.call_args_list
        if c.args[0] == "qwen.requests"
    ]
    assert sorted(requests) == [("alibaba/qwen-turbo", 1), (MODEL, 2)]


def test_a_broken_metrics_backend_never_fails_the_task(mocker, stats, caplog):
    stats.side_effect = OSError("statsd unreachable")
    with_client(mocker, QwenBaseOperator, answer("ok"))
    result, ti = run(_chat())
    assert result == "ok"
    assert ti.pushed["qwen_cost"]["requests"] == 1
    assert "could not emit Qwen cost metrics" in caplog.text


def test_an_opentelemetry_backend_records_usd_as_a_float_counter(monkeypatch):
    from airflow.sdk._shared.observability.metrics import stats as stats_module
    from airflow.sdk._shared.observability.metrics.otel_logger import SafeOtelLogger
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    monkeypatch.setattr(stats_module, "_backend", SafeOtelLogger(MeterProvider(metric_readers=[reader])))
    ledger = CostTotals()
    for _ in range(3):
        ledger.add_charge(MODEL, Cost(7, Decimal("0.0000035")))
    metrics.emit_cost_metrics({MODEL: ledger}, dag_id="d", task_id="t")

    points = {
        metric.name: point
        for resource in reader.get_metrics_data().resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
    }
    usd = points["airflow.qwen.cost.usd"]
    assert usd.value == pytest.approx(0.0000105)
    assert dict(usd.attributes) == {"dag_id": "d", "task_id": "t", "model": MODEL}
    assert points["airflow.qwen.cost.credits"].value == 21
    assert points["airflow.qwen.requests"].value == 3
