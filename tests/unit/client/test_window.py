"""A request over its model's context window is refused before sending, for free."""

from __future__ import annotations

import pytest

from airflow_provider_qwen.client.client import AsyncQwenClient, QwenClient
from airflow_provider_qwen.client.errors import InvalidRequestError
from airflow_provider_qwen.client.profiles import profile_for
from airflow_provider_qwen.client.request import build_request
from tests.support.client_helpers import BASE_URL, CHAT_URL, KEY, Recorder, ok


def test_every_listed_chat_model_knows_its_window():
    assert profile_for("alibaba/qwen3.8-max").context_window == 1_000_000
    assert profile_for("alibaba/qwen3.8-27b").context_window == 262_144
    assert profile_for("qwen-plus").context_window == 131_000
    assert profile_for("alibaba/qwen3-coder-480b-a35b-instruct").context_window == 262_000
    assert profile_for("acme/unknown").context_window is None


def test_a_prompt_over_the_window_is_refused_unsent(api):
    calls = Recorder(ok())
    api.post(CHAT_URL).mock(side_effect=calls)
    digits = "7" * 263_000  # one token per digit: over qwen3.8-27b's 262,144
    request = build_request(digits, model="alibaba/qwen3.8-27b")
    with QwenClient(KEY, base_url=BASE_URL) as qwen, pytest.raises(InvalidRequestError) as caught:
        qwen.send(request)
    assert calls.requests == []
    message = str(caught.value)
    assert "262144-token context window of model='alibaba/qwen3.8-27b'" in message
    assert "not sent" in message


def test_the_output_cap_counts_against_the_window(api):
    api.post(CHAT_URL).mock(side_effect=Recorder(ok()))
    request = build_request("7" * 200_000, model="alibaba/qwen3.8-27b", max_completion_tokens=70_000)
    with (
        QwenClient(KEY, base_url=BASE_URL) as qwen,
        pytest.raises(InvalidRequestError, match="lower max_comp"),
    ):
        qwen.send(request)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_async_client_refuses_too(api):
    calls = Recorder(ok())
    api.post(CHAT_URL).mock(side_effect=calls)
    request = build_request("7" * 263_000, model="alibaba/qwen3.8-27b")
    async with AsyncQwenClient(KEY, base_url=BASE_URL) as qwen:
        with pytest.raises(InvalidRequestError, match="context window"):
            await qwen.send(request)
    assert calls.requests == []


def test_a_small_request_is_not_counted_at_all(mocker, api):
    api.post(CHAT_URL).mock(side_effect=Recorder(ok()))
    counted = mocker.patch("airflow_provider_qwen.client.window.request_tokens")
    with QwenClient(KEY, base_url=BASE_URL) as qwen:
        qwen.send(build_request("hi", model="alibaba/qwen3.8-27b"))
    counted.assert_not_called()
