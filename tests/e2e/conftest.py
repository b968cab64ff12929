"""A real Airflow deployment for the end-to-end tests, started once per session.

api-server + scheduler + dag-processor + triggerer (LocalExecutor, SQLite) run as separate
processes in a throwaway AIRFLOW_HOME on free loopback ports, with a copy of the repo's ``dags/``
and the AI/ML API emulator as the ``qwen_default`` connection (env ``AIRFLOW_CONN_QWEN_DEFAULT``).
The API is used like a user would: log in with a SimpleAuthManager user, ``POST /auth/token``,
then the REST API v2. Teardown stops every process the deployment started, task processes
included, whatever the tests did.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS_SOURCE = REPO / "dags"
TEST_DAGS = Path(__file__).resolve().parent / "dags"
ARTIFACTS = REPO / "test-artifacts"
EXAMPLE_TAG = "qwen-example"
API_KEY = "sk-e2e-SECRET-4242"  # distinctive: any trace of it in a log is a leak
USERNAME = "admin"
PASSWORD = "e2e-admin-password"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
STARTUP_TIMEOUT = 180.0
TERMINAL_RUN_STATES = {"success", "failed"}
# a component gets SIGTERM if the test process dies without its teardown (e.g. SIGKILL)
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a component's output, for failure messages."""
    if not path.exists():
        return f"<{path} missing>"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _process_tree(pids: list[int]) -> list[Any]:
    """The processes and all their descendants that still exist."""
    import psutil

    found = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(pid)
            found += [parent, *parent.children(recursive=True)]
    return found


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def stop_processes(processes: list[subprocess.Popen[bytes]], grace: float = 15.0) -> None:
    """Stop the components and all they spawned: tasks run in process groups of their own."""
    import psutil

    tree = _process_tree([p.pid for p in processes])
    for proc in processes:
        _signal_group(proc.pid, signal.SIGTERM)  # each component leads its own session
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.terminate()
    _, alive = psutil.wait_procs(tree, timeout=grace)
    for proc in processes:
        _signal_group(proc.pid, signal.SIGKILL)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(alive, timeout=grace)
    for proc in processes:
        proc.wait(timeout=grace)


@dataclass
class Deployment:
    """A running Airflow: its home, API URL, an authenticated REST client and the emulator behind it."""

    home: Path
    url: str
    emulator: Any
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    api: httpx.Client | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def component_logs(self) -> Path:
        return self.home / "components"

    def check_alive(self) -> None:
        """Fail with the component's last output if one of them died."""
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                output = tail(self.component_logs / f"{name}.log")
                raise AssertionError(f"airflow {name} exited with {proc.returncode}:\n{output}")

    def restart(self, component: str) -> None:
        """Stop one component (SIGTERM, then SIGKILL after a grace) and start it again, same env."""
        stop_processes([self.processes[component]])
        self.processes[component] = _start(component, [component], self.env, self.component_logs)

    def wait_until_the_scheduler_saw_the_park(self, run_id: str) -> None:
        """An answer to a task awaiting input given before the scheduler drained the parking process's
        exit makes Airflow 3.3 fail the resumed try ("state changed externally", apache/airflow#72716;
        it took 6 s on this loaded machine): a person is slower, a test waits for the scheduler's line."""
        log = self.component_logs / "scheduler.log"
        deadline = time.monotonic() + 60
        while not any(
            "TaskInstance Finished" in line and run_id in line and "state=awaiting_input" in line
            for line in log.read_text(errors="replace").splitlines()
        ):
            assert time.monotonic() < deadline, "the scheduler never saw the task park"
            time.sleep(0.5)
        time.sleep(1.0)

    def get(self, path: str, **params: Any) -> Any:
        """GET /api/v2<path> as JSON, asserting success."""
        assert self.api is not None
        response = self.api.get(f"/api/v2{path}", params=params)
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text[:500]}"
        return response.json()

    def run_test_dag(self, dag_id: str, timeout: float = 300.0) -> dict[str, Any]:
        """Trigger one run of a test DAG (tests/e2e/dags) and return it once finished."""
        return self.wait_for_run(dag_id, self.trigger_test_dag(dag_id), timeout=timeout)

    def trigger_test_dag(self, dag_id: str) -> str:
        """Wait for a test DAG to be parsed, unpause it, trigger one run; returns its run id."""
        assert self.api is not None
        deadline = time.monotonic() + 90
        while self.api.get(f"/api/v2/dags/{dag_id}").status_code != 200:
            assert time.monotonic() < deadline, f"{dag_id} was not parsed"
            time.sleep(1.0)
        assert self.api.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).status_code == 200
        response = self.api.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None})
        assert response.status_code == 200, response.text
        return str(response.json()["dag_run_id"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 240.0) -> dict[str, Any]:
        """Poll a DAG run until it ends; returns the run as the API shows it."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.get(f"/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in TERMINAL_RUN_STATES:
                return run
            self.check_alive()
            if time.monotonic() > deadline:
                states = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
                raise AssertionError(
                    f"{dag_id}/{run_id} still {run['state']} after {timeout:.0f}s: "
                    + ", ".join(f"{t['task_id']}[{t['map_index']}]={t['state']}" for t in states)
                )
            time.sleep(1.0)


def _environment(home: Path, port: int, emulator: Any) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "AIMLAPI", "QWEN")) and k not in {"PYTEST_CURRENT_TEST"}
    }
    url = f"http://127.0.0.1:{port}"
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "5",  # a retried task need not hold the suite 5 min
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
            "AIRFLOW_CONN_QWEN_DEFAULT": emulator.conn_json(),
            "AIRFLOW_CONN_QWEN_AGENT_REPORT_DB": json.dumps(
                {"conn_type": "sqlite", "host": str(home / "agent.db")}
            ),
            # every task's OpenLineage events, one JSON line each (tests/e2e/test_lineage.py reads them)
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                {"type": "file", "log_file_path": str(home / "openlineage.jsonl"), "append": True}
            ),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "qwen-e2e",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _start(name: str, args: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    out = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - the process owns it until teardown
    try:
        return subprocess.Popen(
            [*DIE_WITH_PARENT, sys.executable, "-m", "airflow", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        out.close()


def _login(url: str) -> httpx.Client:
    """A REST client holding a JWT from ``POST /auth/token``, as a script of a user would get one."""
    response = httpx.post(f"{url}/auth/token", json={"username": USERNAME, "password": PASSWORD}, timeout=30)
    assert response.status_code == 201, f"POST /auth/token: {response.status_code} {response.text[:300]}"
    token = response.json()["access_token"]
    return httpx.Client(
        base_url=url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
        transport=_SqliteBusyRetry(),
    )


class _SqliteBusyRetry(httpx.HTTPTransport):
    """Retries a request that hit SQLite's single-writer lock (the API answers 500 "Database error"
    after its 5 s busy timeout while task processes write): a property of the test deployment's
    SQLite, not of what the tests check."""

    attempts = 5

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for _ in range(self.attempts - 1):
            response = super().handle_request(request)
            if response.status_code != 500:
                return response
            body = response.read()
            response.close()
            if b"Database error" not in body:
                return httpx.Response(500, headers=response.headers, content=body, request=request)
            time.sleep(1.0)
        return super().handle_request(request)


def _wait_until_ready(deployment: Deployment, expected_dag_files: int) -> None:
    """Health of every component, then the example DAGs parsed with no import error."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last = "api-server not answering"
    while time.monotonic() < deadline:
        deployment.check_alive()
        try:
            if deployment.api is None:
                health = httpx.get(f"{deployment.url}/api/v2/monitor/health", timeout=5).json()
                if health.get("metadatabase", {}).get("status") != "healthy":
                    raise httpx.TransportError(f"not healthy yet: {health}")
                deployment.api = _login(deployment.url)
            health = deployment.get("/monitor/health")
            unhealthy = [name for name, part in health.items() if (part or {}).get("status") != "healthy"]
            errors = deployment.get("/importErrors")["import_errors"]
            assert not errors, "example DAGs do not import:\n" + "\n".join(
                f"{e['filename']}: {e['stack_trace']}" for e in errors
            )
            dags = deployment.get("/dags", tags=EXAMPLE_TAG, limit=100)["dags"]
            files = {d["fileloc"] for d in dags}
            if not unhealthy and len(files) >= expected_dag_files:
                return
            last = f"unhealthy: {unhealthy}, {len(files)}/{expected_dag_files} DAG files parsed"
        except (httpx.TransportError, ValueError) as exc:
            last = str(exc)
        time.sleep(1.0)
    raise AssertionError(f"Airflow not ready after {STARTUP_TIMEOUT:.0f}s ({last})")


def _example_dag_files() -> list[Path]:
    return sorted(p for p in DAGS_SOURCE.glob("*.py") if EXAMPLE_TAG in p.read_text())


@pytest.fixture(scope="session")
def emulator_for_deployment() -> Iterator[Any]:
    """The AI/ML API emulator that the deployment's ``qwen_default`` connection points at."""
    from airflow_provider_qwen.testing.emulator import QwenEmulator

    with QwenEmulator(api_keys=[API_KEY]) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, emulator_for_deployment: Any
) -> Iterator[Deployment]:
    """api-server, scheduler, dag-processor and triggerer on loopback; stopped at the end, always."""
    home = tmp_path_factory.mktemp("airflow_e2e")
    shutil.copytree(DAGS_SOURCE, home / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    for test_dag in TEST_DAGS.glob("*.py"):  # DAGs the e2e tests run beside the examples
        shutil.copy(test_dag, home / "dags" / test_dag.name)
    (home / "passwords.json").write_text(json.dumps({USERNAME: PASSWORD}))
    logs = home / "components"
    logs.mkdir()
    port = free_port()
    env = _environment(home, port, emulator_for_deployment)
    deployment = Deployment(
        home=home, url=f"http://127.0.0.1:{port}", emulator=emulator_for_deployment, env=env
    )

    migrate = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True, timeout=300
    )
    assert migrate.returncode == 0, migrate.stdout.decode()[-3000:] + migrate.stderr.decode()[-3000:]
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a killed run still tears down
    try:
        for name in COMPONENTS:
            args = [name, "--port", str(port), "--host", "127.0.0.1"] if name == "api-server" else [name]
            deployment.processes[name] = _start(name, args, env, logs)
        _wait_until_ready(deployment, expected_dag_files=len(_example_dag_files()))
        yield deployment
    finally:
        if deployment.api is not None:
            deployment.api.close()
        stop_processes(list(deployment.processes.values()))
        signal.signal(signal.SIGTERM, previous)
        _keep_component_logs(home)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # pytest then runs the fixtures' teardown


def _keep_component_logs(home: Path) -> None:
    """Copy the components' output next to the screenshots, for a failed CI run."""
    target = ARTIFACTS / "airflow-components"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)
    for log in (home / "components").glob("*.log"):
        shutil.copy(log, target / log.name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """Keep each phase's report on the test item, so fixtures can act on a failure (screenshots)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
