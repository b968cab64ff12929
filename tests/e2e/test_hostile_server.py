"""A server that echoes the API key back (malformed HTTP, a JSON error, a proxy's 407 page), on a
real deployment: the tasks fail, and not one of their log lines shows the key."""

from __future__ import annotations

import pytest

from airflow_provider_qwen.testing.faults import Fault
from tests.e2e.conftest import Deployment
from tests.e2e.test_deployment import KEY_FRAGMENTS, task_instances

pytestmark = pytest.mark.e2e

DAG_ID = "qwen_hostile_server"
# the client retries a broken connection twice: each try of the first task meets the echo
ECHOES = [*[Fault.malformed_http()] * 3, Fault.echo_headers(), Fault.proxy_echo()]


def test_echoed_keys_never_reach_a_task_log(deployment: Deployment) -> None:
    assert deployment.api is not None
    deployment.emulator.add_faults(*ECHOES, *ECHOES)  # sync tasks first, then the streamed ones
    run = deployment.run_test_dag(DAG_ID)

    assert deployment.emulator.pending_faults == []  # every echo was served
    tis = task_instances(deployment, run)
    assert sorted(t["state"] for t in tis) == ["failed"] * 6
    occurrences = 0
    for ti in tis:
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/{ti['task_id']}/logs/1"
        log = deployment.api.get(path, params={"full_content": True}, headers={"Accept": "application/json"})
        assert log.status_code == 200, log.text[:300]
        assert "Task failed" in log.text or "error" in log.text.lower()
        occurrences += sum(log.text.count(fragment) for fragment in KEY_FRAGMENTS)
    print(f"hostile server: {len(tis)} failed tasks, key occurrences in their logs: {occurrences}")
    assert occurrences == 0
