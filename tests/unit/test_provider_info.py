"""The provider contract: get_provider_info(), the entry point, and what Airflow's ProvidersManager sees."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import respx

import airflow_provider_qwen
from airflow_provider_qwen import (
    CONN_FIELDS,
    DEFAULT_BASE_URL,
    DEFAULT_CONN_ID,
    DOCUMENTATION_URL,
    get_provider_info,
)
from airflow_provider_qwen.hooks.qwen import QwenHook

DISTRIBUTION = "airflow-provider-qwen"
PACKAGE = Path(airflow_provider_qwen.__file__).parent
# Keys Airflow's providers manager adds to the info at run time (provider.yaml has none of them).
RUNTIME_ONLY_KEYS = ("documentation-url",)
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


def test_provider_info_is_also_a_valid_provider_yaml(info: dict[str, Any]):
    """The stricter schema of an ASF provider's provider.yaml (no unknown keys in a section, the
    integration's tags from Airflow's list, every config option fully described), with the two
    release fields provider.yaml has and the runtime info has not."""
    as_yaml = {k: v for k, v in info.items() if k not in RUNTIME_ONLY_KEYS}
    as_yaml.update({"state": "ready", "source-date-epoch": 0})
    jsonschema.validate(as_yaml, airflow_schema("provider.yaml.schema.json"))
    integrations = {i["integration-name"] for i in info["integrations"]}
    for section in ("hooks", "operators", "triggers"):
        assert {entry["integration-name"] for entry in info[section]} <= integrations, section


def test_the_documentation_url_is_the_distributions(info: dict[str, Any]):
    """Airflow 3.3 takes the provider's documentation URL from the Project-URL "Documentation" of its
    distribution; the info names the same one."""
    urls = dict(
        entry.split(", ", 1) for entry in metadata.distribution(DISTRIBUTION).metadata.get_all("Project-URL")
    )
    assert urls["Documentation"] == info["documentation-url"] == DOCUMENTATION_URL
    assert DOCUMENTATION_URL.startswith("https://")


# -- every hook, operator, trigger and decorator is listed, and every listed module imports --------------


def _modules(info: dict[str, Any], section: str) -> list[str]:
    return [module for entry in info[section] for module in entry["python-modules"]]


def _package_modules(subpackage: str) -> list[str]:
    package = importlib.import_module(f"airflow_provider_qwen.{subpackage}")
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__, f"{package.__name__}."))


def _classes_defined(module_name: str, base: type) -> list[type]:
    module = importlib.import_module(module_name)
    return [
        value
        for value in vars(module).values()
        if inspect.isclass(value) and issubclass(value, base) and value.__module__ == module_name
    ]


@pytest.mark.parametrize("section", ["hooks", "operators", "triggers"])
def test_every_listed_module_imports(info: dict[str, Any], section: str):
    modules = _modules(info, section)
    assert modules, section
    assert len(modules) == len(set(modules)), f"{section} lists a module twice"
    for name in modules:
        importlib.import_module(name)


def test_every_module_that_defines_an_operator_is_listed(info: dict[str, Any]):
    """An operator module defines an operator no other operator of the package derives from (base
    classes, mixins and helpers such as base, call, spend, batch_checks, lineage, review are not
    listed), and ``airflow_provider_qwen.operators`` exports each one."""
    from airflow.sdk import BaseOperator

    import airflow_provider_qwen.operators as operators

    defined = {name: _classes_defined(name, BaseOperator) for name in _package_modules("operators")}
    every = [cls for classes in defined.values() for cls in classes]
    leaves = {
        name: [
            cls for cls in classes if not any(other is not cls and issubclass(other, cls) for other in every)
        ]
        for name, classes in defined.items()
    }
    operator_modules = sorted(name for name, classes in leaves.items() if classes)
    assert sorted(_modules(info, "operators")) == operator_modules
    exported = {getattr(operators, name) for name in operators.__all__}
    assert {cls for classes in leaves.values() for cls in classes} == exported
    assert {cls.__module__ for cls in exported} == set(operator_modules)


@pytest.mark.parametrize(
    ("section", "subpackage", "base"),
    [
        ("hooks", "hooks", "airflow.sdk:BaseHook"),
        ("triggers", "triggers", "airflow.triggers.base:BaseTrigger"),
    ],
)
def test_every_module_that_defines_a_hook_or_trigger_is_listed(
    info: dict[str, Any], section: str, subpackage: str, base: str
):
    module_name, _, class_name = base.partition(":")
    base_class = getattr(importlib.import_module(module_name), class_name)
    defining = [name for name in _package_modules(subpackage) if _classes_defined(name, base_class)]
    assert defining, f"no {section} found under airflow_provider_qwen.{subpackage}"
    assert sorted(_modules(info, section)) == defining


def test_every_task_decorator_resolves_and_is_on_task(info: dict[str, Any]):
    """Each ``task-decorators`` entry names an importable function, and ``@task.<name>`` is it."""
    from airflow.sdk import task

    names = [entry["name"] for entry in info["task-decorators"]]
    assert names == ["qwen", "qwen_tool_call", "qwen_batch", "qwen_agent"]
    for entry in info["task-decorators"]:
        module, _, attribute = entry["class-name"].rpartition(".")
        function = getattr(importlib.import_module(module), attribute)
        assert callable(function), entry
        assert getattr(task, entry["name"]) is function, entry["name"]


def test_every_config_option_the_code_reads_is_declared(info: dict[str, Any]):
    """``config_value("<key>")`` reads ``[qwen] <key>``: each key is described in the provider info
    (``airflow config list`` shows it), and each described key is read somewhere."""
    read = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "config_value"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                read.add(node.args[0].value)
    assert read, "no config_value(...) call found"
    assert read == set(info["config"]["qwen"]["options"])


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
    # what `airflow providers get airflow-provider-qwen --full` and the UI's providers page show
    assert provider.data["documentation-url"] == DOCUMENTATION_URL


def test_providers_manager_sees_the_decorators_and_the_trigger(providers_manager: Any):
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    decorators = ProvidersManagerTaskRuntime().taskflow_decorators
    assert {"qwen", "qwen_tool_call", "qwen_batch", "qwen_agent"} <= set(decorators)
    ours = {t.trigger_class_name for t in providers_manager.trigger if t.package_name == DISTRIBUTION}
    assert ours == {"airflow_provider_qwen.triggers.qwen"}


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
