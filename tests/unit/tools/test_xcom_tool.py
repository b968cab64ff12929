"""xcom_tool with a fake task instance: reads what xcom_pull returns, only from allowed tasks, bounded,
and refuses outside an Airflow task."""

from __future__ import annotations

import json

import pytest

pytest.importorskip(
    "airflow_provider_qwen.agent.tools", reason="agent/tools.py (the tool API) has not landed"
)

from airflow_provider_qwen.tools import ToolRefusedError, xcom_tool
from tests.unit.tools.helpers import call, make_context


@pytest.fixture
def ti(mocker):
    ti = mocker.Mock(name="ti")
    ti.xcom_pull.return_value = {"total": 3, "day": "2026-12-01"}
    return ti


def test_reads_an_allowed_tasks_return_value(ti):
    tool = xcom_tool(task_ids=["extract", "load"])
    text = call(tool, make_context({"ti": ti}), task_id="extract")
    assert json.loads(text) == {"total": 3, "day": "2026-12-01"}
    ti.xcom_pull.assert_called_once_with(task_ids="extract", key="return_value")


def test_key_and_map_index_are_passed_on(ti):
    tool = xcom_tool()
    call(tool, make_context({"ti": ti}), task_id="shard", key="qwen_cost", map_index=2)
    ti.xcom_pull.assert_called_once_with(task_ids="shard", key="qwen_cost", map_indexes=2)


def test_a_task_not_allowed_is_refused_with_the_allowed_list(ti):
    tool = xcom_tool(task_ids=["extract", "load"])
    with pytest.raises(ToolRefusedError, match=r"task_id='secrets' may not be read; allowed: extract, load"):
        call(tool, make_context({"ti": ti}), task_id="secrets")
    ti.xcom_pull.assert_not_called()


def test_a_large_value_is_bounded_with_the_note(ti):
    ti.xcom_pull.return_value = [{"row": i, "text": "z" * 50} for i in range(1_000)]
    text = call(xcom_tool(max_bytes=1_000), make_context({"ti": ti}), task_id="extract")
    assert len(text.encode("utf-8")) <= 1_000
    assert text.startswith('[{"row": 0')
    assert "[truncated:" in text


def test_a_missing_xcom_is_said_plainly(ti):
    ti.xcom_pull.return_value = None
    text = call(xcom_tool(), make_context({"ti": ti}), task_id="extract", map_index=1)
    assert (
        text
        == "no XCom 'return_value' from task 'extract' map_index 1 in this DAG run (or its value is null)"
    )


def test_outside_an_airflow_task_it_refuses():
    with pytest.raises(ToolRefusedError, match="no Airflow task context"):
        call(xcom_tool(), make_context(None), task_id="extract")


def test_the_schema_and_description_name_the_allowed_tasks():
    tool = xcom_tool(task_ids=["extract"])
    assert set(tool.parameters["properties"]) == {"task_id", "key", "map_index"}
    assert tool.parameters["required"] == ["task_id"]
    assert "one of: extract" in (tool.description or "")
    assert "one of: extract" in tool.parameters["properties"]["task_id"]["description"]


@pytest.mark.parametrize(
    ("task_ids", "message"),
    [
        ("extract", "task_ids='extract': give a list"),
        ([], r"task_ids=\[\] allows no task"),
        ([""], "task_ids"),
    ],
)
def test_bad_task_ids_fail_at_construction(task_ids, message):
    with pytest.raises(ValueError, match=message):
        xcom_tool(task_ids=task_ids)
