"""QwenHook over a mocked loopback service (respx): calls, connection test, prices, client lifecycle."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from airflow.sdk import Connection

from airflow_provider_qwen import CONN_FIELDS, UI_FIELD_BEHAVIOUR
from airflow_provider_qwen.client.client import AsyncQwenClient, QwenClient
from airflow_provider_qwen.client.errors import AuthenticationError, InvalidRequestError
from airflow_provider_qwen.client.pricing import Cost, Price, PriceTable
from airflow_provider_qwen.hooks.qwen import QwenHook
from airflow_provider_qwen.testing.schema import assert_valid_request

BASE_URL = "http://127.0.0.1:8123/v1"
CHAT_URL = f"{BASE_URL}/chat/completions"
BILLING_URL = "http://127.0.0.1:8123/v2/billing"
MODELS_URL = f"{BASE_URL}/models"
KEY = "sk-unit-hook-4e1d7a90b2"
MODEL = "alibaba/qwen3.7-max"


def make_hook(
    mocker: Any, *, host: str | None = BASE_URL, password: str | None = KEY, **extra: Any
) -> QwenHook:
    conn = Connection(
        conn_id="qwen_unit",
        conn_type="qwen",
        host=host,
        password=password,
        extra=json.dumps(extra) if extra else None,
    )
    mocker.patch.object(QwenHook, "get_connection", return_value=conn)
    mocker.patch.object(QwenHook, "aget_connection", new=mocker.AsyncMock(return_value=conn))
    return QwenHook(qwen_conn_id="qwen_unit")


def answer(fixture_path: Path, **headers: str) -> httpx.Response:
    body = json.loads((fixture_path / "qwen3.7-max-response.json").read_text())
    return httpx.Response(200, json=body, headers={"x-inference-id": "inf-42", **headers})


def checked(response: httpx.Response) -> Any:
    """A respx side effect that validates the chat body against the published schema first."""

    def side_effect(request: httpx.Request) -> httpx.Response:
        assert_valid_request(json.loads(request.content))
        return response

    return side_effect


@pytest.fixture
def service() -> Any:
    with respx.mock(using="httpx", assert_all_mocked=True, assert_all_called=False) as router:
        yield router


# -- chat / stream ---------------------------------------------------------------------------------


def test_chat_sends_one_valid_request_with_the_connection_settings(
    mocker: Any, service: Any, fixture_path: Path
):
    hook = make_hook(mocker, timeout=42, max_retries=0)
    route = service.post(CHAT_URL).mock(side_effect=checked(answer(fixture_path)))
    completion = hook.chat(
        "Hi! What do you think about mankind?", temperature=0.7, max_completion_tokens=4000
    )

    assert completion.content.startswith("Hi there!")
    assert completion.reasoning_content.startswith("Here's a thinking process")
    assert completion.usage.reasoning_tokens == 1244
    assert completion.cost == Cost(34776, Decimal("0.017388"), False)
    assert completion.model == MODEL
    assert completion.inference_id == "inf-42"
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["x-client-request-id"].startswith("qwen-")
    assert json.loads(request.content) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hi! What do you think about mankind?"}],
        "temperature": 0.7,
        "max_completion_tokens": 4000,
    }
    assert route.call_count == 1


def test_chat_uses_the_connection_default_model_unless_one_is_given(
    mocker: Any, service: Any, fixture_path: Path
):
    hook = make_hook(mocker, model="alibaba/qwen-plus")
    route = service.post(CHAT_URL).mock(side_effect=checked(answer(fixture_path)))
    assert hook.chat("a").model == "alibaba/qwen-plus"
    assert json.loads(route.calls.last.request.content)["model"] == "alibaba/qwen-plus"
    assert hook.chat("b", model=MODEL).model == MODEL
    assert json.loads(route.calls.last.request.content)["model"] == MODEL


def test_bad_parameters_never_reach_the_service(mocker: Any, service: Any):
    hook = make_hook(mocker)
    route = service.post(CHAT_URL).mock(return_value=httpx.Response(500))
    with pytest.raises(InvalidRequestError, match=r"temperature=2\.5"):
        hook.chat("hi", temperature=2.5)
    with pytest.raises(InvalidRequestError, match="unknown parameter 'temprature'"):
        hook.chat("hi", temprature=1)
    assert route.call_count == 0


def test_errors_from_the_service_carry_no_key(mocker: Any, service: Any):
    hook = make_hook(mocker, max_retries=0)
    service.post(CHAT_URL).mock(
        return_value=httpx.Response(401, json={"message": f"Invalid key {KEY}", "statusCode": 401})
    )
    with pytest.raises(AuthenticationError) as caught:
        hook.chat("hi")
    assert KEY not in str(caught.value)
    assert KEY not in repr(caught.value)


def sse(*events: dict[str, Any]) -> httpx.Response:
    text = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
    return httpx.Response(200, content=text.encode(), headers={"content-type": "text/event-stream"})


def chunk(delta: dict[str, Any] | None, finish: str | None = None, **top: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "c", "object": "chat.completion.chunk", "model": "qwen3.7-max", "choices": choices, **top}


STREAM = (
    chunk({"role": "assistant", "reasoning_content": "Thinking"}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo"}, finish="stop"),
    chunk(
        None,
        usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        meta={"usage": {"credits_used": 40, "usd_spent": 0.00002}},
    ),
)


def test_stream_yields_chunks_and_the_assembled_completion(mocker: Any, service: Any):
    hook = make_hook(mocker)
    route = service.post(CHAT_URL).mock(side_effect=checked(sse(*STREAM)))
    with hook.stream("hi") as stream:
        contents = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert contents == ["Hel", "lo"]
    assert stream.completion.content == "Hello"
    assert stream.completion.reasoning_content == "Thinking"
    assert stream.completion.cost == Cost(40, Decimal("0.00002"), False)
    body = json.loads(route.calls.last.request.content)
    assert body["stream"] is True


def test_achat_and_astream_use_the_async_client(mocker: Any, service: Any, fixture_path: Path):
    hook = make_hook(mocker)
    service.post(CHAT_URL).mock(side_effect=[answer(fixture_path), sse(*STREAM)])

    async def main() -> tuple[Any, Any]:
        completion = await hook.achat("hi")
        async with hook.astream("hi") as stream:
            async for _ in stream:
                pass
        return completion, stream.completion

    completion, streamed = asyncio.run(main())
    assert completion.cost.credits_used == 34776
    assert streamed.content == "Hello"


# -- clients ---------------------------------------------------------------------------------------


def test_get_client_is_cached_and_configured_from_the_connection(mocker: Any):
    hook = make_hook(mocker, model="alibaba/qwen-max", timeout=12, max_retries=4)
    client = hook.get_conn()
    assert isinstance(client, QwenClient)
    assert hook.get_conn() is client
    assert hook.get_conn() is client
    assert (client.base_url, client.model, client.max_retries) == (BASE_URL, "alibaba/qwen-max", 4)
    assert client.prices is hook.prices
    assert KEY not in repr(client)
    assert KEY not in repr(hook)
    assert repr(hook) == "QwenHook(qwen_conn_id='qwen_unit')"
    hook.close()
    assert hook.get_conn() is not client


def test_one_async_client_per_running_event_loop(mocker: Any):
    hook = make_hook(mocker)

    async def twice() -> tuple[AsyncQwenClient, AsyncQwenClient]:
        first = hook._loop_client()
        await asyncio.sleep(0)
        return first, hook._loop_client()

    first, second = asyncio.run(twice())
    assert first is second  # achat / astream share it on one loop
    assert isinstance(first, AsyncQwenClient)
    third, _ = asyncio.run(twice())
    assert third is not first  # a new loop gets its own client (connections are bound to a loop)


def test_an_owned_async_client_is_new_each_time_and_always_closed(mocker: Any):
    hook = make_hook(mocker)
    closed: list[AsyncQwenClient] = []
    real_aclose = AsyncQwenClient.aclose

    async def aclose(self: AsyncQwenClient) -> None:
        closed.append(self)
        await real_aclose(self)

    mocker.patch.object(AsyncQwenClient, "aclose", new=aclose)

    used: list[AsyncQwenClient] = []

    async def fail_inside() -> None:
        async with hook.async_client(max_retries=0) as second:
            used.append(second)
            raise RuntimeError("boom")

    async def main() -> tuple[AsyncQwenClient, AsyncQwenClient]:
        async with hook.async_client() as first:
            pass
        with pytest.raises(RuntimeError, match="boom"):
            await fail_inside()
        return first, used[0]

    first, second = asyncio.run(main())
    assert second.max_retries == 0  # overrides are constructor arguments
    assert first is not second
    assert closed == [first, second]  # closed on the way out, also when the block failed


def test_aclose_closes_the_client_of_the_running_loop(mocker: Any):
    hook = make_hook(mocker)

    async def main() -> bool:
        client = hook._loop_client()
        await hook.aclose()
        return hook._loop_client() is client

    assert asyncio.run(main()) is False


def test_the_async_path_reads_the_connection_without_the_sync_call(mocker: Any):
    conn = Connection(conn_id="qwen_unit", conn_type="qwen", host=BASE_URL, password=KEY)
    sync_get = mocker.patch.object(
        QwenHook, "get_connection", side_effect=AssertionError("sync call in a loop")
    )
    mocker.patch.object(QwenHook, "aget_connection", new=mocker.AsyncMock(return_value=conn))
    hook = QwenHook(qwen_conn_id="qwen_unit")

    async def main() -> str:
        async with hook.async_client() as client:
            return client.base_url

    assert asyncio.run(main()) == BASE_URL
    sync_get.assert_not_called()


# -- test_connection ---------------------------------------------------------------------------------


def test_test_connection_calls_billing_only(mocker: Any, service: Any):
    hook = make_hook(mocker)
    billing = service.get(BILLING_URL).mock(
        return_value=httpx.Response(200, json={"current_balance": 12.5, "currency": "USD"})
    )
    chat = service.post(CHAT_URL).mock(return_value=httpx.Response(500))
    ok, message = hook.test_connection()
    assert ok is True
    assert "12.5 USD" in message
    assert BASE_URL in message
    assert billing.call_count == 1
    assert billing.calls.last.request.headers["authorization"] == f"Bearer {KEY}"
    assert chat.call_count == 0


def test_test_connection_reports_a_refused_key_without_the_key(mocker: Any, service: Any):
    hook = make_hook(mocker)
    service.get(BILLING_URL).mock(return_value=httpx.Response(401, json={"message": f"Bad key {KEY}"}))
    ok, message = hook.test_connection()
    assert ok is False
    assert "401" in message
    assert "refused" in message
    assert KEY not in message


def test_test_connection_reports_a_server_error_without_retrying(mocker: Any, service: Any):
    hook = make_hook(mocker, max_retries=3)
    billing = service.get(BILLING_URL).mock(return_value=httpx.Response(503, text="<html>down</html>"))
    ok, message = hook.test_connection()
    assert ok is False
    assert "503" in message
    assert billing.call_count == 1  # the UI waits on this: no backoff loop


def test_test_connection_reports_an_answer_that_is_not_a_balance(mocker: Any, service: Any):
    hook = make_hook(mocker)
    service.get(BILLING_URL).mock(return_value=httpx.Response(200, text="<html>captive portal</html>"))
    ok, message = hook.test_connection()
    assert ok is False
    assert "not JSON" in message


def test_test_connection_reports_an_unreachable_host():
    with socket.socket() as sock:  # a loopback port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    hook = QwenHook.__new__(QwenHook)
    QwenHook.__init__(hook, qwen_conn_id="qwen_unit")
    conn = Connection(conn_id="qwen_unit", conn_type="qwen", host=f"http://127.0.0.1:{port}/v1", password=KEY)
    hook.get_connection = lambda conn_id: conn  # type: ignore[method-assign]
    ok, message = hook.test_connection()
    assert ok is False
    assert f"127.0.0.1:{port}" in message
    assert "APIConnectionError" in message
    assert KEY not in message


def test_test_connection_without_a_key_sends_nothing(mocker: Any, service: Any):
    hook = make_hook(mocker, password=None)
    billing = service.get(BILLING_URL).mock(return_value=httpx.Response(200, json={"current_balance": 1}))
    ok, message = hook.test_connection()
    assert ok is False
    assert "no API key" in message
    assert billing.call_count == 0


def test_test_connection_reports_a_bad_connection_instead_of_raising(mocker: Any):
    hook = make_hook(mocker, max_retries="many")
    ok, message = hook.test_connection()
    assert ok is False
    assert "'max_retries'='many'" in message


def test_test_connection_reports_a_missing_connection(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("AIRFLOW_CONN_QWEN_NOWHERE", raising=False)
    ok, message = QwenHook(qwen_conn_id="qwen_nowhere").test_connection()
    assert ok is False
    assert "qwen_nowhere" in message


# -- prices ----------------------------------------------------------------------------------------


def test_refresh_prices_merges_the_live_table_over_shipped_under_overrides(mocker: Any, service: Any):
    hook = make_hook(
        mocker,
        prices={MODEL: {"input": 9, "output": 9}, "my/local-model": {"input": 1, "output": 2}},
    )
    assert hook.prices.get(MODEL) == Price(Decimal(9), Decimal(9))  # the connection override, before refresh
    client = hook.get_conn()
    route = service.get(MODELS_URL).mock(
        return_value=httpx.Response(
            200,
            json={
                "object": "list",
                "data": [
                    {
                        "id": MODEL,
                        "object": "model",
                        "pricing": {
                            "input": {"price": 2.6, "per": 1000000},
                            "output": {"price": 7.8, "per": 1000000},
                            "cached_input": {"price": 0.52, "per": 1000000},
                        },
                    },
                    {
                        "id": "alibaba/qwen-turbo",
                        "pricing": {
                            "input": {"price": 0.1, "per": 1000},
                            "output": {"price": 0.2, "per": 1000},
                        },
                    },
                    {"id": "no/pricing"},
                ],
            },
        )
    )
    table = hook.refresh_prices()
    assert route.calls.last.request.url.params["include"] == "pricing"
    assert isinstance(table, PriceTable)
    assert hook.prices is table
    assert client.prices is table  # estimates of the live client use it too
    assert table.get(MODEL) == Price(Decimal(9), Decimal(9))  # the connection's override still wins
    assert table.get("alibaba/qwen-turbo") == Price(Decimal("100"), Decimal("200"))  # live, per 1M
    assert table.get("my/local-model") == Price(Decimal(1), Decimal(2))  # override kept
    assert table.get("alibaba/qwen-plus") == PriceTable().get("alibaba/qwen-plus")  # shipped kept


def test_setting_prices_reaches_the_async_clients(mocker: Any):
    hook = make_hook(mocker)
    table = PriceTable().with_overrides({MODEL: {"input": 1, "output": 1}})

    async def main() -> AsyncQwenClient:
        client = hook._loop_client()
        hook.prices = table
        return client

    assert asyncio.run(main()).prices is table


# -- the connection form -----------------------------------------------------------------------------


def test_ui_field_behaviour_matches_the_declarative_one():
    behaviour = QwenHook.get_ui_field_behaviour()
    assert behaviour == {
        "hidden_fields": UI_FIELD_BEHAVIOUR["hidden-fields"],
        "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
        "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
    }
    assert behaviour["relabeling"]["password"] == "API key"


def test_form_widgets_are_empty_without_wtforms(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "wtforms", None)  # as on plain Airflow 3.3: import fails
    assert QwenHook.get_connection_form_widgets() == {}


def test_form_widgets_under_the_3_0_api_server_mocks_match_conn_fields(monkeypatch: pytest.MonkeyPatch):
    """Airflow 3.0/3.1 build the form from these widgets with wtforms/FAB mocked (HookMetaService)."""
    from unittest.mock import MagicMock

    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService as Meta

    for name in (
        "wtforms",
        "wtforms.validators",
        "flask_babel",
        "flask_appbuilder",
        "flask_appbuilder.fieldwidgets",
    ):
        monkeypatch.setitem(sys.modules, name, MagicMock())
    monkeypatch.setattr(sys.modules["wtforms"], "StringField", Meta.MockStringField)
    monkeypatch.setattr(sys.modules["wtforms"], "IntegerField", Meta.MockIntegerField)
    monkeypatch.setattr(sys.modules["wtforms.validators"], "Optional", Meta.MockOptional)
    monkeypatch.setattr(sys.modules["flask_babel"], "lazy_gettext", lambda text: text)

    widgets = QwenHook.get_connection_form_widgets()
    assert set(widgets) == set(CONN_FIELDS)
    params = {name: field.param.dump() for name, field in widgets.items()}
    for name, spec in CONN_FIELDS.items():
        assert params[name]["schema"]["title"] == spec["label"]
        assert params[name]["description"] == spec["description"]
    assert params["model"]["value"] == "alibaba/qwen3.7-max"
    assert params["timeout"]["value"] == "600"
    assert params["max_retries"]["value"] == 2
    assert params["prices"]["value"] is None
    assert params["max_retries"]["schema"]["type"] == ["integer", "null"]
    assert params["model"]["schema"]["type"] == ["string", "null"]
