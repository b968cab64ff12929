"""The README's first command: ``make demo`` (``python -m airflow_provider_qwen.demo``) on a fresh clone."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from decimal import Decimal

import pytest

from airflow_provider_qwen import demo
from tests.e2e.conftest import DAGS_SOURCE, REPO, _example_dag_files


@pytest.mark.e2e
def test_demo_runs_every_example_dag_on_the_emulator_and_prints_results_and_costs(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AIMLAPI", "QWEN"))}
    env["TMPDIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "airflow_provider_qwen.demo"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-2000:]
    assert "using the local AI/ML API emulator" in out

    dag_ids = re.findall(r"^== (\S+) \.\.\. ok in", out, flags=re.M)
    assert len(dag_ids) == len(_example_dag_files()), out  # every example DAG ran and succeeded
    assert "category:" in out  # structured values shown field by field
    assert "run total:" in out  # the cost report's result

    (total,) = re.findall(r"^total\s+(\d+)\s+(\d+)\s+(\S+)$", out, flags=re.M)
    (billed,) = re.findall(r"The emulator billed (\d+) credits = (\S+) USD", out)
    assert total[1] == billed[0]  # the table's credits == what the emulator charged
    assert Decimal(total[2]) == Decimal(billed[1])
    assert re.search(r"Done in [\d.]+s: (\d+)/\1 DAG runs succeeded", out)
    assert not list(tmp_path.glob("qwen-demo-*")), "the throwaway AIRFLOW_HOME was not removed"


def test_demo_uses_the_real_service_only_with_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QWEN_API_KEY", raising=False)
    monkeypatch.setenv("AIMLAPI_API_KEY", "sk-demo-key-1234")
    out = io.StringIO()
    with contextlib.ExitStack() as stack:
        connection, emulator, secret = demo.service(stack, out)
    assert emulator is None
    assert json.loads(connection) == {"conn_type": "qwen", "password": "sk-demo-key-1234"}
    assert secret == "sk-demo-key-1234"
    assert "REAL AI/ML API at https://api.aimlapi.com/v1 (AIMLAPI_API_KEY is set)" in out.getvalue()
    assert "sk-demo-key-1234" not in out.getvalue()


def test_demo_finds_the_clones_dags_folder_or_says_how_to(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert demo.find_dags_folder(None) == DAGS_SOURCE.resolve()  # next to the package of a clone
    with pytest.raises(SystemExit, match="--dags-folder"):
        demo.find_dags_folder(str(tmp_path))
