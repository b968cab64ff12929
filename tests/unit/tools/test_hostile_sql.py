"""The read-only check against functions that write, or reach past the read-only session, from
inside one SELECT (on PostgreSQL ``dblink_exec`` writes through a connection of its own, outside
the tool's READ ONLY transaction)."""

from __future__ import annotations

import pytest

from airflow_provider_qwen.tools.sql_guard import ReadOnlyViolation, check_read_only


@pytest.mark.parametrize(
    "query",
    [
        "SELECT dblink_exec('dbname=prod', 'DELETE FROM accounts')",
        "SELECT * FROM dblink('dbname=prod', 'DELETE FROM t RETURNING 1') AS t(a int)",
        "SELECT \"dblink_exec\"('x', 'y')",
        "SELECT public.DBLINK_EXEC ('x', 'y')",
        "SELECT lo_export(16409, '/tmp/x')",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
        "SELECT pg_catalog.set_config('default_transaction_read_only', 'off', false)",
        "SELECT nextval('invoice_numbers')",
        "SELECT load_extension('/tmp/evil.so')",
        "SELECT writefile('/tmp/x', 'y')",
        "SELECT `load_file`('/etc/passwd')",
        "SELECT count(*) FROM t WHERE x IN (SELECT dblink_exec('a', 'b'))",
    ],
)
def test_a_function_that_writes_or_reaches_out_is_refused(query):
    with pytest.raises(ReadOnlyViolation, match="function"):
        check_read_only(query)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT edit, nextval FROM changes",  # columns named like the functions
        "SELECT 'dblink_exec(x)' AS text",
        "SELECT count(*), max(amount) FROM sales",
    ],
)
def test_names_that_are_not_those_calls_still_run(query):
    assert check_read_only(query) == "SELECT"


RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


def test_a_runaway_query_is_stopped_by_the_database_not_left_running(sqlite_conn):
    import sqlite3
    import time

    from airflow_provider_qwen.tools import sql_tool
    from tests.unit.tools.helpers import CONN_ID, call

    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="interrupt"):
        call(sql_tool(CONN_ID, query_timeout=0.3), query=RUNAWAY)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("value", [0, -1, "60", True])
def test_a_bad_query_timeout_fails_when_the_dag_is_parsed(value):
    from airflow_provider_qwen.tools import sql_tool

    with pytest.raises(ValueError, match="query_timeout"):
        sql_tool("db", query_timeout=value)
