"""QwenChatOperator: result shapes, streaming, truncation/refusal, cost XCom on every outcome."""

from __future__ import annotations

from decimal import Decimal
from unittest import mock

import pytest

from airflow_provider_qwen.client.errors import (
    BudgetExceededError,
    InvalidRequestError,
    QwenError,
    ServerError,
)
from airflow_provider_qwen.client.models import ChatCompletionChunk
from airflow_provider_qwen.operators import QwenChatOperator
from airflow_provider_qwen.operators.base import QwenBaseOperator
from airflow_provider_qwen.operators.chat import StreamProgress
from tests.support.operator_fakes import FakeTI, answer, run, with_client


def test_returns_text_and_pushes_cost_with_try_number(mocker):
    client = with_client(mocker, QwenBaseOperator, answer("Bonjour"))
    op = QwenChatOperator(
        task_id="chat", prompt="Say hi", system_prompt="Be brief", temperature=0.2, max_completion_tokens=50
    )
    result, ti = run(op, FakeTI(try_number=3))
    assert result == "Bonjour"
    body = client.bodies[0]
    assert body["messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Say hi"},
    ]
    assert body["temperature"] == 0.2
    assert body["max_completion_tokens"] == 50
    assert body["model"] == "alibaba/qwen3.7-max"
    assert "stream" not in body
    cost = ti.pushed["qwen_cost"]
    assert cost["requests"] == 1
    assert cost["try_number"] == 3
    assert Decimal(cost["usd_spent"]) == Decimal("0.001")
    assert cost["credits_used"] == 2000


def test_message_history_then_prompt(mocker):
    client = with_client(mocker, QwenBaseOperator, answer("4"))
    history = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    run(QwenChatOperator(task_id="chat", messages=history, prompt="and 2*2?", model="alibaba/other"))
    assert client.bodies[0]["messages"][-1] == {"role": "user", "content": "and 2*2?"}
    assert client.bodies[0]["messages"][:2] == history
    assert client.bodies[0]["model"] == "alibaba/other"


def test_include_reasoning_returns_both_parts(mocker):
    with_client(mocker, QwenBaseOperator, answer("42", reasoning="6*7"))
    result, _ = run(QwenChatOperator(task_id="chat", prompt="?", include_reasoning=True))
    assert result == {"content": "42", "reasoning_content": "6*7"}


def test_stream_returns_same_result_and_records_cost(mocker):
    client = with_client(mocker, QwenBaseOperator, answer("streamed text", reasoning="hmm"))
    op = QwenChatOperator(task_id="chat", prompt="?", stream=True, include_reasoning=True)
    result, ti = run(op)
    assert result == {"content": "streamed text", "reasoning_content": "hmm"}
    assert client.bodies[0]["stream"] is True
    assert client.bodies[0]["stream_options"] == {"include_usage": True}
    assert ti.pushed["qwen_cost"]["requests"] == 1


def test_stream_progress_logs_at_most_every_two_seconds(mocker):
    clock = mocker.patch("airflow_provider_qwen.operators.chat.time.monotonic", return_value=100.0)
    log = mock.Mock()
    progress = StreamProgress(log)
    piece = ChatCompletionChunk.model_validate({"choices": [{"delta": {"content": "abcd"}}]})
    for now in (100.5, 101.0, 101.9, 102.1, 103.0, 104.2):
        clock.return_value = now
        progress.update(piece)
    assert log.info.call_count == 2  # at 102.1 and 104.2, not per chunk
    message, chars, reasoning, rate = log.info.call_args_list[0].args
    assert "characters so far" in message
    assert chars == 16
    assert reasoning == 0
    assert rate == pytest.approx(4 / 2.1)
    progress.done(answer("x"))
    assert "tokens/s" in log.info.call_args.args[0]


def test_truncation_warns_by_default(mocker):
    with_client(mocker, QwenBaseOperator, answer("cut sh", finish_reason="length"))
    log = mocker.patch.object(QwenChatOperator, "log", new_callable=mock.PropertyMock).return_value
    result, _ = run(QwenChatOperator(task_id="chat", prompt="?"))
    assert result == "cut sh"
    assert "finish_reason='length'" in log.warning.call_args.args[0]


def test_truncation_fails_when_asked_and_cost_is_still_pushed(mocker):
    with_client(mocker, QwenBaseOperator, answer("cut sh", finish_reason="length"))
    ti = FakeTI(try_number=2)
    with pytest.raises(QwenError, match="cut at the token limit"):
        run(QwenChatOperator(task_id="chat", prompt="?", fail_on_truncation=True), ti)
    assert ti.pushed["qwen_cost"]["requests"] == 1
    assert ti.pushed["qwen_cost"]["try_number"] == 2
    assert Decimal(ti.pushed["qwen_cost"]["usd_spent"]) == Decimal("0.001")


def test_refusal_is_an_error_that_says_so(mocker):
    with_client(mocker, QwenBaseOperator, answer(None, refusal="I can't help with that"))
    ti = FakeTI()
    with pytest.raises(QwenError, match="the model refused: I can't help with that"):
        run(QwenChatOperator(task_id="chat", prompt="?"), ti)
    assert ti.pushed["qwen_cost"]["requests"] == 1


def test_failed_request_still_pushes_a_cost_record(mocker):
    with_client(mocker, QwenBaseOperator, ServerError("boom", status_code=500))
    ti = FakeTI()
    with pytest.raises(ServerError):
        run(QwenChatOperator(task_id="chat", prompt="?"), ti)
    assert ti.pushed["qwen_cost"]["requests"] == 0
    assert Decimal(ti.pushed["qwen_cost"]["usd_spent"]) == 0


def test_do_xcom_push_false_pushes_nothing(mocker):
    with_client(mocker, QwenBaseOperator, answer("hi"))
    result, ti = run(QwenChatOperator(task_id="chat", prompt="?", do_xcom_push=False))
    assert result == "hi"
    assert ti.pushed == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": 5}, "temperature=5"),
        ({"top_logprobs": 3}, "requires logprobs=True"),
        ({"reasoning_effort": "max"}, "reasoning_effort"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "at most 4"),
        ({"max_cost_usd": "lots"}, "max_cost_usd='lots' is not a number"),
    ],
)
def test_static_parameters_fail_at_construction(kwargs, message):
    with pytest.raises(InvalidRequestError, match=message):
        QwenChatOperator(task_id="chat", prompt="?", **kwargs)


def test_needs_a_prompt_or_messages():
    with pytest.raises(InvalidRequestError, match="needs a prompt or messages"):
        QwenChatOperator(task_id="chat")


def test_templated_parameter_is_validated_after_rendering_before_any_request(mocker):
    client = with_client(mocker, QwenBaseOperator, answer("never"))
    op = QwenChatOperator(task_id="chat", prompt="?", temperature="{{ params.temp }}")  # no error yet
    ti = FakeTI()
    with pytest.raises(InvalidRequestError, match="temperature"):
        run(op, ti, params={"temp": "9"})
    assert client.requests == []
    assert ti.pushed["qwen_cost"]["requests"] == 0


def test_templated_parameter_renders_to_a_valid_value(mocker):
    client = with_client(mocker, QwenBaseOperator, answer("fine"))
    op = QwenChatOperator(task_id="chat", prompt="?", temperature="{{ params.temp }}")
    run(op, params={"temp": "0.7"})
    assert client.bodies[0]["temperature"] == 0.7


def test_budget_refuses_before_sending(mocker):
    client = with_client(mocker, QwenBaseOperator, answer("never"))
    op = QwenChatOperator(task_id="chat", prompt="?", max_completion_tokens=100_000, max_cost_usd=0.01)
    with pytest.raises(BudgetExceededError):
        run(op)
    assert client.requests == []
