"""Shared Airflow fixtures for DAG tests: a throwaway AIRFLOW_HOME with a migrated SQLite DB (once per
session), and ``run_dag(dag)``, which writes the DAG to that DB, runs it with ``dag.test()`` and
returns its task states and XComs.

``dag.test()`` in Airflow 3 only runs DAGs it finds in the metadata DB; ``run_dag`` puts them there,
so a DAG loaded from ``dags/`` (see ``load_dag``) or defined inside a test both work. Tasks run
in-process, so connections come from ``AIRFLOW_CONN_*`` (e.g. the ``qwen_emulator`` fixture).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"


@dataclass
class DagRunResult:
    """What a ``dag.test()`` run left behind: run state, task states and XComs by (task, key, map index)."""

    dag_id: str
    run_id: str
    state: str
    task_states: dict[tuple[str, int], str] = field(default_factory=dict)
    xcoms: dict[tuple[str, str, int], Any] = field(default_factory=dict)
    conf: dict[str, Any] = field(default_factory=dict)

    def xcom(self, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        """One XCom value; KeyError names what exists when it is missing."""
        try:
            return self.xcoms[(task_id, key, map_index)]
        except KeyError:
            raise KeyError(f"no XCom {(task_id, key, map_index)}; present: {sorted(self.xcoms)}") from None

    def mapped(self, task_id: str, key: str = "return_value") -> list[Any]:
        """The XComs of every mapped instance of ``task_id``, in map-index order."""
        found = sorted((m, v) for (t, k, m), v in self.xcoms.items() if t == task_id and k == key and m >= 0)
        return [value for _, value in found]


@pytest.fixture(scope="session")
def airflow_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh AIRFLOW_HOME with a migrated SQLite metadata DB, shared by the whole test session."""
    home = tmp_path_factory.mktemp("airflow_home")
    dags = home / "dags"
    dags.mkdir()
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        from airflow import settings
        from airflow.utils import db

        settings.configure_vars()  # Airflow may already be imported with the default home
        settings.reconfigure_orm()
        db.initdb()
        yield home
        settings.dispose_orm()


def load_dag(file: str | Path, dag_id: str | None = None) -> Any:
    """A DAG from a file (default: the repo's ``dags/``), parsed as the DAG processor would."""
    from airflow.dag_processing.dagbag import DagBag

    path = Path(file) if Path(file).is_absolute() else DAGS_FOLDER / file
    bag = DagBag(dag_folder=str(path))
    if bag.import_errors:
        raise AssertionError(f"{path} does not import: {bag.import_errors}")
    if dag_id is None:
        (dag_id,) = bag.dags
    return bag.dags[dag_id]


def write_dag_to_db(dag: Any) -> None:
    """Serialise ``dag`` into the metadata DB under the dags-folder bundle, as the DAG processor would."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import sync_bag_to_db

    class _Bag:  # the slice of a DagBag that sync_bag_to_db reads
        dags = {dag.dag_id: dag}
        import_errors: dict[str, str] = {}
        dag_warnings: set[Any] = set()
        file_last_changed: dict[str, Any] = {}
        bundle_path = None

    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(_Bag(), "dags-folder", None)


@pytest.fixture
def run_dag(airflow_db: Path) -> Callable[..., DagRunResult]:
    """``run_dag(dag, conf=None, **test_kwargs)``: one ``dag.test()`` run, its task states and XComs."""

    def _run(dag: Any, conf: dict[str, Any] | None = None, **test_kwargs: Any) -> DagRunResult:
        from airflow.models.xcom import XComModel
        from airflow.sdk.bases.xcom import BaseXCom
        from airflow.utils.session import create_session

        write_dag_to_db(dag)
        dag_run = dag.test(run_conf=conf, **test_kwargs)
        result = DagRunResult(dag.dag_id, dag_run.run_id, str(dag_run.state), conf=dict(conf or {}))
        with create_session() as session:
            for ti in dag_run.get_task_instances(session=session):
                result.task_states[(ti.task_id, ti.map_index)] = str(ti.state)
            rows = session.query(XComModel).filter(
                XComModel.dag_id == dag.dag_id, XComModel.run_id == dag_run.run_id
            )
            for row in rows:
                # as a downstream task would read it (XComModel's own decoder turns "0.5" into 0.5)
                result.xcoms[(row.task_id, row.key, row.map_index)] = BaseXCom.deserialize_value(row)
        return result

    return _run
