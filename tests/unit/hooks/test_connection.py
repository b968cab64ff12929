"""The ``qwen`` connection: JSON and URI forms, base URL rules, validated extras, a masked key."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from airflow.sdk import Connection

from airflow_provider_qwen import DEFAULT_BASE_URL, DEFAULT_MAX_RETRIES, DEFAULT_MODEL, DEFAULT_TIMEOUT
from airflow_provider_qwen.client.pricing import Price
from airflow_provider_qwen.hooks.connection import QwenConnectionConfig, resolve_base_url
from airflow_provider_qwen.hooks.qwen import QwenHook

KEY = "sk-unit-conn-5f0c9e2a7b"


def config_of(**fields: Any) -> QwenConnectionConfig:
    extra = fields.pop("extra", None)
    if isinstance(extra, dict):
        extra = json.dumps(extra)
    return QwenConnectionConfig.from_connection(
        Connection(conn_id="qwen_test", conn_type="qwen", extra=extra, **fields)
    )


def refusal(**fields: Any) -> str:
    with pytest.raises(ValueError, match=r"^connection 'qwen_test': ") as caught:
        config_of(**fields)
    return str(caught.value)


@pytest.mark.parametrize(
    ("host", "port", "schema", "expected"),
    [
        (None, None, None, DEFAULT_BASE_URL),
        ("", 8000, "v1", DEFAULT_BASE_URL),
        ("https://api.aimlapi.com/v1", None, None, "https://api.aimlapi.com/v1"),
        ("https://api.aimlapi.com/v1/", None, None, "https://api.aimlapi.com/v1"),
        ("http://127.0.0.1:8000/v1", None, None, "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1/v1", 8000, None, "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:9000/v1", 8000, None, "http://127.0.0.1:9000/v1"),  # the URL's own port wins
        ("https://gateway.example", None, None, "https://gateway.example"),  # a full URL is taken literally
        ("https://gateway.example", None, "api/v1", "https://gateway.example/api/v1"),
        ("api.aimlapi.com", None, None, "https://api.aimlapi.com/v1"),
        ("api.aimlapi.com", None, "https", "https://api.aimlapi.com/v1"),
        ("api.aimlapi.com", None, "v2", "https://api.aimlapi.com/v2"),
        ("gw.example", 8443, "http", "http://gw.example:8443/v1"),
        ("127.0.0.1", 8000, "v1", "http://127.0.0.1:8000/v1"),
        ("localhost", 8000, None, "http://localhost:8000/v1"),
        ("[::1]", 8000, None, "http://[::1]:8000/v1"),
        ("127.0.0.1:8000/v1", None, None, "http://127.0.0.1:8000/v1"),
    ],
)
def test_base_url_rules(host: str | None, port: int | None, schema: str | None, expected: str):
    assert resolve_base_url(host, port, schema) == expected


@pytest.mark.parametrize("host", ["ftp://files.example/v1", "https://", "http://host:notaport/v1"])
def test_bad_hosts_are_refused_naming_the_host(host: str):
    with pytest.raises(ValueError, match="host=") as caught:
        resolve_base_url(host)
    assert repr(host) in str(caught.value)


def test_defaults_without_extras():
    config = config_of(password=KEY)
    assert (config.base_url, config.model, config.timeout, config.max_retries) == (
        DEFAULT_BASE_URL,
        DEFAULT_MODEL,
        DEFAULT_TIMEOUT,
        DEFAULT_MAX_RETRIES,
    )
    assert config.api_key == KEY
    assert config.prices.get(DEFAULT_MODEL) == Price(Decimal("2.60"), Decimal("7.80"), Decimal("0.52"))


def test_the_key_is_not_in_the_config_repr():
    config = config_of(password=KEY, extra={"model": "alibaba/qwen-plus"})
    assert KEY not in repr(config)
    assert "alibaba/qwen-plus" in repr(config)


def test_extras_as_json_values_and_as_uri_strings():
    native = config_of(extra={"model": "alibaba/qwen-plus", "timeout": 30, "max_retries": 5})
    strings = config_of(extra={"model": "alibaba/qwen-plus", "timeout": "30", "max_retries": "5"})
    assert (native.model, native.timeout, native.max_retries) == ("alibaba/qwen-plus", 30.0, 5)
    assert native == strings


def test_the_3_0_form_prefixed_extras_are_read():
    config = config_of(extra={"extra__qwen__model": "alibaba/qwen-max", "extra__qwen__timeout": "12.5"})
    assert (config.model, config.timeout) == ("alibaba/qwen-max", 12.5)


def test_empty_extras_mean_defaults():
    config = config_of(extra={"model": "", "timeout": None, "prices": ""})
    assert (config.model, config.timeout, config.price_overrides) == (DEFAULT_MODEL, DEFAULT_TIMEOUT, {})


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"timeout": "soon"}, ["'timeout'='soon'", "seconds > 0"]),
        ({"timeout": 0}, ["'timeout'=0", "seconds > 0"]),
        ({"timeout": "inf"}, ["'timeout'='inf'"]),
        ({"timeout": True}, ["'timeout'=True"]),
        ({"max_retries": 11}, ["'max_retries'=11", "0 to 10"]),
        ({"max_retries": "two"}, ["'max_retries'='two'", "0 to 10"]),
        ({"max_retries": -1}, ["'max_retries'=-1"]),
        ({"max_retries": 1.5}, ["'max_retries'=1.5"]),
        ({"model": 7}, ["'model'=7", "model id"]),
        ({"prices": "{not json"}, ["'prices'='{not json'", "not valid JSON"]),
        ({"prices": "[1, 2]"}, ["'prices'=[1, 2]"]),
        ({"prices": {"m": 3}}, ["'prices'", "'m': 3"]),
        ({"prices": {"m": {"input": 1}}}, ["'prices'", "'input' and 'output'"]),
        ({"prices": '{"m": {"input": -1, "output": 1}}'}, ["'prices'", "numbers >= 0"]),
    ],
)
def test_bad_extras_are_refused_naming_the_field_and_value(extra: dict[str, Any], expected: list[str]):
    message = refusal(extra=extra)
    assert message.startswith("connection 'qwen_test': ")
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_an_extra_that_is_not_a_json_object_is_refused():
    assert "not valid JSON" in refusal(extra="{oops")
    assert "must be a JSON object" in refusal(extra="[1]")


@pytest.mark.parametrize(
    "prices", [{"my/model": {"input": 1, "output": 2}}, '{"my/model": {"input": 1, "output": 2}}']
)
def test_price_overrides_as_object_or_json_string(prices: Any):
    config = config_of(extra={"prices": prices})
    assert config.prices.get("my/model") == Price(Decimal(1), Decimal(2))
    assert config.prices.get(DEFAULT_MODEL) is not None  # the shipped table is kept underneath


def test_unknown_extras_are_reported_by_name():
    config = config_of(extra={"timout": 5, "model": "m"})
    assert config.ignored_extras == ("timout",)


# -- from the environment, as tasks and `airflow connections test` see them ---------------------------


def test_connection_from_json_env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_QWEN_DEFAULT",
        json.dumps(
            {
                "conn_type": "qwen",
                "host": "http://127.0.0.1:8123/v1",
                "password": KEY,
                "extra": {
                    "model": "alibaba/qwen-plus",
                    "timeout": 45,
                    "max_retries": 1,
                    "prices": {"alibaba/qwen-plus": {"input": 0.5, "output": 1.5}},
                },
            }
        ),
    )
    hook = QwenHook()
    assert hook.qwen_conn_id == "qwen_default"
    assert hook.base_url == "http://127.0.0.1:8123/v1"
    assert (hook.default_model, hook.timeout, hook.max_retries) == ("alibaba/qwen-plus", 45.0, 1)
    assert hook.prices.get("alibaba/qwen-plus") == Price(Decimal("0.5"), Decimal("1.5"))
    assert hook.config.api_key == KEY


def test_connection_from_uri_env_with_scheme_in_schema(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_QWEN_DEFAULT",
        "qwen://:sk-uri%2Fkey%3D@api.aimlapi.com/https?model=alibaba%2Fqwen-max&timeout=30&max_retries=4",
    )
    hook = QwenHook()
    assert hook.base_url == "https://api.aimlapi.com/v1"
    assert (hook.default_model, hook.timeout, hook.max_retries) == ("alibaba/qwen-max", 30.0, 4)
    assert hook.config.api_key == "sk-uri/key="


def test_connection_from_uri_env_for_a_loopback_server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AIRFLOW_CONN_QWEN_LOCAL", "qwen://:test-key@127.0.0.1:8765/v1")
    hook = QwenHook(qwen_conn_id="qwen_local")
    assert hook.base_url == "http://127.0.0.1:8765/v1"
    assert hook.config.api_key == "test-key"


def test_connection_uri_produced_by_airflow_round_trips(monkeypatch: pytest.MonkeyPatch):
    conn = Connection(
        conn_id="qwen_default",
        conn_type="qwen",
        host="http://127.0.0.1:8123/v1",
        password=KEY,
        extra=json.dumps({"timeout": 7}),
    )
    monkeypatch.setenv("AIRFLOW_CONN_QWEN_DEFAULT", conn.get_uri())
    hook = QwenHook()
    assert (hook.base_url, hook.timeout, hook.config.api_key) == ("http://127.0.0.1:8123/v1", 7.0, KEY)


def test_the_hook_reads_the_connection_lazily_and_once(mocker: Any):
    get = mocker.patch.object(
        QwenHook, "get_connection", return_value=Connection(conn_id="c", conn_type="qwen", password=KEY)
    )
    hook = QwenHook(qwen_conn_id="c")
    get.assert_not_called()  # constructing a hook (DAG parsing) touches no connection
    assert hook.default_model == DEFAULT_MODEL
    assert hook.base_url == DEFAULT_BASE_URL
    get.assert_called_once_with("c")


def test_the_key_is_registered_with_the_secrets_masker(mocker: Any):
    key = "sk-unit-mask-9d2e71c4aa"
    mocker.patch.object(
        QwenHook, "get_connection", return_value=Connection(conn_id="c", conn_type="qwen", password=key)
    )
    from airflow.sdk.log import redact

    assert redact(f"Authorization: Bearer {key}") == f"Authorization: Bearer {key}"  # not known yet
    QwenHook(qwen_conn_id="c").config  # noqa: B018
    assert redact(f"Authorization: Bearer {key}") == "Authorization: Bearer ***"


def test_the_key_is_masked_by_the_task_log_processor(mocker: Any):
    key = "sk-unit-mask-log-3c8b0f"
    mocker.patch.object(
        QwenHook, "get_connection", return_value=Connection(conn_id="c", conn_type="qwen", password=key)
    )
    from airflow.sdk.log import mask_logs  # the structlog processor of task logs

    QwenHook(qwen_conn_id="c").config  # noqa: B018
    event = mask_logs(
        None, "info", {"event": f"calling with key {key}", "headers": {"Authorization": f"Bearer {key}"}}
    )
    assert event == {"event": "calling with key ***", "headers": {"Authorization": "***"}}


def test_unknown_extras_are_logged_without_values(mocker: Any):
    conn = Connection(conn_id="c", conn_type="qwen", password=KEY, extra=json.dumps({"timout": "secret-ish"}))
    mocker.patch.object(QwenHook, "get_connection", return_value=conn)
    log = mocker.patch.object(QwenHook, "log", new=mocker.MagicMock())
    QwenHook(qwen_conn_id="c").config  # noqa: B018
    log.warning.assert_called_once()
    text = " ".join(str(arg) for arg in log.warning.call_args.args)
    assert "timout" in text
    assert "secret-ish" not in text


def test_a_bad_connection_raises_when_used_naming_the_field(mocker: Any):
    conn = Connection(conn_id="c", conn_type="qwen", password=KEY, extra=json.dumps({"max_retries": 99}))
    mocker.patch.object(QwenHook, "get_connection", return_value=conn)
    with pytest.raises(ValueError, match="'max_retries'=99"):
        QwenHook(qwen_conn_id="c").get_conn()
