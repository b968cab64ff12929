"""CallInfo and Charge: the typed outcome of a call, set once, and round-tripping through JSON."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from airflow_provider_qwen.client.errors import APITimeoutError, Charge, StreamError
from airflow_provider_qwen.client.models import CallInfo, ChatCompletion
from airflow_provider_qwen.client.pricing import Cost

MODEL = "alibaba/qwen3.7-max"


def _completion() -> ChatCompletion:
    completion = ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1",
            "model": "qwen3.7-max",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 19, "completion_tokens": 3, "total_tokens": 22},
            "meta": {"usage": {"credits_used": 7, "usd_spent": "0.0000035"}},
            "vendor_extra": {"kept": True},
        }
    )
    completion.call = CallInfo(MODEL, "inf-1", "qwen-abc", Cost(7, Decimal("0.0000035")), unconfirmed_tries=1)
    return completion


def test_a_completion_and_its_call_info_round_trip_through_json():
    completion = _completion()
    again = ChatCompletion.from_dict(json.loads(json.dumps(completion.to_dict())))
    assert again.call == completion.call
    assert (again.model, again.inference_id, again.client_request_id) == (MODEL, "inf-1", "qwen-abc")
    assert again.cost == Cost(7, Decimal("0.0000035"), False)
    assert again.unconfirmed_tries == 1
    assert again.to_wire() == completion.to_wire()
    assert again.to_wire()["vendor_extra"] == {"kept": True}
    assert "call" not in completion.to_wire()  # not a wire field


def test_a_wire_key_named_call_cannot_forge_call_info():
    forged = ChatCompletion.model_validate(
        {
            "choices": [{"message": {"content": "x"}}],
            "call": {"requested_model": "evil", "cost": {"usd_spent": "9"}},
        }
    )
    assert forged.call is None
    assert forged.model == ""


@pytest.mark.parametrize(
    "charge",
    [
        Charge(),
        Charge(reported=Cost(2000, Decimal("0.001"))),
        Charge(unconfirmed_tries=2),
        Charge(partial=_completion(), unconfirmed_tries=1, reported_by_service=True),
    ],
)
def test_a_charge_round_trips_through_json(charge: Charge):
    again = Charge.from_dict(json.loads(json.dumps(charge.to_dict())))
    assert again.reported == charge.reported
    assert again.unconfirmed_tries == charge.unconfirmed_tries
    assert again.reported_by_service == charge.reported_by_service
    if charge.partial is None:
        assert again.partial is None
    else:
        assert again.partial is not None
        assert again.partial.to_dict() == charge.partial.to_dict()


def test_an_error_carries_its_charge_from_construction():
    error = APITimeoutError("no answer", charge=Charge(unconfirmed_tries=3))
    assert error.unconfirmed_tries == 3
    with pytest.raises(AttributeError):
        error.charge.unconfirmed_tries = 4  # type: ignore[misc]  # frozen
    cut = StreamError("cut", charge=Charge(partial=_completion()))
    assert cut.partial is cut.charge.partial
    assert APITimeoutError("x").charge == Charge()


@pytest.mark.parametrize(
    "meta", [{"usd_spent": "-5"}, {"usd_spent": "0.001", "credits_used": -3}, {"credits_used": -3}]
)
def test_an_impossible_reported_cost_is_not_taken(meta: dict):
    completion = ChatCompletion.model_validate(
        {"choices": [{"message": {"content": "x"}}], "meta": {"usage": meta}}
    )
    assert completion.reported_cost is None  # the client then estimates, flagged
    assert Cost.from_headers({"x-aimlapi-usd-spent": "-5"}) is None


def test_a_stream_answered_with_something_else_keeps_what_its_headers_say_was_paid(api):
    import httpx

    from airflow_provider_qwen.client.client import QwenClient
    from airflow_provider_qwen.client.errors import InvalidResponseError

    paid = {"x-aimlapi-credits-used": "1000", "x-aimlapi-usd-spent": "0.0005"}
    api.post("http://127.0.0.1:9/v1/chat/completions").mock(
        return_value=httpx.Response(200, headers={"content-type": "text/plain", **paid}, content=b"oops")
    )
    with (
        QwenClient("sk-x", base_url="http://127.0.0.1:9/v1") as client,
        pytest.raises(InvalidResponseError) as caught,
    ):
        client.stream("hi").get_final_completion()
    assert caught.value.charge.reported == Cost(1000, Decimal("0.0005"))
