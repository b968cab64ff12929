"""sql_tool over a real SQLite file through a real Airflow connection: rows back as JSON, limited in
rows and bytes with a note, every write form refused (and the database unchanged), the database's
own read-only mode behind the check, writes only when asked for and then approved by default."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip(
    "airflow_provider_qwen.agent.tools", reason="agent/tools.py (the tool API) has not landed"
)

from airflow_provider_qwen.tools import ReadOnlyViolation, check_read_only, sql_tool
from airflow_provider_qwen.tools.sql import _hook, _read
from tests.unit.tools.helpers import CONN_ID, ROWS, call, db_state

WRITES = [
    "SELECT 1; DROP TABLE items",
    "SELECT 1;\nDROP TABLE items;",
    "/* */ DELETE FROM items",
    "/* SELECT */ DELETE FROM items",
    "WITH x AS (DELETE FROM items RETURNING *) SELECT * FROM x",
    "WITH x AS (SELECT 1) INSERT INTO items (name) VALUES ('x')",
    "INSERT INTO items (name) VALUES ('x')",
    "insert into items (name) values ('x')",
    "UPDATE items SET name = 'x'",
    "REPLACE INTO items (id, name) VALUES (1, 'x')",
    "DROP TABLE items",
    "CREATE TABLE copy AS SELECT * FROM items",
    "ALTER TABLE items ADD COLUMN y",
    "SELECT * INTO items_copy FROM items",
    "SELECT * FROM items FOR UPDATE",
    "EXPLAIN ANALYZE DELETE FROM items",
    "PRAGMA query_only = OFF",
    "ATTACH DATABASE 'other.db' AS other",
    "VACUUM",
    "GRANT ALL ON items TO someone",
    "SELECT 1 # 2; DROP TABLE items",
    "SELECT 'a\\'; DROP TABLE items; --'",
    "SELECT $$a$$; DROP TABLE items",
    "SELECT $$a; DROP TABLE items$$",
    "/*! DROP TABLE items */ SELECT 1",
    "SELECT 1 --1; DROP TABLE items",
    "",
    "   -- only a comment",
]


@pytest.fixture
def query_tool(sqlite_conn: Path):
    return sql_tool(CONN_ID, max_rows=5)


@pytest.mark.parametrize("query", WRITES)
def test_every_write_form_is_refused_and_the_database_is_unchanged(query_tool, sqlite_conn: Path, query: str):
    before = db_state(sqlite_conn)
    with pytest.raises(ReadOnlyViolation, match=r"^refused: "):
        call(query_tool, query=query)
    assert db_state(sqlite_conn) == before
    assert before[2] == ROWS


def test_the_refusal_says_what_was_found_and_what_is_allowed(query_tool):
    with pytest.raises(ReadOnlyViolation) as refused:
        call(query_tool, query="/* harmless */ DELETE FROM items")
    assert "DELETE is not allowed" in str(refused.value)
    assert "SELECT, WITH ... SELECT, EXPLAIN or VALUES" in str(refused.value)
    with pytest.raises(ReadOnlyViolation, match="exactly one statement and the query has 2"):
        call(query_tool, query="SELECT 1; SELECT 2")


def test_the_database_refuses_a_write_that_got_past_the_check(sqlite_conn: Path):
    """Defence in depth: the session itself is read-only (PRAGMA query_only), not just the check."""
    before = db_state(sqlite_conn)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        _read(_hook(CONN_ID), "DELETE FROM items", 10)
    assert db_state(sqlite_conn) == before


def test_rows_come_back_as_json_with_more_rows_flagged(query_tool):
    result = json.loads(call(query_tool, query="SELECT id, name FROM items ORDER BY id"))
    assert result["columns"] == ["id", "name"]
    assert result["rows"] == [[i, f"item-{i}"] for i in range(1, 6)]
    assert result["row_count"] == 5
    assert result["truncated"] is True
    assert "more rows exist" in result["note"]


def test_a_result_within_the_limits_is_whole(query_tool):
    result = json.loads(call(query_tool, query="SELECT count(*) AS n FROM items WHERE id <= 3"))
    assert result == {"columns": ["n"], "rows": [[3]], "row_count": 1, "truncated": False}


@pytest.mark.parametrize(
    ("query", "rows"),
    [
        ("WITH c AS (SELECT count(*) AS n FROM items) SELECT n FROM c", [[ROWS]]),
        ("VALUES (1, 'a')", [[1, "a"]]),
        ("SELECT 1 UNION ALL SELECT 2", [[1], [2]]),
        (
            "SELECT 'DELETE FROM items; DROP TABLE items' AS s -- ; DROP TABLE items",
            [["DELETE FROM items; DROP TABLE items"]],
        ),
        ("select name from items where id = 7 /* ; delete from items */;", [["item-7"]]),
    ],
)
def test_read_forms_run_and_text_in_strings_or_comments_is_not_code(query_tool, sqlite_conn, query, rows):
    before = db_state(sqlite_conn)
    assert json.loads(call(query_tool, query=query))["rows"] == rows
    assert db_state(sqlite_conn) == before


def test_explain_runs(query_tool):
    result = json.loads(call(query_tool, query="EXPLAIN QUERY PLAN SELECT * FROM items WHERE id = 1"))
    assert result["row_count"] >= 1
    assert check_read_only("EXPLAIN QUERY PLAN SELECT 1") == "EXPLAIN"
    assert check_read_only("(SELECT 1) UNION (SELECT 2)") == "SELECT"  # where the dialect has it


def test_rows_are_cut_to_fit_max_bytes_and_the_json_stays_valid(sqlite_conn):
    small = sql_tool(CONN_ID, max_rows=200, max_bytes=2_000)
    text = call(small, query="SELECT id, note FROM items ORDER BY id")
    assert len(text.encode("utf-8")) <= 2_000
    result = json.loads(text)
    assert 10 < result["row_count"] < 200
    assert result["rows"][0][0] == 1
    assert result["truncated"] is True
    assert "more rows exist" in result["note"]
    assert f"{result['row_count']} of 200 rows shown to stay under 2000 bytes" in result["note"]


def test_one_row_too_big_for_max_bytes_is_cut_with_the_truncation_note(sqlite_conn):
    small = sql_tool(CONN_ID, max_bytes=1_000)
    text = call(small, query="SELECT replace(hex(zeroblob(2500)), '0', 'y') AS big")
    assert len(text.encode("utf-8")) <= 1_000
    assert text.startswith('{"columns": ["big"], "rows": [["yyy')
    assert "[truncated:" in text


def test_the_schema_offers_only_the_query():
    tool = sql_tool(CONN_ID)
    assert tool.name == "sql_query"
    assert set(tool.parameters["properties"]) == {"query"}
    assert tool.parameters["required"] == ["query"]
    assert tool.requires_approval is False
    assert "read-only" in (tool.description or "")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"conn_id": ""}, "conn_id=''"),
        ({"max_rows": 0}, "max_rows=0 is out of range"),
        ({"max_rows": "10"}, "max_rows='10'"),
        ({"max_bytes": 10}, "max_bytes=10 is out of range"),
        ({"name": ""}, "name=''"),
        ({"read_only": "yes"}, "read_only='yes'"),
    ],
)
def test_bad_parameters_fail_at_construction_naming_the_field(kwargs, message):
    arguments = {"conn_id": CONN_ID, **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        sql_tool(arguments.pop("conn_id"), **arguments)


def test_read_write_tool_needs_approval_by_default_and_commits(sqlite_conn: Path):
    writer = sql_tool(CONN_ID, read_only=False, name="sql_write")
    assert writer.requires_approval is True
    assert sql_tool(CONN_ID, read_only=False, requires_approval=False).requires_approval is False
    result = json.loads(call(writer, query="INSERT INTO items (name) VALUES ('new')"))
    assert result["rowcount"] == 1
    assert db_state(sqlite_conn)[2] == ROWS + 1


def test_a_failed_write_is_rolled_back(sqlite_conn: Path):
    writer = sql_tool(CONN_ID, read_only=False)
    with pytest.raises(sqlite3.IntegrityError):
        call(writer, query="INSERT INTO items (id, name) VALUES (1, 'duplicate')")
    assert db_state(sqlite_conn)[2] == ROWS
