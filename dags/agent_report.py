"""An agent in a pipeline: Qwen answers questions about a small sales database and writes a report.

`QwenAgentOperator` gives the model a read-only SQL tool over the `qwen_agent_report_db`
connection (any Airflow SQL connection; here SQLite): the model writes the queries, the tool runs
them read only (a write is refused and the refusal reported to the model), with rows and bytes
bounded, and the model answers from what came back. Every turn is metered (`max_cost_usd` holds
across turns, `qwen_cost` counts each) and journaled: a retry after a crash resumes at the last
finished turn without paying or querying again. `qwen_agent` in XCom has the transcript summary.

Set the connection first, e.g. `AIRFLOW_CONN_QWEN_AGENT_REPORT_DB='{"conn_type": "sqlite", "host":
"/tmp/agent_report.db"}'`
(`make demo` does); `load_sales` (re)creates the demo table there.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from airflow_provider_qwen.operators import QwenAgentOperator
from airflow_provider_qwen.retry_policy import QwenRetryPolicy
from airflow_provider_qwen.tools import sql_tool

DB_CONN_ID = "qwen_agent_report_db"

SALES = [
    # (region, product, quarter, units, revenue_usd)
    ("EMEA", "Analytics Pro", "2026-Q3", 120, 35880.0),
    ("EMEA", "Analytics Lite", "2026-Q3", 310, 18290.0),
    ("AMER", "Analytics Pro", "2026-Q3", 205, 61295.0),
    ("AMER", "Analytics Lite", "2026-Q3", 150, 8850.0),
    ("APAC", "Analytics Pro", "2026-Q3", 64, 19136.0),
    ("APAC", "Analytics Lite", "2026-Q3", 290, 17110.0),
    ("EMEA", "Analytics Pro", "2026-Q2", 98, 29302.0),
    ("AMER", "Analytics Pro", "2026-Q2", 221, 66079.0),
    ("APAC", "Analytics Pro", "2026-Q2", 51, 15249.0),
]

PROMPT = """\
You are a sales analyst. Write a short report (at most 8 sentences) for the run of
{{ dag_run.run_after | ds }}: which region grew Analytics Pro revenue most from 2026-Q2 to 2026-Q3,
and the total 2026-Q3 revenue per region. Call sql_query with {"query": "SELECT region, product,
quarter, SUM(revenue_usd) AS revenue_usd FROM sales GROUP BY region, product, quarter ORDER BY
region, product, quarter"} to read the SQLite table sales(region, product, quarter, units,
revenue_usd), and query it again as you need. Only report figures the tool returned.
"""


@dag(
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["qwen-example"],
    default_args={"retries": 2, "retry_policy": QwenRetryPolicy()},  # see docs/retry-policy.md
    doc_md=__doc__,
)
def qwen_agent_report():
    @task
    def load_sales() -> int:
        """(Re)create the demo table through the connection (in real life: your warehouse)."""
        from airflow.sdk import BaseHook

        hook = BaseHook.get_connection(DB_CONN_ID).get_hook()
        hook.run(
            [
                "DROP TABLE IF EXISTS sales",
                "CREATE TABLE sales (region TEXT, product TEXT, quarter TEXT, units INT, revenue_usd REAL)",
            ]
        )
        columns = ["region", "product", "quarter", "units", "revenue_usd"]
        hook.insert_rows("sales", SALES, target_fields=columns)
        return len(SALES)

    report = QwenAgentOperator(
        task_id="report",
        prompt=PROMPT,
        tools=[sql_tool(DB_CONN_ID, max_rows=50)],
        max_turns=6,
        max_completion_tokens=4_000,
        max_cost_usd=0.50,
        retries=1,
    )

    load_sales() >> report


qwen_agent_report()
