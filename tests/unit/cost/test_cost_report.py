"""QwenCostReportOperator and the callback path: per task, per model, mapped instances and retries."""

from __future__ import annotations

import logging
from decimal import Decimal

from airflow.sdk import DAG

from airflow_provider_qwen.callbacks import make_cost_callback, qwen_cost_callback
from airflow_provider_qwen.cost.record import CostRecord
from airflow_provider_qwen.operators import QwenCostReportOperator
from airflow_provider_qwen.operators.chat import QwenChatOperator
from tests.support.cost_fakes import FakeRun, cost_record
from tests.support.operator_fakes import MODEL

CHEAP = "alibaba/qwen-turbo"


def _run_with_costs():
    with DAG("cost_dag", schedule=None) as dag:
        QwenChatOperator.partial(task_id="extract").expand(prompt=["a", "b"])
        QwenChatOperator(task_id="summarise", prompt="?", model=CHEAP)
        report = QwenCostReportOperator(task_id="cost_report")
    fake_run = FakeRun()
    fake_run.put("extract", cost_record("0.001"), map_index=0)
    fake_run.put("extract", cost_record("0.0005", requests=2), map_index=1)
    tries = [cost_record("0.002", try_number=1, model=CHEAP), cost_record("0.003", try_number=2, model=CHEAP)]
    fake_run.put(
        "summarise",
        CostRecord.combine([CostRecord.from_xcom(t) for t in tries], model=CHEAP, try_number=2).to_xcom(),
    )
    return dag, report, fake_run


def test_report_adds_up_every_task_map_index_and_try():
    dag, report_op, fake_run = _run_with_costs()
    ti = fake_run.ti("cost_report")
    report = report_op.execute({"ti": ti, "dag": dag, "run_id": "manual__1"})

    assert report["dag_id"] == "cost_dag"
    assert report["run_id"] == "manual__1"
    total = report["total"]
    assert total["usd_spent"] == "0.007"
    assert total["credits_used"] == 14_000
    assert total["requests"] == 5
    assert total["tries"] == 4
    assert total["instances"] == 3
    assert total["estimated"] is False
    extract, summarise = report["by_task"]["extract"], report["by_task"]["summarise"]
    assert (extract["usd_spent"], extract["instances"], extract["requests"]) == ("0.002", 2, 3)
    assert (summarise["usd_spent"], summarise["tries"], summarise["instances"]) == ("0.005", 2, 1)
    assert report["by_model"][MODEL]["usd_spent"] == "0.002"
    assert report["by_model"][CHEAP]["usd_spent"] == "0.005"
    assert sum(Decimal(m["usd_spent"]) for m in report["by_model"].values()) == Decimal(total["usd_spent"])
    assert [p["task_ids"] for p in fake_run.pulls] == [["extract"], ["summarise"]]  # not itself


def test_report_runs_after_failures_and_logs_a_table(mocker):
    dag, report_op, fake_run = _run_with_costs()
    assert report_op.trigger_rule == "all_done"  # failed tries cost money too
    log = mocker.patch.object(type(report_op), "log", new_callable=mocker.PropertyMock).return_value
    report_op.execute({"ti": fake_run.ti("cost_report"), "dag": dag, "run_id": "manual__1"})
    table = "\n".join(str(arg) for call in log.info.call_args_list for arg in call.args)
    assert "Qwen cost of DAG run cost_dag / manual__1" in table
    assert "task extract" in table
    assert f"model {CHEAP}" in table
    total_line = next(line for line in table.splitlines() if "TOTAL" in line)
    assert total_line.split()[-1] == "0.007"
    assert "14,000" in total_line


def test_report_over_chosen_tasks_only():
    dag, _, fake_run = _run_with_costs()
    op = QwenCostReportOperator(task_id="summarise_cost", task_ids=["summarise"], dag=dag)
    report = op.execute({"ti": fake_run.ti("summarise_cost"), "dag": dag, "run_id": "manual__1"})
    assert list(report["by_task"]) == ["summarise"]
    assert report["total"]["usd_spent"] == "0.005"


def test_report_of_a_run_without_qwen_spend_is_zero():
    with DAG("empty", schedule=None) as dag:
        QwenChatOperator(task_id="chat", prompt="?")
        op = QwenCostReportOperator(task_id="cost_report")
    report = op.execute({"ti": FakeRun("empty").ti("cost_report"), "dag": dag, "run_id": "manual__1"})
    assert report["total"]["usd_spent"] == "0"
    assert report["by_task"] == {}


def test_callback_logs_the_run_table_without_a_task(caplog):
    dag, _, fake_run = _run_with_costs()
    with caplog.at_level(logging.INFO, logger="airflow_provider_qwen.callbacks"):
        qwen_cost_callback({"ti": fake_run.reader("summarise"), "dag": dag, "run_id": "manual__1"})
    assert "Qwen cost of DAG run cost_dag / manual__1" in caplog.text
    total_line = next(line for line in caplog.text.splitlines() if "TOTAL" in line)
    assert total_line.split()[-1] == "0.007"


def test_callback_without_a_task_instance_warns_and_does_not_raise(caplog):
    qwen_cost_callback({"dag": None, "run_id": "manual__1", "reason": "success"})
    assert "Qwen cost report skipped for run manual__1" in caplog.text


def test_callback_to_a_sink_gets_the_report_and_survives_its_errors(caplog):
    dag, _, fake_run = _run_with_costs()
    got = []
    context = {"ti": fake_run.reader("summarise"), "dag": dag, "run_id": "manual__1"}
    make_cost_callback(lambda report, ctx: got.append((report["total"]["usd_spent"], ctx["run_id"])))(context)
    assert got == [("0.007", "manual__1")]

    def broken(report, ctx):
        raise RuntimeError("chat service down")

    make_cost_callback(broken)(context)
    assert "the Qwen cost sink" in caplog.text
    assert "chat service down" in caplog.text
