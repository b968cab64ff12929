"""The package as users get it: ``python -m build`` makes an sdist and a wheel that carry every data
file, the licence and the project's metadata (Project-URLs, classifiers, every runtime requirement);
the sdist also carries the tests, docs, example DAGs and changelog; and the wheel installed into a
clean virtualenv registers the provider with Airflow, documentation URL included.

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
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from airflow_provider_qwen import DOCUMENTATION_URL, SOURCE_URL, __version__

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DATA_FILES = (
    "airflow_provider_qwen/py.typed",
    "airflow_provider_qwen/client/prices.json",
    "airflow_provider_qwen/testing/schemas/qwen3.7-max.openapi.json",
)
LICENCE_FILES = ("LICENSE", "NOTICE")
PROJECT_URLS = {
    "Documentation": DOCUMENTATION_URL,
    "Changelog": f"{SOURCE_URL}/blob/main/CHANGELOG.md",
    "Source": SOURCE_URL,
    "Issues": f"{SOURCE_URL}/issues",
}
CLASSIFIERS = (
    "Development Status :: 4 - Beta",
    "Framework :: Apache Airflow",
    "Framework :: Apache Airflow :: Provider",
    "License :: OSI Approved :: Apache Software License",
    "Intended Audience :: Developers",
    *(f"Programming Language :: Python :: 3.{minor}" for minor in (10, 11, 12, 13)),
)
# The sdist has what it takes to test and document the package, and none of a checkout's leftovers.
SDIST_FILES = (
    "CHANGELOG.md",
    "mkdocs.yml",
    "Makefile",
    "docs/index.md",
    "docs/connection.md",
    "docs/howto/chat.md",
    "docs/reference/hooks.md",
    "dags/daily_summary.py",
    "dags/prompts/daily_summary.prompt",
    "tests/conftest.py",
    "tests/unit/test_provider_info.py",
    "tests/e2e/test_distribution.py",
    "tests/fixtures/qwen3.7-max-response.json",
)
SDIST_NEVER = (".venv/", "test-artifacts/", "build/", "dist/", ".git/", ".pytest_cache/", ".ruff_cache/")
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


def _wheel_metadata(dist: Path) -> Message:
    with zipfile.ZipFile(_only(dist, "*.whl")) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(archive.read(name).decode())


def _sdist_members(dist: Path) -> set[str]:
    with tarfile.open(_only(dist, f"airflow_provider_qwen-{__version__}.tar.gz")) as archive:
        return {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}


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


def test_wheel_and_sdist_carry_the_licence(dist: Path) -> None:
    with zipfile.ZipFile(_only(dist, "*.whl")) as archive:
        licences = {
            n.rsplit("/", 1)[1]: archive.read(n).decode()
            for n in archive.namelist()
            if ".dist-info/licenses/" in n
        }
    assert set(LICENCE_FILES) <= set(licences), f"the wheel's licence files: {sorted(licences)}"
    for name in LICENCE_FILES:
        assert licences[name] == (REPO / name).read_text(), name
    assert "Apache License" in licences["LICENSE"]
    assert "Version 2.0, January 2004" in licences["LICENSE"]
    assert "END OF TERMS AND CONDITIONS" in licences["LICENSE"]
    assert licences["NOTICE"].startswith("airflow-provider-qwen\n")
    metadata = _wheel_metadata(dist)
    assert set(LICENCE_FILES) <= set(metadata.get_all("License-File") or [])
    assert metadata["License"] == "Apache-2.0" or metadata["License-Expression"] == "Apache-2.0"

    members = _sdist_members(dist)
    assert set(LICENCE_FILES) <= members, f"missing from the sdist: {set(LICENCE_FILES) - members}"


def test_wheel_metadata_has_the_project_urls_classifiers_and_requirements(dist: Path) -> None:
    import trove_classifiers

    metadata = _wheel_metadata(dist)
    urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL") or [])
    assert urls == PROJECT_URLS
    classifiers = metadata.get_all("Classifier") or []
    assert set(CLASSIFIERS) <= set(classifiers), f"missing: {set(CLASSIFIERS) - set(classifiers)}"
    unknown = [c for c in classifiers if c not in trove_classifiers.classifiers]
    assert not unknown, f"not on the official list: {unknown}"
    assert metadata["Requires-Python"] == ">=3.10"
    requires = [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]
    runtime = {canonicalize_name(r.name) for r in requires if r.marker is None}
    # the emulator's server and the rest of what Airflow happens to bring today, declared
    assert {"starlette", "uvicorn", "jinja2", "psutil", "apache-airflow", "httpx", "pydantic"} <= runtime
    extras = {str(r.marker) for r in requires if r.marker is not None}
    assert {'extra == "parquet"', 'extra == "openlineage"', 'extra == "docs"'} <= extras


def test_sdist_carries_tests_docs_example_dags_and_changelog(dist: Path) -> None:
    members = _sdist_members(dist)
    assert set(SDIST_FILES) <= members, f"missing from the sdist: {set(SDIST_FILES) - members}"
    built = _only(dist, "*.tar.gz").stat().st_mtime  # files written since are not the sdist's business
    on_disk = [
        path.relative_to(REPO).as_posix()
        for folder in ("docs", "dags", "tests")
        for path in (REPO / folder).rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.suffix != ".pyc"
        and path.stat().st_mtime < built
    ]
    missing = [f for f in on_disk if f not in members]
    assert not missing, f"files of docs/, dags/ or tests/ missing from the sdist: {missing[:20]}"
    leftovers = sorted(m for m in members if m.startswith(SDIST_NEVER) or "/__pycache__/" in m)
    assert not leftovers, f"the sdist carries a checkout's leftovers: {leftovers[:20]}"


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

    # `airflow providers get` shows the documentation URL (Airflow reads the Project-URL
    # "Documentation" of the distribution into the provider info's documentation-url)
    (full,) = json.loads(
        _run(
            [airflow, "providers", "get", "airflow-provider-qwen", "--full", "--output", "json"],
            cwd=tmp_path,
            env=env,
        )
    )
    assert full["documentation-url"] == DOCUMENTATION_URL
    assert full["package-name"] == "airflow-provider-qwen"
    assert "airflow_provider_qwen.triggers.qwen" in json.dumps(full["triggers"])
    assert [d["name"] for d in full["task-decorators"]] == [
        "qwen",
        "qwen_tool_call",
        "qwen_batch",
        "qwen_agent",
    ]

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

    # the emulator's declared server stack answers a call from the installed client
    emulate = (
        "import importlib.metadata as m;"
        "from airflow_provider_qwen.client import QwenClient;"
        "from airflow_provider_qwen.testing import QwenEmulator;"
        "emulator = QwenEmulator().start();"
        "client = QwenClient(api_key=emulator.api_key, base_url=emulator.base_url, max_retries=0);"
        "answer = client.chat('Say hello', max_completion_tokens=50);"
        "client.close(); emulator.stop();"
        "print(bool(answer.content), m.version('starlette'), m.version('uvicorn'))"
    )
    answered, starlette, uvicorn = _run([python, "-c", emulate], cwd=tmp_path, env=env).split()
    assert answered == "True", (starlette, uvicorn)
