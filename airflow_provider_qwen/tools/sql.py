"""``sql_tool``: the model queries a database through an Airflow connection (any ``DbApiHook``).

Read-only is enforced twice: ``sql_guard.check_read_only`` refuses anything but one SELECT /
WITH ... SELECT / EXPLAIN / VALUES statement before it reaches the database, and the query runs in
a read-only session where the backend has one (SQLite ``PRAGMA query_only``, a PostgreSQL or MySQL
``READ ONLY`` transaction), always rolled back. What goes back to the model is JSON, at most
``max_rows`` rows and ``max_bytes`` bytes, saying when more exists.
"""

import contextlib
import logging
import time
from typing import Any

from airflow_provider_qwen.agent.tools import Tool, ToolContext, tool
from airflow_provider_qwen.tools._common import (
    ToolRefusedError,
    cell,
    check_int,
    check_max_bytes,
    check_name,
    fit_json,
)
from airflow_provider_qwen.tools.sql_guard import check_read_only

log = logging.getLogger(__name__)

_POSTGRES_DRIVERS = frozenset({"psycopg2", "psycopg", "pg8000"})
_MYSQL_DRIVERS = frozenset({"MySQLdb", "pymysql", "mysql"})


def sql_tool(
    conn_id: str,
    *,
    read_only: bool = True,
    max_rows: int = 100,
    max_bytes: int = 20_000,
    name: str = "sql_query",
    description: str | None = None,
    requires_approval: bool | None = None,
    timeout: float | None = None,
    query_timeout: float | None = 60.0,
) -> Tool:
    """A tool that runs the model's SQL on the Airflow connection ``conn_id`` and returns JSON
    ``{"columns", "rows", "row_count", "truncated"[, "note"]}``.

    ``read_only=False`` lets the model write (any statement, committed): dangerous; it makes
    ``requires_approval`` default to True so a person sees every statement first. Say what the
    tables are in ``description`` (the model sees it), or let it look them up with a query.
    No connection is looked up here: a DAG file stays fast to parse.

    ``query_timeout`` (seconds) stops a statement on the database itself (SQLite: interrupted;
    PostgreSQL: ``statement_timeout``): a timed-out tool is abandoned, not killed, so without it a
    runaway query (an endless recursive CTE) would go on in its thread. None: no limit.
    """
    check_name(conn_id, "conn_id")
    check_name(name, "name")
    check_int(max_rows, "max_rows", 1)
    check_max_bytes(max_bytes)
    if not isinstance(read_only, bool):
        raise ValueError(f"read_only={read_only!r}: give True or False")
    approval = (not read_only) if requires_approval is None else requires_approval
    if query_timeout is not None and (
        isinstance(query_timeout, bool) or not isinstance(query_timeout, int | float) or not query_timeout > 0
    ):
        raise ValueError(f"query_timeout={query_timeout!r}: give a number of seconds above 0, or None")
    if description is None:
        description = (
            f"Run one read-only SQL query (SELECT, WITH ... SELECT, EXPLAIN or VALUES) on the database of "
            f"the Airflow connection {conn_id!r}. Returns JSON: columns, rows (at most {max_rows}) and "
            "'truncated' (true when more rows exist or the rows were cut to fit)."
            if read_only
            else f"Run one SQL statement on the database of the Airflow connection {conn_id!r} (it may "
            f"write; changes are committed). Returns JSON: columns, rows (at most {max_rows}), "
            "'truncated', and 'rowcount' for statements without rows."
        )

    def run_sql(query: str, context: ToolContext) -> str:
        """Run one SQL statement.

        :param query: one SQL statement in the database's dialect
        """
        if read_only:
            check_read_only(query)
        elif not isinstance(query, str) or not query.strip():
            raise ToolRefusedError("refused: the query is empty")
        log.info("%s on %s (turn %s, call %s): %s", name, conn_id, context.turn, context.call_id, query[:200])
        hook = _hook(conn_id)
        if read_only:
            columns, rows, more, rowcount = _read(hook, query, max_rows, query_timeout)
        else:
            columns, rows, more, rowcount = _write(hook, query, max_rows, query_timeout)
        return _result(columns, rows, more, rowcount, max_rows, max_bytes)

    return tool(run_sql, name=name, description=description, requires_approval=approval, timeout=timeout)


def _hook(conn_id: str) -> Any:
    """The DB-API hook of the connection (``BaseHook.get_connection(conn_id).get_hook()``)."""
    from airflow.sdk import BaseHook

    connection = BaseHook.get_connection(conn_id)
    hook = connection.get_hook()
    try:
        from airflow.providers.common.sql.hooks.sql import DbApiHook
    except ImportError:  # no common-sql on this worker: judge by the DbApiHook methods
        is_dbapi = all(callable(getattr(hook, m, None)) for m in ("get_conn", "get_records", "run"))
    else:
        is_dbapi = isinstance(hook, DbApiHook)
    if not is_dbapi:
        raise ToolRefusedError(
            f"connection {conn_id!r} (type {connection.conn_type!r}) has no DB-API hook: "
            f"{type(hook).__name__} cannot run SQL"
        )
    return hook


def _driver(conn: Any) -> str:
    """The top-level module of the DB-API connection's class: sqlite3, psycopg2, MySQLdb, ..."""
    return type(conn).__module__.split(".")[0]


def _limit(conn: Any, cursor: Any, seconds: float | None) -> None:
    """Make the database stop a statement that runs past ``seconds`` (where the backend can)."""
    if seconds is None:
        return
    driver = _driver(conn)
    if driver == "sqlite3" and callable(getattr(conn, "set_progress_handler", None)):
        deadline = time.monotonic() + seconds
        conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
    elif driver in _POSTGRES_DRIVERS:
        cursor.execute(f"SET LOCAL statement_timeout = {max(1, int(seconds * 1000))}")


def _read(
    hook: Any, query: str, max_rows: int, seconds: float | None = None
) -> tuple[list[str], list[Any], bool, int | None]:
    """Run ``query`` in a read-only session where the backend has one; always rolled back."""
    conn = hook.get_conn()
    try:
        driver = _driver(conn)
        cursor = conn.cursor()
        try:
            if driver == "sqlite3":
                cursor.execute("PRAGMA query_only = ON")
            elif driver in _POSTGRES_DRIVERS:
                _no_autocommit(hook, conn)
                # In autocommit mode SET TRANSACTION would not hold: open the transaction ourselves
                # (closing the connection then ends it, rolled back).
                autocommit = getattr(conn, "autocommit", False) is True
                cursor.execute("BEGIN READ ONLY" if autocommit else "SET TRANSACTION READ ONLY")
            elif driver in _MYSQL_DRIVERS:
                _no_autocommit(hook, conn)
                cursor.execute("START TRANSACTION READ ONLY")
            else:
                _no_autocommit(hook, conn)
            _limit(conn, cursor, seconds)
            cursor.execute(query)
            return _fetch(cursor, max_rows)
        finally:
            with contextlib.suppress(Exception):
                cursor.close()
    finally:
        with contextlib.suppress(Exception):
            conn.rollback()
        with contextlib.suppress(Exception):
            conn.close()


def _write(
    hook: Any, query: str, max_rows: int, seconds: float | None = None
) -> tuple[list[str], list[Any], bool, int | None]:
    """Run ``query`` and commit it (``read_only=False``); rolled back if it fails."""
    conn = hook.get_conn()
    try:
        cursor = conn.cursor()
        try:
            _limit(conn, cursor, seconds)
            cursor.execute(query)
            fetched = _fetch(cursor, max_rows)
        finally:
            with contextlib.suppress(Exception):
                cursor.close()
        conn.commit()
        return fetched
    except BaseException:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def _no_autocommit(hook: Any, conn: Any) -> None:
    """Turn autocommit off so the read-only transaction holds (and the rollback undoes anything)."""
    with contextlib.suppress(Exception):
        if getattr(conn, "autocommit", False):
            hook.set_autocommit(conn, False)


def _fetch(cursor: Any, max_rows: int) -> tuple[list[str], list[Any], bool, int | None]:
    """(columns, at most ``max_rows`` rows, whether more exist, rowcount of a statement without rows)."""
    if not cursor.description:
        rowcount = getattr(cursor, "rowcount", None)
        return [], [], False, rowcount if isinstance(rowcount, int) and rowcount >= 0 else None
    columns = [str(column[0]) for column in cursor.description]
    rows = list(cursor.fetchmany(max_rows + 1))
    return columns, rows[:max_rows], len(rows) > max_rows, None


def _result(
    columns: list[str], rows: list[Any], more: bool, rowcount: int | None, max_rows: int, max_bytes: int
) -> str:
    """The JSON sent to the model: as many rows as fit ``max_bytes``, with a note when cut."""
    values = [[cell(value) for value in row] for row in rows]

    def render(shown: int, cut: bool) -> dict[str, Any]:
        document: dict[str, Any] = {
            "columns": columns,
            "rows": values[:shown],
            "row_count": shown,
            "truncated": more or cut,
        }
        if rowcount is not None:
            document["rowcount"] = rowcount
        notes = []
        if more:
            notes.append(f"more rows exist: only the first {max_rows} were fetched")
        if cut:
            notes.append(f"{shown} of {len(values)} rows shown to stay under {max_bytes} bytes")
        if notes:
            document["note"] = (
                "; ".join(notes) + "; narrow the query (WHERE, LIMIT, fewer columns) to see more"
            )
        return document

    return fit_json(render, len(values), max_bytes)
