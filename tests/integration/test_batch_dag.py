"""The example DAG dags/batch_summarize.py end to end: dag.test() against the emulator."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.conftest import DAGS_FOLDER, load_dag

DOCUMENTS = sorted(p.name for p in (DAGS_FOLDER / "documents").iterdir())


@pytest.fixture
def qwen_pool(airflow_db: Path):
    """The pool the example DAG's shards run in (in a deployment: ``airflow pools set qwen_api 4 ...``)."""
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session

    with create_session() as session:
        if not session.query(Pool).filter(Pool.pool == "qwen_api").first():
            session.add(Pool(pool="qwen_api", slots=2, description="Qwen API", include_deferred=False))


def test_batch_summarize_dag_shards_summarises_and_collects(
    run_dag, qwen_emulator, qwen_pool, tmp_path, monkeypatch
):
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", f"file://{tmp_path}")
    dag = load_dag("batch_summarize.py")
    result = run_dag(dag, conf={"shard_size": 5})
    assert result.state == "success", result.task_states

    shards = result.mapped("summarize")
    assert len(shards) == 3  # 12 documents in shards of 5
    reports = result.mapped("summarize", "qwen_batch")
    assert sum(r["succeeded"] for r in reports) == 12
    assert sum(r["chunked"] for r in reports) == 1  # the long storage review went through map-reduce

    collected = result.xcom("collect")
    assert sorted(collected["summaries"]) == DOCUMENTS
    assert all(isinstance(s, str) and s for s in collected["summaries"].values())
    assert collected["failed"] == []

    credits, usd = qwen_emulator.total_charged()
    assert Decimal(collected["usd_spent"]) == usd  # every request of every shard, exactly
    assert sum(r["credits_used"] for r in result.mapped("summarize", "qwen_cost")) == credits

    prompts = [r.body["messages"][-1]["content"] for r in qwen_emulator.chat_requests()]
    template_doc = [p for p in prompts if "Title: 05-template-text.txt" in p]
    assert len(template_doc) == 1
    assert "typed {{ 7*7 }} as a joke" in template_doc[0]  # document text is data, never a template
    assert "{% raw %}" in template_doc[0]
    assert sum("(this is part " in p for p in prompts) >= 2
