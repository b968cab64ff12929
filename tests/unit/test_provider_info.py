"""The provider contract: get_provider_info(), the entry point, and what Airflow's ProvidersManager sees."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from importlib import metadata, resources
from typing import Any

import httpx
import jsonschema
import pytest
import respx

import airflow_provider_qwen
from airflow_provider_qwen import CONN_FIELDS, DEFAULT_BASE_URL, DEFAULT_CONN_ID, get_provider_info
from airflow_provider_qwen.hooks.qwen import QwenHook

DISTRIBUTION = "airflow-provider-qwen"
JSON_SCHEMA_TYPES = {"string", "number", "integer", "boolean", "object", "array", "null"}


def airflow_schema(name: str) -> dict[str, Any]:
    return json.loads(resources.files("airflow").joinpath(name).read_text())


@pytest.fixture(scope="module")
def info() -> dict[str, Any]:
    return get_provider_info()


@pytest.fixture(scope="module")
def connection_type(info: dict[str, Any]) -> dict[str, Any]:
    (entry,) = info["connection-types"]
    return entry


def test_package_name_and_version_equal_the_installed_distribution(info: dict[str, Any]):
    dist = metadata.distribution(DISTRIBUTION)
    assert info["package-name"] == DISTRIBUTION == dist.metadata["Name"]
    assert info["versions"][0] == dist.version == airflow_provider_qwen.__version__


def test_the_entry_point_is_installed():
    (entry,) = [
        e
        for e in metadata.entry_points(group="apache_airflow_provider")
        if e.value.startswith("airflow_provider_qwen")
    ]
    assert entry.value == "airflow_provider_qwen:get_provider_info"
    assert entry.load() is get_provider_info


def test_provider_info_validates_against_airflows_schema(info: dict[str, Any]):
    jsonschema.validate(info, airflow_schema("provider_info.schema.json"))
    assert json.loads(json.dumps(info)) == info  # plain JSON data


def test_the_connection_type_names_an_importable_hook(connection_type: dict[str, Any]):
    assert connection_type["connection-type"] == "qwen"
    module, _, name = connection_type["hook-class-name"].rpartition(".")
    hook_class = getattr(__import__(module, fromlist=[name]), name)
    assert hook_class is QwenHook
    assert hook_class.conn_type == "qwen"
    assert hook_class.default_conn_name == DEFAULT_CONN_ID == "qwen_default"
    assert hook_class.hook_name == connection_type["hook-name"]
    # the UI builds the hook as QwenHook(**{conn_name_attr: conn_id}) to test a connection
    assert hook_class.conn_name_attr in inspect.signature(hook_class.__init__).parameters
    assert inspect.signature(hook_class.__init__).parameters["qwen_conn_id"].default == DEFAULT_CONN_ID


def test_conn_fields_are_sane(connection_type: dict[str, Any]):
    fields = connection_type["conn-fields"]
    assert set(fields) == {"model", "timeout", "max_retries", "prices"}
    for name, spec in fields.items():
        assert spec["label"], name
        schema = spec["schema"]
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        assert set(types) <= JSON_SCHEMA_TYPES, name
        jsonschema.Draft7Validator.check_schema(schema)
        if "default" in schema:
            jsonschema.validate(schema["default"], schema)
        assert schema.get("format") != "password", f"{name} is not a secret: the key is the password field"
    assert fields["model"]["schema"]["default"] == "alibaba/qwen3.7-max"
    assert fields["max_retries"]["schema"]["type"] == "integer"


def test_ui_field_behaviour_is_valid_and_relabels_the_key(connection_type: dict[str, Any]):
    behaviour = connection_type["ui-field-behaviour"]
    as_python = {key.replace("-", "_"): value for key, value in behaviour.items()}
    jsonschema.validate(as_python, airflow_schema("customized_form_field_behaviours.schema.json"))
    assert behaviour["relabeling"]["password"] == "API key"
    assert behaviour["placeholders"]["host"] == DEFAULT_BASE_URL
    assert "host" not in behaviour["hidden-fields"]
    assert "password" not in behaviour["hidden-fields"]


def test_importing_the_package_imports_no_airflow_and_no_http():
    code = (
        "import sys, airflow_provider_qwen; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('airflow', 'httpx', 'pydantic')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


# -- Airflow's own view, in process --------------------------------------------------------------------


@pytest.fixture(scope="module")
def providers_manager() -> Any:
    from airflow.providers_manager import ProvidersManager

    return ProvidersManager()


def test_providers_manager_lists_the_provider(providers_manager: Any):
    provider = providers_manager.providers[DISTRIBUTION]
    assert provider.version == airflow_provider_qwen.__version__


def test_the_task_runtime_lists_the_hook_and_connection_type():
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    hook = ProvidersManagerTaskRuntime().hooks["qwen"]
    assert hook.hook_class_name == "airflow_provider_qwen.hooks.qwen.QwenHook"
    assert hook.connection_id_attribute_name == "qwen_conn_id"
    assert hook.package_name == DISTRIBUTION
    assert hook.connection_testable is True


def test_the_ui_connection_form_metadata(providers_manager: Any):
    """What the API server sends the UI's connection form (HookMetaService, as on plain 3.3: no wtforms)."""
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    (meta,) = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "qwen"]
    assert meta.hook_name == "Qwen (AI/ML API)"
    fields = meta.standard_fields
    assert (fields.password.title, fields.password.hidden) == ("API key", False)
    assert (fields.host.title, fields.host.placeholder) == ("Base URL", DEFAULT_BASE_URL)
    assert [fields.login.hidden, fields.port.hidden, fields.url_schema.hidden] == [True, True, True]
    assert set(meta.extra_fields) == set(CONN_FIELDS)
    for name, spec in CONN_FIELDS.items():
        extra = meta.extra_fields[name]
        assert extra["schema"]["title"] == spec["label"]
        assert extra["schema"]["type"] == spec["schema"]["type"]
        assert extra["value"] == spec["schema"].get("default")
    assert providers_manager.field_behaviours["qwen"]["relabeling"] == {
        "password": "API key",
        "host": "Base URL",
    }
    for name in CONN_FIELDS:
        assert providers_manager.connection_form_widgets[f"extra__qwen__{name}"].is_sensitive is False


def test_a_connection_builds_and_tests_the_hook_as_the_ui_does():
    from airflow.sdk import Connection

    conn = Connection(
        conn_id="qwen_ui", conn_type="qwen", host="http://127.0.0.1:8123/v1", password="sk-ui-key-123"
    )
    hook = conn.get_hook()
    assert isinstance(hook, QwenHook)
    assert hook.qwen_conn_id == "qwen_ui"
    with respx.mock(using="httpx", assert_all_mocked=True) as service:
        billing = service.get("http://127.0.0.1:8123/v2/billing").mock(
            return_value=httpx.Response(200, json={"current_balance": 3.25, "currency": "USD"})
        )
        ok, message = conn.test_connection()  # resolves the in-memory connection by id, like the UI's worker
    assert (ok, billing.call_count) == (True, 1)
    assert "3.25 USD" in message
