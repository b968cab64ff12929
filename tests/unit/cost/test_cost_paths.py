"""Money the service may charge without reporting it: cut streams, tries that failed after being sent.

Client tests run QwenClient/AsyncQwenClient on respx; operator tests put a real client behind the
fake hook, so the whole path (client retry loop -> completion or error -> TaskCost) is exercised.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import httpx
import pytest

from airflow_provider_qwen.calls import Calls
from airflow_provider_qwen.client.client import AsyncQwenClient, QwenClient
from airflow_provider_qwen.client.errors import (
    APIConnectionError,
    APITimeoutError,
    Charge,
    ServerError,
    StreamError,
)
from airflow_provider_qwen.client.estimate import ANSWER_FRAMING_TOKENS, TOOL_CALL_FRAMING_TOKENS
from airflow_provider_qwen.client.models import ChatCompletion
from airflow_provider_qwen.client.pricing import Cost, PriceTable, credits_from_usd, usd_text
from airflow_provider_qwen.client.request import build_request
from airflow_provider_qwen.client.tokens import request_tokens, text_tokens
from airflow_provider_qwen.cost.budget import worst_case_usd
from airflow_provider_qwen.cost.record import CostTotals
from airflow_provider_qwen.cost.task import TaskCost
from airflow_provider_qwen.operators.base import QwenBaseOperator
from airflow_provider_qwen.operators.chat import QwenChatOperator
from tests.support.client_helpers import (
    BASE_URL,
    CHAT_URL,
    KEY,
    MODEL,
    CutStream,
    Recorder,
    Sleeps,
    bind,
    chunk,
    completion,
    cut_sse,
    ok,
    sse,
)
from tests.support.operator_fakes import FakeHook, FakeTI, run

PRICES = PriceTable()
PRICE = PRICES.get(MODEL)
REPORTED = Decimal("0.00013")  # what client_helpers.completion() reports: 260 credits
USAGE = {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}
USAGE_CHUNK = {"id": "chatcmpl-s", "choices": [], "usage": USAGE}


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def qwen(sleeps) -> QwenClient:
    with QwenClient(KEY, base_url=BASE_URL, retry=sleeps.policy()) as client:
        yield client


def answers(api, *replies) -> Recorder:
    calls = Recorder(*replies)
    api.post(CHAT_URL).mock(side_effect=calls)
    return calls


def cut_body() -> httpx.Response:
    """A 200 whose JSON body is cut mid-transfer (the server finished and charged it)."""
    data = json.dumps(completion()).encode()
    return httpx.Response(
        200,
        stream=CutStream(data[: len(data) // 2]),
        headers={"content-type": "application/json", "x-inference-id": "inf-cut"},
    )


def request_for(op: QwenChatOperator):
    return op.build_request(op.rendered_messages())


def behind_hook(mocker, client) -> None:
    mocker.patch.object(QwenBaseOperator, "hook", new=FakeHook(client))


def failed_run(op: QwenChatOperator, error: type[Exception]) -> tuple[dict, Exception]:
    """Run ``op`` expecting ``error``: the ``qwen_cost`` record the failed try pushed, and the error."""
    ti = FakeTI()
    with pytest.raises(error) as caught:
        run(op, ti)
    return ti.pushed["qwen_cost"], caught.value


# -- the client counts the tries that failed after sending ---------------------------------


@pytest.mark.parametrize("failure", [httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError])
def test_a_retried_try_that_failed_after_sending_is_counted_on_the_answer(api, qwen, failure):
    calls = answers(api, failure, ok())
    answer = qwen.chat("hi")
    assert len(calls.requests) == 2
    assert answer.unconfirmed_tries == 1
    assert answer.cost.usd_spent == REPORTED  # the answer's own cost stays exact


def test_a_body_cut_mid_transfer_is_retried_and_counted(api, qwen):
    calls = answers(api, cut_body(), ok())
    assert qwen.chat("hi").unconfirmed_tries == 1
    assert len(calls.requests) == 2


@pytest.mark.parametrize("failure", [httpx.ConnectError, httpx.ConnectTimeout, httpx.WriteError])
def test_failures_before_the_request_was_sent_are_not_counted(api, qwen, failure):
    answers(api, failure, ok())
    assert qwen.chat("hi").unconfirmed_tries == 0


def test_error_statuses_are_not_counted(api, qwen):
    answers(api, httpx.Response(503, json={"message": "busy"}), ok())
    assert qwen.chat("hi").unconfirmed_tries == 0


def test_the_final_error_counts_every_try_that_failed_after_sending(api, qwen):
    calls = answers(api, httpx.ReadTimeout, httpx.ConnectError, httpx.RemoteProtocolError)
    with pytest.raises(APIConnectionError, match="broke after the request was sent") as caught:
        qwen.chat("hi")
    assert len(calls.requests) == 3
    assert caught.value.unconfirmed_tries == 2  # the read timeout and the cut, not the connect error


def test_retry_after_send_false_stops_at_a_possibly_paid_failure_only(api, qwen):
    calls = answers(api, httpx.ConnectError, httpx.ReadTimeout, ok())
    request = build_request("hi", model=MODEL)
    with pytest.raises(APITimeoutError) as caught:
        qwen.send(request, retry_after_send=False)
    assert len(calls.requests) == 2  # the connect error was retried, the read timeout not
    assert caught.value.unconfirmed_tries == 1


def test_calls_under_a_budget_do_not_retry_a_try_that_may_have_been_paid(api, qwen):
    calls = answers(api, httpx.ReadTimeout, httpx.ReadTimeout, ok())
    budgeted = Calls(
        TaskCost(try_number=1, prices=PRICES, model=MODEL, max_cost_usd=Decimal(1)), client=lambda: qwen
    )
    with pytest.raises(APITimeoutError):
        budgeted.send(build_request("hi", model=MODEL))
    assert len(calls.requests) == 1
    free = Calls(TaskCost(try_number=1, prices=PRICES, model=MODEL), client=lambda: qwen)
    assert free.send(build_request("hi", model=MODEL)).unconfirmed_tries == 1  # no budget: retried
    assert len(calls.requests) == 3


def test_a_stream_retried_before_its_first_byte_counts_the_try(api, qwen):
    answers(api, httpx.ReadTimeout, sse(chunk({"content": "Hi"}, finish="stop"), USAGE_CHUNK))
    assert qwen.stream("hi").get_final_completion().unconfirmed_tries == 1


def test_a_cut_stream_after_a_retried_try_carries_the_count_on_its_partial(api, qwen):
    answers(api, httpx.ReadTimeout, cut_sse(chunk({"content": "Hal"})))
    with pytest.raises(StreamError) as caught:
        qwen.stream("hi").get_final_completion()
    assert caught.value.partial.unconfirmed_tries == 1


def test_the_async_client_counts_and_obeys_retry_after_send(api, sleeps):
    calls = answers(api, httpx.ReadTimeout, ok(), httpx.ReadTimeout)

    async def scenario() -> tuple[ChatCompletion, BaseException]:
        async with AsyncQwenClient(KEY, base_url=BASE_URL, retry=sleeps.policy()) as client:
            retried = await client.chat("hi")
            with pytest.raises(APITimeoutError) as caught:
                await client.send(build_request("hi", model=MODEL), retry_after_send=False)
            return retried, caught.value

    retried, error = asyncio.run(scenario())
    assert (retried.unconfirmed_tries, error.unconfirmed_tries) == (1, 1)
    assert len(calls.requests) == 3


def test_concurrent_calls_with_and_without_a_budget_keep_their_own_retry_rule(api, sleeps):
    seen: dict[str, int] = {}

    def reply(request: httpx.Request) -> httpx.Response:
        who = json.loads(request.content)["messages"][-1]["content"]
        seen[who] = seen.get(who, 0) + 1
        if seen[who] == 1:
            raise httpx.ReadTimeout("scripted failure", request=request)
        return ok()

    api.post(CHAT_URL).mock(side_effect=reply)
    budgeted = Calls(TaskCost(try_number=1, prices=PRICES, model=MODEL, max_cost_usd=Decimal(1)))
    free = Calls(TaskCost(try_number=1, prices=PRICES, model=MODEL))

    async def scenario() -> list[object]:
        async with AsyncQwenClient(KEY, base_url=BASE_URL, retry=sleeps.policy()) as client:

            async def guarded() -> object:
                await asyncio.sleep(0)  # let the other call start first
                return await budgeted.asend(build_request("guarded", model=MODEL), client)

            return await asyncio.gather(
                guarded(), free.asend(build_request("free", model=MODEL), client), return_exceptions=True
            )

    guarded, unguarded = asyncio.run(scenario())
    assert isinstance(guarded, APITimeoutError)
    assert isinstance(unguarded, ChatCompletion)
    assert unguarded.unconfirmed_tries == 1
    assert seen == {"guarded": 1, "free": 2}


# -- TaskCost records them -----------------------------------------------------------------


def test_each_unconfirmed_try_is_one_estimated_charge_priced_as_the_answer(api, qwen):
    answers(api, httpx.ReadTimeout, httpx.RemoteProtocolError, ok())
    cost = TaskCost(try_number=1, prices=PRICES, model=MODEL)
    request = build_request("hi", model=MODEL)
    cost.ledger.add(qwen.send(request), request)
    record = cost.record().to_xcom()
    one_try = PRICE.usd(20, 10)  # the same prompt and, as far as we know, the same answer
    assert record["requests"] == 3
    assert Decimal(record["usd_spent"]) == REPORTED + 2 * one_try
    assert record["credits_used"] == 260 + 2 * credits_from_usd(one_try)
    assert (record["prompt_tokens"], record["completion_tokens"]) == (60, 30)
    assert record["estimated"] is True


def test_a_failed_call_records_its_unconfirmed_tries_at_the_requests_worst_case():
    cost = TaskCost(try_number=1, prices=PRICES, model=MODEL)
    capped = build_request("Summarise the notes.", model=MODEL, max_completion_tokens=300)
    error = APITimeoutError("no answer in time", charge=Charge(unconfirmed_tries=2))
    cost.ledger.add_error(error, capped)
    record = cost.record().to_xcom()
    assert record["requests"] == 2
    assert Decimal(record["usd_spent"]) == 2 * PRICE.usd(request_tokens(capped), 300)  # prompt + cap each
    assert Decimal(record["usd_spent"]) <= 2 * worst_case_usd(capped, PRICES)
    assert record["estimated"] is True
    assert [(e["kind"], e["estimated_usd"]) for e in record["estimates"]] == [
        ("unconfirmed", record["usd_spent"])
    ]

    unbounded = TaskCost(try_number=1, prices=PRICES, model=MODEL)
    request = build_request("Summarise the notes.", model=MODEL)
    error = APITimeoutError("no answer in time", charge=Charge(unconfirmed_tries=1))
    unbounded.ledger.add_error(error, request)
    prompt = request_tokens(request)
    assert unbounded.record().to_xcom()["prompt_tokens"] == prompt
    assert unbounded.spent_usd == PRICE.usd(prompt, 0)


def test_a_stream_cut_after_its_usage_counts_a_retried_try_once(api, qwen):
    usage_chunk = {**USAGE_CHUNK, "meta": {"usage": {"credits_used": 260, "usd_spent": "0.00013"}}}
    answers(api, httpx.ReadTimeout, cut_sse(chunk({"content": "Hi"}, finish="stop"), usage_chunk))
    request = build_request("hi", model=MODEL, stream=True)
    cost = TaskCost(try_number=1, prices=PRICES, model=MODEL)
    with pytest.raises(StreamError):
        Calls(cost, client=lambda: qwen).send(request)  # the count is on the error and its partial: once
    record = cost.record().to_xcom()
    assert record["requests"] == 2
    assert Decimal(record["usd_spent"]) == REPORTED + PRICE.usd(20, 10)


def test_an_uncharged_failure_still_adds_nothing():
    cost = TaskCost(try_number=1, prices=PRICES, model=MODEL)
    cost.ledger.add_error(ServerError("bad gateway", status_code=502), build_request("hi", model=MODEL))
    assert (cost.record().to_xcom()["requests"], cost.spent_usd) == (0, 0)


# -- cut streams ---------------------------------------------------------------------------


def partial(content: str | None = None, reasoning: str | None = None, calls=()) -> ChatCompletion:
    message = {"role": "assistant", "content": content, "reasoning_content": reasoning}
    if calls:
        message["tool_calls"] = [
            {"id": f"c{i}", "type": "function", "function": {"name": name, "arguments": args}}
            for i, (name, args) in enumerate(calls)
        ]
    parsed = ChatCompletion.model_validate({"choices": [{"index": 0, "message": message}]})
    return bind(parsed, requested_model=MODEL, inference_id="inf-cut", cost=Cost(0, Decimal(0), True))


def test_a_stream_cut_before_its_usage_is_estimated_from_the_request_and_the_text_so_far():
    cost = TaskCost(try_number=1, prices=PRICES, model=MODEL)
    request = build_request("Extract the invoice.", model=MODEL)
    cut = partial("Über", "thinking…", calls=[("Invoice", '{"total": 4')])
    error = StreamError("the stream was cut after 4 chunks", charge=Charge(partial=cut))
    cost.ledger.add_error(error, request)
    record = cost.record().to_xcom()
    prompt = request_tokens(request)
    reasoning = text_tokens("thinking…")
    framing = ANSWER_FRAMING_TOKENS + TOOL_CALL_FRAMING_TOKENS  # </think>, <|im_end|>, one tool call
    completion_tokens = text_tokens('ÜberInvoice{"total": 4') + reasoning + framing
    assert (record["requests"], record["estimated"]) == (1, True)
    assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt, completion_tokens)
    assert record["reasoning_tokens"] == reasoning
    usd = PRICE.usd(prompt, completion_tokens)
    assert (Decimal(record["usd_spent"]), record["credits_used"]) == (usd, credits_from_usd(usd))


def test_a_cut_streams_completion_estimate_never_passes_the_output_cap():
    cost = TaskCost(try_number=1, prices=PRICES, model=MODEL, max_cost_usd=Decimal(1))
    request = build_request("hi", model=MODEL, max_completion_tokens=5)
    cut = partial("a long answer, far more than five tokens at two bytes each", "hmm " * 10)
    error = StreamError("the stream was cut after 9 chunks", charge=Charge(partial=cut))
    cost.ledger.add_error(error, request)
    record = cost.record().to_xcom()
    assert (record["completion_tokens"], record["reasoning_tokens"]) == (5, 5)
    assert cost.spent_usd == PRICE.usd(request_tokens(request), 5)
    assert cost.spent_usd <= worst_case_usd(request, PRICES)  # no more than the budget held for it


def test_a_stream_cut_before_any_text_still_records_the_prompt():
    cost = TaskCost(try_number=1, prices=PRICES, model=MODEL)
    request = build_request("hi", model=MODEL)
    error = StreamError("the stream was cut after 0 chunks", charge=Charge(partial=partial()))
    cost.ledger.add_error(error, request)
    assert cost.spent_usd == PRICE.usd(request_tokens(request), 0)
    assert cost.record().to_xcom()["requests"] == 1


def test_a_cut_stream_through_the_operator_is_recorded_as_an_estimate(mocker, api, qwen):
    answers(
        api,
        cut_sse(
            chunk({"role": "assistant", "reasoning_content": "Let me see"}), chunk({"content": "Hello wor"})
        ),
    )
    behind_hook(mocker, qwen)
    op = QwenChatOperator(task_id="chat", prompt="Greet the world.", stream=True)
    record, _ = failed_run(op, StreamError)
    prompt = request_tokens(request_for(op))
    completion_tokens = text_tokens("Hello wor") + text_tokens("Let me see") + ANSWER_FRAMING_TOKENS
    assert (record["requests"], record["estimated"]) == (1, True)
    assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt, completion_tokens)
    assert Decimal(record["usd_spent"]) == PRICE.usd(prompt, completion_tokens)


def test_an_error_chunk_is_a_failed_generation_and_adds_nothing(mocker, api, qwen):
    error_chunk = {"error": {"message": "upstream overloaded", "type": "server_error", "code": 503}}
    answers(
        api,
        sse(chunk({"content": "Hal"}), error_chunk),
        sse(chunk({"content": "a"}), "event: error\ndata: x\n\n"),
    )
    behind_hook(mocker, qwen)
    for _ in range(2):  # an error chunk, then an SSE error event
        record, error = failed_run(QwenChatOperator(task_id="chat", prompt="hi", stream=True), StreamError)
        assert error.charge.reported_by_service
        assert (record["requests"], record["usd_spent"]) == (0, "0")


def test_a_cut_is_not_reported_by_the_service(api, qwen):
    answers(api, cut_sse(chunk({"content": "Hal"})))
    with pytest.raises(StreamError) as caught:
        qwen.stream("hi").get_final_completion()
    assert not caught.value.charge.reported_by_service


# -- budgets: a call reserved once is paid at most once ------------------------------------


def test_under_a_budget_a_possibly_paid_failure_is_not_retried_and_is_recorded(mocker, api, qwen):
    calls = answers(api, httpx.ReadTimeout, ok())
    behind_hook(mocker, qwen)
    op = QwenChatOperator(task_id="chat", prompt="hi", max_completion_tokens=100, max_cost_usd="0.01")
    record, _ = failed_run(op, APITimeoutError)
    assert len(calls.requests) == 1
    worst = worst_case_usd(request_for(op), PRICES)
    assert (record["requests"], record["estimated"]) == (1, True)
    assert Decimal(record["usd_spent"]) == PRICE.usd(request_tokens(request_for(op)), 100)
    # the rest of what was reserved stays counted until the service's figure replaces the estimate
    assert Decimal(record["usd_spent"]) + Decimal(record["usd_unsettled"]) == worst <= Decimal("0.01")


def test_under_a_budget_failures_before_sending_are_still_retried(mocker, api, qwen):
    calls = answers(api, httpx.ConnectError, httpx.Response(503, json={"message": "busy"}), ok())
    behind_hook(mocker, qwen)
    op = QwenChatOperator(task_id="chat", prompt="hi", max_completion_tokens=100, max_cost_usd="0.01")
    result, ti = run(op)
    assert result == "Hello!"
    assert len(calls.requests) == 3
    assert ti.pushed["qwen_cost"]["requests"] == 1


def test_without_a_budget_the_retry_happens_and_both_tries_are_recorded(mocker, api, qwen):
    calls = answers(api, httpx.ReadTimeout, ok())
    behind_hook(mocker, qwen)
    result, ti = run(QwenChatOperator(task_id="chat", prompt="hi"))
    assert result == "Hello!"
    assert len(calls.requests) == 2
    record = ti.pushed["qwen_cost"]
    assert (record["requests"], record["estimated"]) == (2, True)
    assert Decimal(record["usd_spent"]) == REPORTED + PRICE.usd(20, 10)


def test_a_budgeted_call_releases_its_hold_and_leaves_the_client_retrying(api, qwen):
    calls = answers(api, httpx.ReadTimeout, httpx.ReadTimeout, ok())
    cost = TaskCost(try_number=1, prices=PRICES, model=MODEL, max_cost_usd=Decimal(1))
    request = build_request("hi", model=MODEL)
    with pytest.raises(APITimeoutError):
        Calls(cost, client=lambda: qwen).send(request)
    assert cost.budget.reserved_usd == 0
    assert cost.record().to_xcom()["requests"] == 1  # the timed-out try, estimated
    assert qwen.chat("hi").unconfirmed_tries == 1  # the client itself: retried as usual
    assert len(calls.requests) == 3


# -- usd_spent is plain decimal text -------------------------------------------------------


@pytest.mark.parametrize(
    ("usd", "text"),
    [
        (Decimal("0.0000005"), "0.0000005"),  # str() gives "5E-7"
        (Decimal("0.00000100"), "0.000001"),
        (Decimal("1E+2"), "100"),
        (Decimal("0E-9"), "0"),
    ],
)
def test_ledger_records_give_usd_in_plain_decimal_notation(usd, text):
    totals = CostTotals()
    totals.add_charge(MODEL, Cost(credits_from_usd(usd), usd))
    assert totals.record().to_xcom()["usd_spent"] == text == usd_text(usd)
    assert Decimal(text) == usd
