"""A real multi-worker Airflow for the distributed end-to-end test, started once per module.

PostgreSQL (the metadata database) and Redis (the Celery broker) run as servers of their own, with
data folders in throwaway directories and free loopback ports; then api-server, scheduler and
dag-processor with the Celery executor, and two Celery workers (``worker-1``, ``worker-2``), each
its own process tree, sharing one AIRFLOW_HOME, one log folder and one checkpoint storage
(``[qwen] storage_base``) as workers on a shared disk would. The AI/ML API emulator is the
``qwen_default`` connection. The scheduler declares a task dead after ``HEARTBEAT_TIMEOUT_S``
without a heartbeat, so a killed worker's task is retried within seconds.

Teardown stops every process the deployment started (the servers, the components, the workers and
everything they spawned, killed ones included) whatever the test did, also on SIGTERM; each process
also gets SIGTERM if the test process dies without its teardown (``setpriv --pdeathsig``).
Debian's ``redis-server`` and ``postgresql`` come from ``scripts/install-distributed.sh``.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import (
    API_KEY,
    ARTIFACTS,
    DAGS_SOURCE,
    DIE_WITH_PARENT,
    PASSWORD,
    USERNAME,
    Deployment,
    free_port,
    stop_processes,
    tail,
)

COMPONENTS = ("api-server", "scheduler", "dag-processor")
WORKERS = ("worker-1", "worker-2")
WORKER_CONCURRENCY = 2  # task slots per worker: 4 in all, so the pool, not the workers, caps shards
HEARTBEAT_TIMEOUT_S = 10  # a task without a heartbeat for this long is failed (then retried)
STARTUP_TIMEOUT = 240.0
DAG_ENV = {"QWEN_BATCH_POOL": "qwen_e2e_shards"}  # dags/batch_sharded.py reads it when parsed
DISTRIBUTED_DAGS = ("batch_sharded.py",)


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        found = [p for p in [shutil.which("initdb")] if p]
    if not found:
        pytest.fail("PostgreSQL is not installed: run scripts/install-distributed.sh")
    return Path(found[-1]).parent


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its programs as the ``postgres`` user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root but there is no 'postgres' user: run scripts/install-distributed.sh")
    # --pdeathsig after the user change: a change of credentials clears an earlier one
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--pdeathsig", "TERM", "--"]


def _run(args: list[str], **kwargs: Any) -> None:
    done = subprocess.run(args, capture_output=True, timeout=120, **kwargs)
    assert done.returncode == 0, f"{args}: {done.stdout.decode()[-2000:]} {done.stderr.decode()[-2000:]}"


def _wait_for(what: str, ready: Any, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        with contextlib.suppress(Exception):
            if ready():
                return
        assert time.monotonic() < deadline, f"{what} not ready after {timeout:.0f}s:\n{tail(log)}"
        time.sleep(0.2)


def _popen(
    args: list[str], log: Path, env: dict[str, str] | None = None, *, die_with_parent: bool = True
) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115 - the process owns it until teardown
    try:
        return subprocess.Popen(
            [*(DIE_WITH_PARENT if die_with_parent else []), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        out.close()


@dataclass
class Services:
    """The servers the deployment stands on, and the folders that go with them."""

    postgres_url: str = ""
    redis_url: str = ""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)


PG_PREFIX = "qwen-e2e-postgres-"


def _remove_stale_postgres_folders(older_than_s: float = 3600) -> None:
    """Data folders a test process killed outright (no teardown) left behind: old, and no live
    postmaster in them (a run going on beside this one keeps its own)."""
    import psutil

    for folder in Path(tempfile.gettempdir()).glob(f"{PG_PREFIX}*"):
        with contextlib.suppress(OSError, ValueError):
            if time.time() - folder.stat().st_mtime < older_than_s:
                continue
            pid_file = folder / "data" / "postmaster.pid"
            if pid_file.exists() and psutil.pid_exists(int(pid_file.read_text().split()[0])):
                continue
            shutil.rmtree(folder)


@contextlib.contextmanager
def services(logs: Path) -> Iterator[Services]:
    """PostgreSQL and Redis on free loopback ports; stopped (and their data removed) on exit."""
    started = Services()
    try:
        # PostgreSQL's own user must reach its data folder: not under pytest's 0700 root folder
        _remove_stale_postgres_folders()
        pg_root = Path(tempfile.mkdtemp(prefix=PG_PREFIX))
        started.folders.append(pg_root)
        as_postgres = _as_postgres_user()
        if as_postgres:
            shutil.chown(pg_root, "postgres", "postgres")
        data, sockets = pg_root / "data", pg_root
        bin_dir = _postgres_bin()
        _run(
            [
                *as_postgres,
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "airflow",
                "--auth=trust",
                "-E",
                "UTF8",
            ]
        )
        pg_port = free_port()
        postgres = _popen(
            [
                *as_postgres,
                str(bin_dir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(pg_port),
                "-k",
                str(sockets),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=300",
                "-c",
                "fsync=off",  # a throwaway database: durability buys nothing here
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
            logs / "postgres.log",
            die_with_parent=not as_postgres,  # as_postgres sets it itself, after the user change
        )
        started.processes.append(postgres)
        redis_server = shutil.which("redis-server")
        if redis_server is None:
            pytest.fail("redis-server is not installed: run scripts/install-distributed.sh")
        redis_port = free_port()
        redis_dir = logs.parent / "redis"
        redis_dir.mkdir()
        redis = _popen(
            [
                redis_server,
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(redis_dir),
            ],
            logs / "redis.log",
        )
        started.processes.append(redis)

        def postgres_ready() -> bool:
            import psycopg2

            psycopg2.connect(host="127.0.0.1", port=pg_port, user="airflow", dbname="postgres").close()
            return True

        _wait_for("postgres", postgres_ready, postgres, logs / "postgres.log")
        _run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(pg_port), "-U", "airflow", "airflow"])

        def redis_ready() -> bool:
            import redis as redis_client

            return bool(redis_client.Redis(host="127.0.0.1", port=redis_port, socket_timeout=2).ping())

        _wait_for("redis", redis_ready, redis, logs / "redis.log")
        started.postgres_url = f"airflow@127.0.0.1:{pg_port}/airflow"
        started.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        yield started
    finally:
        stop_processes(started.processes)
        for folder in started.folders:
            shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Cluster(Deployment):
    """The Celery deployment: ``processes`` are the live components and workers; ``storage`` the
    checkpoint folder every worker shares; ``killed`` the workers a test killed."""

    storage: Path = Path()
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    killed: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def worker_tree(self, name: str) -> list[Any]:
        """A worker's processes: its Celery main process and every descendant (pool processes, task
        supervisors and task processes)."""
        import psutil

        with contextlib.suppress(psutil.NoSuchProcess):
            main = psutil.Process(self.workers[name].pid)
            return [main, *main.children(recursive=True)]
        return []

    def worker_of(self, pid: int) -> str | None:
        """The worker whose process tree holds ``pid`` (a task's process)."""
        for name in self.workers:
            if name not in self.killed and any(p.pid == pid for p in self.worker_tree(name)):
                return name
        return None

    def kill_worker(self, name: str) -> list[int]:
        """SIGKILL a worker's whole process tree at once (frozen first, so nothing forks in
        between); returns the pids killed. The worker is no longer expected to be alive."""
        import psutil

        self.killed[name] = self.processes.pop(name)
        tree = self.worker_tree(name)
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.suspend()
        tree = {p.pid: p for p in [*tree, *self.worker_tree(name)]}.values()  # any late fork too
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(list(tree), timeout=10)
        self.killed[name].wait(timeout=10)
        return [p.pid for p in tree]


def _environment(home: Path, port: int, emulator: Any, svc: Services, storage: Path) -> dict[str, str]:
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
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "2",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{svc.postgres_url}",
            "AIRFLOW__CELERY__BROKER_URL": svc.redis_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{svc.postgres_url}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
            "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
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
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
            "AIRFLOW__QWEN__STORAGE_BASE": f"file://{storage}",  # one folder, every worker
            "AIRFLOW_CONN_QWEN_DEFAULT": emulator.conn_json(),
            "PYTHONUNBUFFERED": "1",
            **DAG_ENV,
        }
    )
    return env


def _login(url: str) -> httpx.Client:
    response = httpx.post(f"{url}/auth/token", json={"username": USERNAME, "password": PASSWORD}, timeout=30)
    assert response.status_code == 201, f"POST /auth/token: {response.status_code} {response.text[:300]}"
    token = response.json()["access_token"]
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def _wait_until_ready(cluster: Cluster, dag_ids: list[str]) -> None:
    """Database, scheduler and dag-processor healthy, both workers ready, the DAGs parsed."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last = "api-server not answering"
    while time.monotonic() < deadline:
        cluster.check_alive()
        try:
            if cluster.api is None:
                health = httpx.get(f"{cluster.url}/api/v2/monitor/health", timeout=5).json()
                if health.get("metadatabase", {}).get("status") != "healthy":
                    raise httpx.TransportError(f"not healthy yet: {health}")
                cluster.api = _login(cluster.url)
            health = cluster.get("/monitor/health")
            unhealthy = [
                part
                for part in ("metadatabase", "scheduler", "dag_processor")
                if (health.get(part) or {}).get("status") != "healthy"
            ]
            errors = cluster.get("/importErrors")["import_errors"]
            assert not errors, "DAGs do not import:\n" + "\n".join(
                f"{e['filename']}: {e['stack_trace']}" for e in errors
            )
            parsed = {d["dag_id"] for d in cluster.get("/dags", limit=100)["dags"]}
            waiting = [
                w for w in WORKERS if " ready." not in (cluster.component_logs / f"{w}.log").read_text()
            ]
            missing = sorted(set(dag_ids) - parsed)
            if not unhealthy and not waiting and not missing:
                return
            last = f"unhealthy: {unhealthy}, workers not ready: {waiting}, DAGs not parsed: {missing}"
        except (httpx.TransportError, ValueError, FileNotFoundError) as exc:
            last = str(exc)
        time.sleep(1.0)
    raise AssertionError(f"the Celery deployment was not ready after {STARTUP_TIMEOUT:.0f}s ({last})")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # pytest then runs the fixtures' teardown


def _keep_logs(home: Path) -> None:
    """The components' and workers' output next to the other e2e artefacts, for a failed CI run."""
    target = ARTIFACTS / "airflow-distributed"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)
    for log in (home / "components").glob("*.log"):
        shutil.copy(log, target / log.name)


@pytest.fixture(scope="module")
def distributed_emulator() -> Iterator[Any]:
    """The AI/ML API emulator behind the deployment's ``qwen_default``; its log is the judge."""
    from airflow_provider_qwen.testing.emulator import QwenEmulator

    with QwenEmulator(api_keys=[API_KEY]) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, distributed_emulator: Any) -> Iterator[Cluster]:
    """Postgres, Redis, api-server, scheduler, dag-processor and two Celery workers; all stopped at
    the end, always."""
    home = tmp_path_factory.mktemp("airflow_celery")
    (home / "dags").mkdir()
    for name in DISTRIBUTED_DAGS:
        shutil.copy(DAGS_SOURCE / name, home / "dags" / name)
    shutil.copytree(DAGS_SOURCE / "documents", home / "dags" / "documents")
    (home / "passwords.json").write_text(json.dumps({USERNAME: PASSWORD}))
    logs = home / "components"
    logs.mkdir()
    storage = home / "shared-storage"
    storage.mkdir()
    port = free_port()
    cluster = Cluster(
        home=home, url=f"http://127.0.0.1:{port}", emulator=distributed_emulator, storage=storage
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a killed run still tears down
    try:
        with services(logs) as svc:
            env = _environment(home, port, distributed_emulator, svc, storage)
            try:
                migrate = subprocess.run(
                    [sys.executable, "-m", "airflow", "db", "migrate"],
                    env=env,
                    capture_output=True,
                    timeout=300,
                )
                assert migrate.returncode == 0, (
                    migrate.stdout.decode()[-3000:] + migrate.stderr.decode()[-3000:]
                )
                for name in COMPONENTS:
                    args = (
                        [name, "--port", str(port), "--host", "127.0.0.1"] if name == "api-server" else [name]
                    )
                    cluster.processes[name] = _popen(
                        [sys.executable, "-m", "airflow", *args], logs / f"{name}.log", env
                    )
                for name in WORKERS:
                    args = [
                        "celery",
                        "worker",
                        "--celery-hostname",
                        f"{name}@%h",
                        "--concurrency",
                        str(WORKER_CONCURRENCY),
                        "--pid",
                        str(home / f"{name}.pid"),
                        "--skip-serve-logs",
                        "--without-mingle",
                        "--without-gossip",
                    ]
                    worker = _popen([sys.executable, "-m", "airflow", *args], logs / f"{name}.log", env)
                    cluster.processes[name] = cluster.workers[name] = worker
                _wait_until_ready(cluster, ["qwen_batch_sharded"])
                yield cluster
            finally:
                if cluster.api is not None:
                    cluster.api.close()
                stop_processes([*cluster.processes.values(), *cluster.killed.values()])
    finally:
        signal.signal(signal.SIGTERM, previous)
        _keep_logs(home)
