"""The decorators are found the way Airflow finds them: the provider info's ``task-decorators``,
read by the providers manager, behind ``from airflow.sdk import task; task.qwen``."""

from __future__ import annotations

import subprocess
import sys
from importlib import import_module

import pytest
from airflow.sdk import task

from airflow_provider_qwen import get_provider_info
from airflow_provider_qwen.decorators import qwen

NAMES = ("qwen", "qwen_tool_call", "qwen_batch", "qwen_agent")


def test_the_provider_info_names_each_decorator_and_each_name_imports():
    entries = {d["name"]: d["class-name"] for d in get_provider_info()["task-decorators"]}
    assert set(entries) == set(NAMES)
    for name, path in entries.items():
        module, _, attr = path.rpartition(".")
        assert getattr(import_module(module), attr) is getattr(qwen, f"{name}_task")


@pytest.mark.parametrize("name", NAMES)
def test_task_dot_name_resolves_through_the_providers_manager(name):
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    assert ProvidersManagerTaskRuntime().taskflow_decorators[name] is getattr(qwen, f"{name}_task")
    assert getattr(task, name) is getattr(qwen, f"{name}_task")


def test_the_package_exports_the_decorators_lazily():
    import airflow_provider_qwen.decorators as decorators

    assert decorators.qwen_task is qwen.qwen_task
    assert decorators.ReturnedValueError.__name__ == "ReturnedValueError"
    with pytest.raises(AttributeError):
        _ = decorators.qwen_nothing


def test_using_one_decorator_loads_only_its_operator():
    code = (
        "import sys\n"
        "from airflow.sdk import task\n"
        "@task.qwen(max_completion_tokens=100)\n"
        "def ask():\n"
        "    return 'hi'\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('airflow_provider_qwen.'))\n"
        "print('\\n'.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(out.split())
    assert "airflow_provider_qwen.decorators.chat" in loaded
    heavy = {
        "airflow_provider_qwen.operators.batch",
        "airflow_provider_qwen.operators.agent",
        "airflow_provider_qwen.decorators.batch",
        "airflow_provider_qwen.decorators.agent",
        "airflow_provider_qwen.client.client",
        "airflow_provider_qwen.hooks.qwen",
    }
    assert not loaded & heavy, loaded & heavy
