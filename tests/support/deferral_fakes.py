"""Driving a deferrable or reviewed operator as Airflow does, without a deployment: the task defers,
the trigger runs (its kwargs and event round-tripped through Airflow's serde), and a fresh copy of
the operator as written, rendered again, resumes."""

from __future__ import annotations

import asyncio
import copy
from contextlib import asynccontextmanager
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred
from airflow.sdk.serde import deserialize, serialize

from tests.support.cost_fakes import FakeStateStore
from tests.support.operator_fakes import AsyncFakeClient, FakeClient, FakeHook, FakeTI


@pytest.fixture
def deferral_storage(tmp_path: Any, monkeypatch: Any) -> None:
    """Task storage (journal, send markers) in ``tmp_path``; a trigger's event handed back at once."""
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__QWEN__RESUME_GUARD_SECONDS", "0")


class DeferTI(FakeTI):
    """A task instance with the ids the storage folder (journal, send markers) is keyed by."""

    id = "0190aaaa-0000-7000-8000-000000000000"
    dag_id, run_id, task_id, map_index = "dag", "manual__1", "chat", -1


class TriggerClient(AsyncFakeClient):
    """The scripted client as the trigger uses it (it scrubs its messages with ``_redact``)."""

    @staticmethod
    def _redact(text: str) -> str:
        return text


class TriggerHook(FakeHook):
    """What the trigger's ``QwenHook(qwen_conn_id=...)`` becomes: the scripted client, async."""

    @asynccontextmanager
    async def async_client(self, **_: Any):
        yield TriggerClient(self.client)


class PausedTask:
    """One task instance of ``operator`` across its pauses: the journal (task state store) is shared,
    each run is a fresh copy of the operator as written, rendered again."""

    def __init__(self, operator: Any, params: dict[str, Any] | None = None) -> None:
        self.written = copy.deepcopy(operator)
        self.store: FakeStateStore | None = FakeStateStore()
        self.params = params or {}
        self.ti = DeferTI()
        self.next_kwargs: dict[str, Any] = {}  # the last deferral's kwargs, as Airflow keeps them

    def context(self) -> dict[str, Any]:
        """A new try's context (a new task instance: its XComs start empty)."""
        self.ti = DeferTI()
        return {
            "ti": self.ti,
            "task_instance": self.ti,
            "params": dict(self.params),
            "run_id": "manual__1",
            "task_state_store": self.store,
        }

    def fresh(self, context: dict[str, Any]) -> Any:
        operator = copy.deepcopy(self.written)
        operator.render_template_fields(context)
        return operator

    def execute(self) -> Any:
        context = self.context()
        return self._run(lambda: self.fresh(context).execute(context))

    def _run(self, call: Any) -> Any:
        try:
            return call()
        except TaskDeferred as deferred:
            self.next_kwargs = dict(deferred.kwargs or {})
            raise

    def defer(self) -> TaskDeferred:
        with pytest.raises(TaskDeferred) as deferred:
            self.execute()
        return deferred.value

    def resume(self, event: dict[str, Any], method: str = "execute_complete", **kwargs: Any) -> Any:
        """Call ``method`` with the trigger's ``event`` (through serde) and the last deferral's kwargs
        (for ``execute_complete``), as the task runner does."""
        context = self.context()
        event = deserialize(serialize(event))
        if method == "execute_complete":
            kwargs = {**deserialize(serialize(self.next_kwargs)), **kwargs}
        return self._run(lambda: getattr(self.fresh(context), method)(context, event, **kwargs))

    def resume_execution(self, method: str, kwargs: dict[str, Any]) -> Any:
        """Resume through ``resume_execution`` with ``next_kwargs`` (through serde)."""
        context = self.context()
        kwargs = deserialize(serialize(kwargs))
        return self._run(lambda: self.fresh(context).resume_execution(method, kwargs, context))

    @property
    def cost(self) -> dict[str, Any]:
        return self.ti.pushed["qwen_cost"]


def fire(trigger: Any, mocker: Any, client: FakeClient, hook: Any = None) -> dict[str, Any]:
    """Run the trigger on the scripted client (or ``hook``) as the triggerer would; its event's payload."""
    mocker.patch(
        "airflow_provider_qwen.hooks.qwen.QwenHook",
        return_value=hook if hook is not None else TriggerHook(client),
    )
    return run_trigger(trigger)


def run_trigger(trigger: Any) -> dict[str, Any]:
    """Run the trigger as the triggerer would, its kwargs and its event through serde; the payload."""
    _path, kwargs = trigger.serialize()
    again = type(trigger)(**deserialize(serialize(kwargs)))

    async def first() -> Any:
        async for event in again.run():
            return event
        return None

    return deserialize(serialize(asyncio.run(first()).payload))


def decorated_task(tmp_path: Any, decorator: str, returned: Any, **kwargs: Any) -> tuple[Any, list[int]]:
    """The operator of a ``@task.<decorator>`` task whose function returns ``returned``, and a list
    that grows by one each time the function runs."""
    import pendulum
    from airflow.sdk import DAG, task

    calls: list[int] = []
    with DAG("cross", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
        dag.fileloc = str(tmp_path / "cross.py")

        @getattr(task, decorator)(task_id="chat", max_completion_tokens=1000, **kwargs)
        def ask() -> Any:
            calls.append(1)
            return returned

        ask()
    return dag.get_task("chat"), calls


def approve(**params: Any) -> dict[str, Any]:
    """The event of a person choosing Approve on the human-in-the-loop page."""
    return {"chosen_options": ["Approve"], "params_input": params, "responded_by_user": {"name": "ana"}}
