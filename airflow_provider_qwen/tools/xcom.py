"""``xcom_tool``: the model reads an upstream task's XCom of the same DAG run (optionally only from
the tasks you list), bounded in size."""

from collections.abc import Sequence
from typing import Any

from airflow_provider_qwen.agent.bounds import result_text
from airflow_provider_qwen.agent.tools import Tool, ToolContext, tool
from airflow_provider_qwen.tools._common import ToolRefusedError, check_max_bytes, check_name


def xcom_tool(
    *,
    task_ids: Sequence[str] | None = None,
    max_bytes: int = 20_000,
    name: str = "read_xcom",
    description: str | None = None,
) -> Tool:
    """A tool that returns ``ti.xcom_pull(task_ids=task_id, key=key[, map_indexes=map_index])`` of
    the running task as JSON text. ``task_ids`` lists the tasks it may read (default: any task of
    the DAG run); a call for another task is refused with the allowed list. Only the current DAG run
    is read."""
    check_name(name, "name")
    check_max_bytes(max_bytes)
    allowed = _allowed(task_ids)
    scope = f"one of: {', '.join(allowed)}" if allowed is not None else "any task of this DAG run"
    if description is None:
        description = (
            f"Read the XCom (the result) an upstream task of this DAG run pushed; task_id is {scope}. "
            "Returns the value as JSON text."
        )

    def read_xcom(
        task_id: str, context: ToolContext, key: str = "return_value", map_index: int | None = None
    ) -> str:
        if allowed is not None and task_id not in allowed:
            raise ToolRefusedError(
                f"refused: task_id={task_id!r} may not be read; allowed: {', '.join(allowed)}"
            )
        ti = _task_instance(context)
        kwargs: dict[str, Any] = {"task_ids": task_id, "key": key}
        if map_index is not None:
            kwargs["map_indexes"] = map_index
        value = ti.xcom_pull(**kwargs)
        if value is None:
            where = f"task {task_id!r}" + ("" if map_index is None else f" map_index {map_index}")
            return f"no XCom {key!r} from {where} in this DAG run (or its value is null)"
        return result_text(value, max_bytes)

    read_xcom.__doc__ = (
        "Read an upstream task's XCom.\n\n"
        f":param task_id: the task whose XCom to read ({scope})\n"
        ":param key: the XCom key; return_value is the task's result\n"
        ":param map_index: one mapped task instance; omit for an unmapped task (all values of a mapped one)\n"
    )
    return tool(read_xcom, name=name, description=description)


def _allowed(task_ids: Sequence[str] | None) -> tuple[str, ...] | None:
    """``task_ids`` checked: None (any task) or a non-empty list of non-empty task ids."""
    if task_ids is None:
        return None
    if isinstance(task_ids, str) or not isinstance(task_ids, Sequence | set | frozenset):
        raise ValueError(f"task_ids={task_ids!r}: give a list of task ids (or None for any task)")
    allowed = tuple(sorted(task_ids)) if isinstance(task_ids, set | frozenset) else tuple(task_ids)
    if not allowed:
        raise ValueError("task_ids=[] allows no task; give at least one task id, or None for any task")
    for task_id in allowed:
        check_name(task_id, "task_ids[...]")
    return allowed


def _task_instance(context: ToolContext) -> Any:
    """The running task instance from the tool context; refused outside an Airflow task."""
    airflow_context = context.airflow_context
    ti = None
    if airflow_context is not None:
        getter = getattr(airflow_context, "get", None)
        ti = getter("ti") if callable(getter) else None
    if ti is None or not callable(getattr(ti, "xcom_pull", None)):
        raise ToolRefusedError(
            "refused: no Airflow task context; this tool reads XCom only inside an Airflow task"
        )
    return ti
