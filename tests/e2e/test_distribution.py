"""The package as users get it: ``python -m build`` makes an sdist and a wheel that carry every data
file, and the wheel installed into a clean virtualenv registers the provider with Airflow.

The clean venv is made with uv (from the project's .venv), which resolves Airflow from the package
index and reuses uv's cache, so it takes seconds after ``make`` has installed the project once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from airflow_provider_qwen import __version__

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DATA_FILES = (
    "airflow_provider_qwen/py.typed",
    "airflow_provider_qwen/client/prices.json",
    "airflow_provider_qwen/testing/schemas/qwen3.7-max.openapi.json",
)
ENTRY_POINTS = (
    "[apache_airflow_provider]\nprovider_info = airflow_provider_qwen:get_provider_info",
    "[pytest11]\nqwen_emulator = airflow_provider_qwen.testing.pytest_plugin",
)


def _run(args: list[str | Path], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    command = [str(a) for a in args]
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=900)
    output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"{' '.join(command)} failed ({done.returncode}):\n{output}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sdist and wheel of the working tree, built the standard way (isolated build environment)."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", out, REPO])
    return out


def _only(folder: Path, pattern: str) -> Path:
    (found,) = folder.glob(pattern)
    return found


def test_wheel_and_sdist_carry_the_data_files_and_entry_points(dist: Path) -> None:
    wheel = _only(dist, f"airflow_provider_qwen-{__version__}-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        declared = archive.read(entry_points).decode()
        schema = json.loads(archive.read("airflow_provider_qwen/testing/schemas/qwen3.7-max.openapi.json"))
        prices = json.loads(archive.read("airflow_provider_qwen/client/prices.json"))
    assert set(DATA_FILES) <= names, f"missing from the wheel: {set(DATA_FILES) - names}"
    for block in ENTRY_POINTS:
        assert block in declared, f"wheel entry points lack {block!r}:\n{declared}"
    assert "openapi" in schema
    assert "alibaba/qwen3.7-max" in json.dumps(prices)
    assert not any(n.startswith(("tests/", "dags/")) for n in names), (
        "tests or example DAGs packaged as modules"
    )

    sdist = _only(dist, f"airflow_provider_qwen-{__version__}.tar.gz")
    with tarfile.open(sdist) as archive:
        members = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert set(DATA_FILES) <= members, f"missing from the sdist: {set(DATA_FILES) - members}"
    assert {"setup.cfg", "pyproject.toml", "README.md"} <= members


def test_wheel_in_a_clean_venv_registers_the_provider(dist: Path, tmp_path: Path) -> None:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "uv not found next to the test interpreter (it is installed by `make`)"
    venv = tmp_path / "venv"
    _run([uv, "venv", "--quiet", "--python", sys.executable, venv])
    python = venv / "bin" / "python"
    wheel = _only(dist, "*.whl")
    _run([uv, "pip", "install", "--quiet", "--python", python, wheel])

    home = tmp_path / "airflow_home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON", "VIRTUAL_ENV"))}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    airflow = venv / "bin" / "airflow"

    providers = json.loads(_run([airflow, "providers", "list", "--output", "json"], cwd=tmp_path, env=env))
    ours = [p for p in providers if p["package_name"] == "airflow-provider-qwen"]
    assert ours, f"provider not registered; Airflow sees {[p['package_name'] for p in providers]}"
    assert ours[0]["version"] == __version__

    hooks = json.loads(_run([airflow, "providers", "hooks", "--output", "json"], cwd=tmp_path, env=env))
    (qwen,) = [h for h in hooks if h["connection_type"] == "qwen"]
    assert qwen["class"] == "airflow_provider_qwen.hooks.qwen.QwenHook"
    assert qwen["conn_id_attribute_name"] == "qwen_conn_id"

    # every public module imports from the installed wheel alone (not from this checkout)
    probe = (
        "import sys, airflow_provider_qwen as p, airflow_provider_qwen.operators as ops;"
        "from airflow_provider_qwen.hooks.qwen import QwenHook;"
        "from airflow_provider_qwen.testing.emulator import QwenEmulator;"
        "[getattr(ops, name) for name in ops.__all__];"
        "print(p.__file__)"
    )
    location = _run([python, "-c", probe], cwd=tmp_path, env=env).strip()  # cwd: not the checkout
    assert location.startswith(str(venv)), location
