"""Fixtures of the built-in tools' tests: a real SQLite file behind a real Airflow connection
(``AIRFLOW_CONN_AGENT_DB``). Helpers shared by the tests are in ``helpers.py``.

The connection's hook is the SQLite provider's ``SqliteHook`` (apache-airflow-providers-sqlite,
in the ``test`` extra), found by Airflow from the connection type as in a real task.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from pathlib import Path

import pytest

from tests.unit.tools.helpers import CONN_ID, ROWS


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Path:
    """A database file with ``items(id, name, note)``: 250 rows, notes of 40 characters."""
    path = tmp_path / "agent.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, note TEXT)")
    conn.executemany(
        "INSERT INTO items (id, name, note) VALUES (?, ?, ?)",
        [(i, f"item-{i}", f"note {i} " + "x" * (33 - len(str(i)))) for i in range(1, ROWS + 1)],
    )
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def sqlite_conn(sqlite_db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``sqlite_db`` as the Airflow connection ``agent_db`` (from the environment, as JSON)."""
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps({"conn_type": "sqlite", "host": str(sqlite_db)})
    )
    if importlib.util.find_spec("airflow.providers.sqlite") is None:
        pytest.fail("the SQL tool's tests need apache-airflow-providers-sqlite: pip install -e '.[test]'")
    return sqlite_db
