"""The model's context window bounds the batch: the default ``max_input_tokens`` comes from it, an item
over it is split without being asked, a value over it is refused; bad rendered parameters fail the
task once, before any request, without retries."""

from __future__ import annotations

import dataclasses

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_qwen.client import profiles
from airflow_provider_qwen.client.errors import InvalidRequestError
from airflow_provider_qwen.client.request import build_request
from airflow_provider_qwen.client.tokens import text_tokens
from airflow_provider_qwen.operators import QwenBatchOperator
from airflow_provider_qwen.operators.batch_checks import BatchArgumentError, input_limit
from tests.support.batch_fakes import BatchTI, user_text, with_async_client
from tests.support.operator_fakes import MODEL, answer, run


@pytest.fixture(autouse=True)
def storage(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", f"file://{tmp_path}")


@pytest.fixture
def small_window(monkeypatch):
    """The default model with a 4096-token window, so a window's worth of text is small."""
    real = profiles.profile_for

    def profile_for(model: str):
        found = real(model)
        return dataclasses.replace(found, context_window=4096) if model == MODEL else found

    monkeypatch.setattr(profiles, "profile_for", profile_for)


def batch(**kwargs) -> QwenBatchOperator:
    kwargs.setdefault("task_id", "batch")
    kwargs.setdefault("prompt", "Summarise{% if chunk %} part {{ chunk.index }}{% endif %}: {{ item }}")
    kwargs.setdefault("progress_interval", 60)
    return QwenBatchOperator(**kwargs)


def test_the_default_limit_is_the_window_less_the_output_cap_and_a_margin():
    request = build_request("x", model="alibaba/qwen3.7-max", max_completion_tokens=1000)
    assert input_limit("t", None, request) == 1_000_000 - 1000 - 20_000
    unbounded = build_request("x", model="alibaba/qwen3.8-27b")
    assert input_limit("t", None, unbounded) == 262_144 - 32_768 - 5242  # room kept for the answer
    assert input_limit("t", None, build_request("x", model="someone/unknown")) is None  # no window known
    assert input_limit("t", 5000, request) == 5000


def test_an_item_over_the_window_is_split_without_max_input_tokens(mocker, small_window):
    def reply(request):
        text = user_text(request)
        return answer("combined" if text.startswith("The text was too long") else "partial")

    client = with_async_client(mocker, reply)
    long_text = "\n\n".join(f"Paragraph {n}. " + "Words go here. " * 30 for n in range(40))
    assert text_tokens(long_text) > 4096
    result, ti = run(batch(items=[long_text, "short"], max_completion_tokens=500), BatchTI())
    assert result == ["combined", "partial"]
    assert ti.pushed["qwen_batch"]["chunked"] == 1
    limit = 4096 - 500 - 1024
    bodies = client.bodies
    assert len(bodies) > 3
    assert all(len(b["messages"][-1]["content"]) < 4 * limit for b in bodies)
    from airflow_provider_qwen.client.tokens import request_tokens

    assert all(request_tokens(r) <= limit for r in client.requests)


def test_max_input_tokens_over_the_window_is_refused_when_the_dag_is_parsed():
    with pytest.raises(
        InvalidRequestError,
        match=r"max_input_tokens=300000 is over"
        r" the 262144-token context window of model='alibaba/qwen3\.8-27b'",
    ):
        batch(items=["a"], model="alibaba/qwen3.8-27b", max_input_tokens=300_000)
    with pytest.raises(InvalidRequestError, match=r"max_input_tokens=262000 plus max_completion_tokens=1000"):
        batch(items=["a"], model="alibaba/qwen3.8-27b", max_input_tokens=262_000, max_completion_tokens=1000)


def test_max_input_tokens_over_the_window_of_a_rendered_model_fails_once_without_retries(mocker):
    client = with_async_client(mocker)
    op = batch(items=["a", "b"], model="{{ params.model }}", max_input_tokens=300_000)
    with pytest.raises(BatchArgumentError, match="max_input_tokens=300000 is over the 262144-token") as info:
        run(op, BatchTI(), params={"model": "alibaba/qwen3.8-27b"})
    assert isinstance(info.value, AirflowFailException)
    assert client.requests == []


def test_max_input_tokens_over_the_window_of_the_connections_model_fails_at_execute(mocker):
    client = with_async_client(mocker)  # the connection's default model: qwen3.7-max, 1M tokens
    op = batch(items=["a"], max_input_tokens=2_000_000)  # the model is not known when parsed
    with pytest.raises(
        BatchArgumentError, match=r"1000000-token context window of model='alibaba/qwen3\.7-max'"
    ):
        run(op, BatchTI())
    assert client.requests == []


@pytest.mark.parametrize(
    ("params", "kwargs", "message"),
    [
        ({"t": "hot"}, {"temperature": "{{ params.t }}"}, "temperature='hot'"),
        ({"n": "-5"}, {"max_completion_tokens": "{{ params.n }}"}, "max_completion_tokens"),
        ({"n": "2000000"}, {"max_completion_tokens": "{{ params.n }}"}, "leaves no room for a prompt"),
    ],
)
def test_a_bad_rendered_parameter_fails_the_task_once_before_any_request(mocker, params, kwargs, message):
    client = with_async_client(mocker)
    ti = BatchTI()
    with pytest.raises(BatchArgumentError, match=message) as info:
        run(batch(items=[f"doc {i}" for i in range(50)], **kwargs), ti, params=params)
    assert isinstance(info.value, AirflowFailException)  # not retried: a retry renders the same value
    assert isinstance(info.value, InvalidRequestError)
    assert client.requests == []
    assert "qwen_batch" not in ti.pushed  # not 50 item failures: one error, before the batch


def test_items_rendering_to_no_list_fail_once_without_retries(mocker):
    with_async_client(mocker)
    with pytest.raises(BatchArgumentError, match="not a JSON list"):
        run(batch(items="{{ params.docs }}"), BatchTI(), params={"docs": "nope"})
