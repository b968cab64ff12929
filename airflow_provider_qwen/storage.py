"""Where the provider keeps files that must outlive one task try: batch checkpoints, large outputs,
the cost journal.

``storage_base()`` is ``[qwen] storage_base`` (env ``AIRFLOW__QWEN__STORAGE_BASE``): any
ObjectStoragePath URL, e.g. ``s3://bucket/qwen`` (with ``[qwen] storage_conn_id`` or
``s3://my_conn@bucket/qwen``), so every worker sees the same files. Without it, a local folder
``{AIRFLOW_HOME}/qwen`` (fine for one machine; use object storage across workers).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_qwen.cost.journal import CostJournal

log = logging.getLogger(__name__)

CONFIG_SECTION = "qwen"
_UNSAFE = re.compile(r"[^A-Za-z0-9._:+=@,~-]")


def config_value(key: str) -> str | None:
    """``[qwen] <key>`` from the Airflow config (``AIRFLOW__QWEN__<KEY>`` wins, read at call time)."""
    from airflow.sdk import conf

    value = conf.get(CONFIG_SECTION, key, fallback=None)
    return value.strip() if value and value.strip() else None


def airflow_home() -> str:
    return os.path.expanduser(os.environ.get("AIRFLOW_HOME") or "~/airflow")


def storage_base() -> ObjectStoragePath:
    """The root of the provider's storage: ``[qwen] storage_base``, default ``file://{AIRFLOW_HOME}/qwen``."""
    from airflow.sdk import ObjectStoragePath

    url = config_value("storage_base") or f"file://{os.path.join(airflow_home(), 'qwen')}"
    if "://" not in url:  # a plain local path
        url = f"file://{os.path.abspath(os.path.expanduser(url))}"
    return ObjectStoragePath(url, conn_id=config_value("storage_conn_id"))


def path_part(value: Any) -> str:
    """One path segment from an id (run ids may hold characters object stores dislike)."""
    text = str(value)
    return _UNSAFE.sub("_", text) or "_"


def task_ids(context: Mapping[str, Any]) -> tuple[str, str, str, int]:
    """(dag_id, run_id, task_id, map_index) of the running task instance."""
    ti = context["ti"]
    dag_id = getattr(ti, "dag_id", None) or context["dag"].dag_id
    run_id = getattr(ti, "run_id", None) or context["run_id"]
    task_id = getattr(ti, "task_id", None) or context["task"].task_id
    map_index = getattr(ti, "map_index", None)
    return str(dag_id), str(run_id), str(task_id), -1 if map_index is None else int(map_index)


def task_folder(context: Mapping[str, Any]) -> ObjectStoragePath:
    """``<base>/<dag_id>/<run_id>/<task_id>/<map_index>``, created: the same folder for every try."""
    dag_id, run_id, task_id, map_index = task_ids(context)
    folder = storage_base() / path_part(dag_id) / path_part(run_id) / path_part(task_id) / str(map_index)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def local_path(path: ObjectStoragePath) -> str | None:
    """The OS path of ``path`` when it is on the local file system (fast paths use ``os`` directly)."""
    if (path.protocol or "file") in ("file", "local"):
        return path.path
    return None


def cost_journal(context: Mapping[str, Any] | None) -> CostJournal:
    """The cost journal of the task instance running in ``context``: in Airflow's task state store
    when the context has one (it follows the task across workers), else in the task's storage
    folder; disabled outside a real task run. A folder that cannot be made raises ``JournalError``."""
    from airflow_provider_qwen.cost.journal import (
        JOURNAL_FOLDER,
        CostJournal,
        FolderStore,
        JournalError,
        StateStore,
    )

    context = context or {}
    ti = context.get("ti")
    if not all(isinstance(getattr(ti, name, None), str) for name in ("dag_id", "run_id", "task_id")):
        return CostJournal(None)
    accessor = context.get("task_state_store")
    if accessor is not None and callable(getattr(accessor, "get", None)):
        return CostJournal(StateStore(accessor))
    try:
        folder = task_folder(context) / JOURNAL_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
    except Exception as exc:
        raise JournalError(
            f"the Qwen cost journal folder under [qwen] storage_base cannot be made: {exc}"
        ) from None
    return CostJournal(FolderStore(folder))


def agent_journal(context: Mapping[str, Any]) -> Any:
    """The agent journal of the task instance running in ``context``: in Airflow's task state store
    when the context has one, else as files in the task's storage folder (``agent/``); a
    ``MemoryJournal`` outside a real task run (nothing to resume)."""
    from airflow_provider_qwen.agent.journal import MemoryJournal
    from airflow_provider_qwen.agent.stores import FolderJournal, JournalStoreError, StateStoreJournal

    ti = context.get("ti")
    if not all(isinstance(getattr(ti, name, None), str) for name in ("dag_id", "run_id", "task_id")):
        return MemoryJournal()
    accessor = context.get("task_state_store")
    if accessor is not None and callable(getattr(accessor, "get", None)):
        return StateStoreJournal(accessor)
    try:
        folder = task_folder(context) / "agent"
        folder.mkdir(parents=True, exist_ok=True)
    except Exception as exc:
        raise JournalStoreError(
            f"the agent journal folder under [qwen] storage_base cannot be made: {exc}"
        ) from None
    return FolderJournal(folder)
