"""Hostile-user and hostile-server tests of the money promises (docs/cost.md "Exact and estimated",
"Budgets"): each test states a promise a hostile review broke once, and keeps it kept.

Everything talks to loopback only: respx mocks, or the emulator (``QwenEmulator``), which bills with
the Qwen3.5/3.6 vocabulary and its own chat template, like the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import unicodedata
from decimal import Decimal

import httpx
import pytest
from airflow.sdk.exceptions import AirflowTaskTimeout

from airflow_provider_qwen.calls import Calls
from airflow_provider_qwen.client import tokens
from airflow_provider_qwen.client.client import AsyncQwenClient, QwenClient
from airflow_provider_qwen.client.errors import BudgetExceededError, InvalidRequestError, QwenError
from airflow_provider_qwen.client.pricing import Cost, PriceTable
from airflow_provider_qwen.client.request import build_request
from airflow_provider_qwen.cost.budget import worst_case_usd
from airflow_provider_qwen.cost.run_budget import Hold, RunShare
from airflow_provider_qwen.cost.task import TaskCost
from airflow_provider_qwen.operators.spend import BudgetRefusedError, task_cost
from airflow_provider_qwen.testing import Fault, QwenEmulator
from tests.support.client_helpers import BASE_URL, CHAT_URL, KEY, chunk, completion
from tests.support.cost_fakes import FakeRun, FakeStateStore

MODEL = "alibaba/qwen3.7-max"
PRICES = PriceTable()

TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a city up.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def emulator():
    with QwenEmulator(prices=PRICES) as running:
        yield running


@pytest.fixture
def emu(emulator):
    emulator.reset()
    yield emulator
    emulator.reset()


def _sync_client(emulator: QwenEmulator) -> QwenClient:
    return QwenClient(emulator.api_key, base_url=emulator.base_url, max_retries=0, prices=PRICES)


def _billed(emulator: QwenEmulator) -> Decimal:
    return emulator.total_charged()[1]


def _tool_turns(arguments: str) -> list[dict]:
    """An agent loop's history: the model called a tool (arguments as the caller wrote them)."""
    return [
        {"role": "user", "content": "Where is the office?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "found"},
    ]


# -- 1. the worst case must bound what the service bills ------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param(json.dumps({"city": "東京都千代田区" * 300}), id="json.dumps-default-ascii-escapes"),
        pytest.param('{"city": "x", "n": 1.' + "0" * 4000 + "}", id="long-number-literal"),
    ],
)
def test_tool_call_arguments_are_billed_within_the_worst_case(emu, arguments):
    """An agent loop echoes the model's tool call back; its ``arguments`` string (here as
    ``json.dumps`` writes it by default, with \\uXXXX escapes) is what the service renders. The worst
    case counts the arguments *decoded* and re-rendered, so it can be several times too small."""
    request = build_request(_tool_turns(arguments), model=MODEL, tools=[TOOL], max_completion_tokens=50)
    worst = worst_case_usd(request, PRICES)
    cost = TaskCost(prices=PRICES, max_cost_usd=worst, model=MODEL, try_number=1)
    with _sync_client(emu) as client:
        Calls(cost, client=lambda: client).send(request)
    assert _billed(emu) <= worst, f"billed {_billed(emu)} USD under max_cost_usd={worst}"


# U+1D160 (MUSICAL SYMBOL EIGHTH NOTE) is a composition exclusion: NFC turns its 4 UTF-8 bytes into
# three code points, 12 bytes, 9 tokens. Both the client and the service count NFC text.
EXPANDING = "\U0001d160"


def test_nfc_expansion_passes_the_one_token_per_byte_bound_of_an_off_vocabulary_model(emu):
    """For a model off the Qwen3.5+ vocabulary the worst case is one token per UTF-8 byte, "which no
    byte-level BPE passes" - but the bytes are counted before NFC, the tokens after it."""
    model = "alibaba/qwen3-max"
    request = build_request(EXPANDING * 3000, model=model, max_completion_tokens=20)
    worst = worst_case_usd(request, PRICES)
    cost = TaskCost(prices=PRICES, max_cost_usd=worst, model=model, try_number=1)
    with _sync_client(emu) as client:
        Calls(cost, client=lambda: client).send(request)
    assert _billed(emu) <= worst, f"billed {_billed(emu)} USD under max_cost_usd={worst}"


def test_without_the_vocabulary_the_byte_bound_still_bounds_nfc_expanding_text(emu, monkeypatch):
    """The documented fallback ("without the vocabulary every count falls back to a true upper
    bound, one token per UTF-8 byte") counts the bytes before NFC."""
    monkeypatch.setattr(tokens, "_loaded", [None])
    request = build_request(EXPANDING * 3000, model=MODEL, max_completion_tokens=20)
    worst = worst_case_usd(request, PRICES)
    cost = TaskCost(prices=PRICES, max_cost_usd=worst, model=MODEL, try_number=1)
    with _sync_client(emu) as client:
        Calls(cost, client=lambda: client).send(request)
    assert _billed(emu) <= worst, f"billed {_billed(emu)} USD under max_cost_usd={worst}"


# -- 2. a call interrupted by a non-Qwen exception was still sent (and billed) ---------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["send", "stream-before-first-byte"])
def test_an_execution_timeout_during_a_sync_call_keeps_the_call_counted(api, streamed):
    """Airflow's ``execution_timeout`` raises AirflowTaskTimeout (a BaseException) inside the blocking
    read. The request was sent; the service finishes and bills it. The try's record must keep the
    call's worst case, else the journal (and the retry) forget it."""

    def timed_out(request: httpx.Request) -> httpx.Response:
        raise AirflowTaskTimeout("Timeout, PID: 1")

    api.post(CHAT_URL).mock(side_effect=timed_out)
    request = build_request("Summarise. " * 500, model=MODEL, max_completion_tokens=500, stream=streamed)
    worst = worst_case_usd(request, PRICES)
    cost = TaskCost(prices=PRICES, max_cost_usd=worst * 3 / 2, model=MODEL, try_number=1)
    with QwenClient(KEY, base_url=BASE_URL, max_retries=0) as client:
        calls = Calls(cost, client=lambda: client)
        call = (
            (lambda: calls.stream(request, lambda chunk: None)) if streamed else (lambda: calls.send(request))
        )
        with pytest.raises(AirflowTaskTimeout):
            call()
        assert cost.ledger.total.usd_at_most >= worst, "the sent call is counted at 0"
        with pytest.raises(BudgetExceededError):  # 1.5 worst cases: a second one does not fit
            calls.send(request)


def test_a_cancelled_async_call_keeps_the_call_counted_and_the_budget_holds(emu):
    """``asyncio.wait_for(calls.asend(...))`` (or a TaskGroup sibling failing) cancels a call the
    service already has: it bills it anyway. CancelledError is no QwenError, so nothing is counted
    and the next call gets the room; together they pass max_cost_usd."""
    request = build_request(
        "The quarterly notes say revenue rose. " * 800, model=MODEL, max_completion_tokens=5
    )
    worst = worst_case_usd(request, PRICES)
    budget = worst * 3 / 2
    cost = TaskCost(prices=PRICES, max_cost_usd=budget, model=MODEL, try_number=1)
    calls = Calls(cost)

    async def scenario() -> None:
        async with AsyncQwenClient(
            emu.api_key, base_url=emu.base_url, max_retries=0, prices=PRICES
        ) as client:
            emu.add_faults(Fault.latency(0.6))
            with pytest.raises((asyncio.TimeoutError, TimeoutError)):
                await asyncio.wait_for(calls.asend(request, client), 0.2)
            await asyncio.sleep(1.0)  # the service finishes the first generation and bills it
            with contextlib.suppress(BudgetExceededError):  # refused is right: 1.5 worst cases
                await calls.asend(request, client)

    asyncio.run(scenario())
    assert _billed(emu) <= budget, f"billed {_billed(emu)} USD under max_cost_usd={budget}"


def test_a_stream_callback_raising_a_qwen_error_keeps_the_stream_counted(emu):
    """``Calls.stream``'s callback stops a paid stream: any exception is counted as a cut stream,
    except a QwenError (a nested call's BudgetExceededError, a validation error), which is taken
    for the stream's own error and carries no charge: the stream is counted at 0."""
    request = build_request(
        "The quarterly notes say revenue rose. " * 200, model=MODEL, max_completion_tokens=50, stream=True
    )
    cost = TaskCost(prices=PRICES, model=MODEL, try_number=1)

    def stop(chunk) -> None:
        raise QwenError("the partial answer failed validation")

    with _sync_client(emu) as client, pytest.raises(QwenError):
        Calls(cost, client=lambda: client).stream(request, stop)
    assert _billed(emu) > 0
    assert cost.ledger.total.usd_spent > 0, f"billed {_billed(emu)} USD, counted 0"


# -- 3. every paid answer is counted, never 0 (nor less) -----------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(completion("The total is 42.", choices=[]), id="choices-empty"),
        pytest.param(
            completion("The total is 42.", meta={"usage": {"credits_used": 260, "usd_spent": "NaN"}}),
            id="meta-usd-NaN",
        ),
        pytest.param(
            completion("The total is 42.", usage={"prompt_tokens": 20, "completion_tokens": 10.5}),
            id="usage-float",
        ),
        pytest.param(completion("The total is 42.", created="2026-12-01T00:00:00Z"), id="created-as-date"),
    ],
)
def test_a_paid_200_the_client_cannot_parse_is_still_counted(api, body):
    """A 2xx answer was generated and billed. When the body does not parse (one odd field) and there
    are no cost headers, the call is counted at 0 and its hold released: the budget forgets it."""
    api.post(CHAT_URL).mock(return_value=httpx.Response(200, json=body, headers={"x-inference-id": "inf-1"}))
    request = build_request("What is the total?", model=MODEL, max_completion_tokens=200)
    worst = worst_case_usd(request, PRICES)
    cost = TaskCost(prices=PRICES, max_cost_usd=worst * 10, model=MODEL, try_number=1)
    with QwenClient(KEY, base_url=BASE_URL, max_retries=0) as client, pytest.raises(QwenError):
        Calls(cost, client=lambda: client).send(request)
    assert cost.ledger.total.requests == 1, "the paid answer is not in the record"
    assert cost.ledger.total.usd_at_most > 0, "the paid answer is counted at 0"


def test_usage_with_negative_tokens_never_makes_a_negative_cost(api):
    """A server without meta.usage that reports nonsense usage (negative completion tokens)."""
    body = completion("The total is 42.", usage={"prompt_tokens": 20, "completion_tokens": -1_000_000})
    body.pop("meta")
    api.post(CHAT_URL).mock(return_value=httpx.Response(200, json=body))
    request = build_request("What is the total?", model=MODEL)
    cost = TaskCost(prices=PRICES, model=MODEL, try_number=1)
    with QwenClient(KEY, base_url=BASE_URL, max_retries=0) as client:
        answer = Calls(cost, client=lambda: client).send(request)
    assert answer.cost.usd_spent >= 0
    assert cost.ledger.total.usd_at_most > 0


def test_a_negative_spend_published_by_an_unbudgeted_task_does_not_widen_the_run_budget(api):
    """That negative spend is published to the run (every Qwen task settles its claim, budget or
    not) and a budgeted task adds it up as room: the run then spends past dag_run_budget_usd."""
    body = completion("The total is 42.", usage={"prompt_tokens": 20, "completion_tokens": -1_000_000})
    body.pop("meta")
    api.post(CHAT_URL).mock(return_value=httpx.Response(200, json=body))
    fake_run = FakeRun()
    ids = ["free", "honest", "capped"]
    fake_run.put_claim("honest", "0.9")  # another task of the run really spent 0.9 USD
    free = task_cost({"ti": fake_run.ti("free")}, prices=PRICES, model=MODEL, task_ids=ids)
    with QwenClient(KEY, base_url=BASE_URL, max_retries=0) as client:
        Calls(free, client=lambda: client).send(build_request("What is the total?", model=MODEL))
    free.finish()
    capped = task_cost(
        {"ti": fake_run.ti("capped")},
        prices=PRICES,
        dag_run_budget_usd=Decimal("1"),
        model=MODEL,
        task_ids=ids,
    )
    request = build_request("Write.", model=MODEL, max_completion_tokens=64_000)  # worst case ~0.5 USD
    with pytest.raises(BudgetRefusedError):  # 0.9 + 0.5 > 1
        capped.budget.check(request)


def test_usage_of_zero_tokens_on_an_answer_with_text_is_not_free(api):
    """Some OpenAI-compatible servers send a placeholder ``usage`` of zeros. Without a reported cost
    the estimate trusts it: an answer with text is counted at 0 USD."""
    body = completion(
        "A long answer. " * 50, usage={"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    )
    body.pop("meta")
    api.post(CHAT_URL).mock(return_value=httpx.Response(200, json=body))
    request = build_request("Write a long answer.", model=MODEL)
    cost = TaskCost(prices=PRICES, model=MODEL, try_number=1)
    with QwenClient(KEY, base_url=BASE_URL, max_retries=0) as client:
        Calls(cost, client=lambda: client).send(request)
    assert cost.ledger.total.usd_spent > 0


def test_a_cut_stream_after_a_zero_usage_placeholder_still_counts_its_prompt(api):
    """A gateway sends ``usage`` zeros on its first chunk, then the stream is cut: the partial
    "has usage", so the prompt and the text received are not estimated; the call is counted at 0."""
    from tests.support.client_helpers import cut_sse

    zeros = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    api.post(CHAT_URL).mock(
        return_value=cut_sse(chunk({"role": "assistant", "content": "Partial answer " * 30}, usage=zeros))
    )
    request = build_request("Tell me everything. " * 200, model=MODEL, stream=True)
    cost = TaskCost(prices=PRICES, model=MODEL, try_number=1)
    with QwenClient(KEY, base_url=BASE_URL, max_retries=0) as client, pytest.raises(QwenError):
        Calls(cost, client=lambda: client).send(request)
    assert cost.ledger.total.usd_spent > 0, "the cut stream is counted at 0"


# -- 4. the run budget across task instances ------------------------------------------------------


class _SharedHolds:
    """A linearizable store of the run's claims; ``views`` give each instance its ``others()``."""

    def __init__(self) -> None:
        self.holds: dict[str, Hold] = {}
        self.after_publish = None  # called once after the next publish (another instance acts)

    def view(self, instance: str):
        store = self

        class View:
            def publish(self, hold: Hold) -> None:
                store.holds[hold.instance] = hold
                hook, store.after_publish = store.after_publish, None
                if hook is not None:
                    hook()

            def others(self) -> list[Hold]:
                return [h for name, h in store.holds.items() if name != instance]

        return View()


def test_a_withdrawn_claim_keeps_what_the_instance_already_spent():
    """Instance A (a retry: its earlier try spent 0.6 USD of a 1 USD run budget) claims, collides
    with B, and withdraws to its previous claim - 0, since this try had none - publishing
    ``Hold(A, claimed=0, at_most=0.6)``. Others add up ``claimed`` only: C now sees the whole budget
    free and claims 0.9. Spent at most: 0.6 + 0.9 = 1.5 USD of a 1 USD budget."""
    store = _SharedHolds()
    budget = Decimal("1")
    a = RunShare(budget, store.view("a[0]"), "a[0]", sleep=lambda _: None)
    b = RunShare(budget, store.view("b[1]"), "b[1]", sleep=lambda _: None)
    c = RunShare(budget, store.view("c[2]"), "c[2]", sleep=lambda _: None)
    # B claims 0.3 between A's publish and A's read; B's own read then sees A and B withdraws later
    store.after_publish = lambda: store.holds.__setitem__("b[1]", Hold("b[1]", Decimal("0.3"), Decimal(0)))
    assert a.ensure(Decimal("0.8"), Decimal(0), Decimal("0.6")) is not None  # refused
    b.settle(Decimal(0))  # B gives up too (nothing spent)
    assert c.ensure(Decimal("0.9"), Decimal(0), Decimal(0)) is not None, (
        "C got 0.9 USD while A has already spent 0.6 USD of the 1 USD run budget"
    )


def test_a_retry_keeps_its_earlier_spend_visible_to_the_run_before_its_first_claim():
    """Airflow clears a task instance's XComs when its next try starts - its settled claim too. Until
    that try's first request, the run sees nothing of what its earlier tries paid."""
    fake_run = FakeRun()
    ids = ["a", "b"]
    state = FakeStateStore()
    one = task_cost(
        {"ti": fake_run.ti("a", try_number=1), "task_state_store": state},
        prices=PRICES,
        dag_run_budget_usd=Decimal("1"),
        model=MODEL,
        task_ids=ids,
    )
    one.ledger.add_charge(MODEL, Cost.from_reported(usd="0.6"))  # what try 1 paid, then it failed
    one.finish()
    # try 2 of "a" starts (its XComs are cleared) and is still rendering / warming up
    task_cost(
        {"ti": fake_run.ti("a", try_number=2), "task_state_store": state},
        prices=PRICES,
        dag_run_budget_usd=Decimal("1"),
        model=MODEL,
        task_ids=ids,
    ).start()  # what execute() does first
    b = task_cost(
        {"ti": fake_run.ti("b")}, prices=PRICES, dag_run_budget_usd=Decimal("1"), model=MODEL, task_ids=ids
    )
    request = build_request("Write.", model=MODEL, max_completion_tokens=80_000)  # ~0.62 USD
    with pytest.raises(BudgetRefusedError):
        b.budget.check(request)


# -- 5. the journal fails closed ------------------------------------------------------------------


@pytest.mark.parametrize("usd_spent", ["-5", "five dollars", "NaN", "Infinity"])
def test_a_corrupt_journal_figure_refuses_instead_of_counting_zero(usd_spent):
    """ "A corrupt entry refuses the request before sending": a claim is validated, a final record's
    figures are read leniently (garbage or NaN -> 0, negative accepted)."""
    ti = FakeRun().ti("t", try_number=2)
    state = FakeStateStore()
    state.values["qwen_cost_journal"] = {
        "1": {"final": True, "record": {"model": MODEL, "requests": 3, "usd_spent": usd_spent}}
    }
    cost = task_cost(
        {"ti": ti, "task_state_store": state}, prices=PRICES, max_cost_usd=Decimal("0.05"), model=MODEL
    )
    with pytest.raises(BudgetRefusedError):
        cost.budget.check(build_request("hi", model=MODEL, max_completion_tokens=100))


# -- 6. the context window is refused before sending ----------------------------------------------

WINDOW_MODEL = "alibaba/qwen3.8-27b"  # 262,144 tokens


def _over_window_request(**params):
    # 40,000 x U+1D160: 160 kB in the body, 360,000 tokens once NFC-normalised
    return build_request(EXPANDING * 40_000, model=WINDOW_MODEL, max_completion_tokens=100, **params)


@pytest.mark.parametrize("mode", ["sync", "sync-stream", "async", "async-stream"])
def test_a_request_over_the_window_is_refused_before_sending(api, mode):
    """``may_pass_window`` skips the count when body bytes + 4096 + cap fit the window, "a token is
    at least one byte" - but the tokens are counted after NFC, which can triple the bytes."""
    route = api.post(CHAT_URL).mock(return_value=httpx.Response(400, json={"message": "too long"}))
    request = _over_window_request(stream=mode.endswith("stream"))
    assert tokens.request_tokens(request) + 100 > 262_144  # check_window itself would refuse it

    async def async_send() -> None:
        async with AsyncQwenClient(
            KEY, base_url=BASE_URL, max_retries=0, http_client=httpx.AsyncClient()
        ) as c:
            await c.send(request)

    def sync_send() -> None:
        with QwenClient(KEY, base_url=BASE_URL, max_retries=0) as client:
            client.send(request)

    with pytest.raises(QwenError) as caught:
        sync_send() if mode.startswith("sync") else asyncio.run(async_send())
    assert not route.called, f"sent, and refused by the service after the upload: {caught.value}"
    assert isinstance(caught.value, InvalidRequestError)


def test_the_window_check_counts_tool_call_arguments_as_the_service_does(emulator):
    """With the window check's own count (the arguments decoded and re-rendered), an escaped agent
    history that the service counts over the window is sent anyway."""
    arguments = json.dumps({"city": "東京都千代田区" * 9000})  # the client counts 45k, the service 288k
    request = build_request(_tool_turns(arguments), model="alibaba/qwen3.6-27b", tools=[TOOL], max_tokens=100)
    emulator.reset()
    with _sync_client(emulator) as client, pytest.raises(QwenError) as caught:
        client.send(request)
    assert emulator.chat_requests() == [], f"sent; the service said: {caught.value}"
    assert isinstance(caught.value, InvalidRequestError)


# -- 7. token counting and slicing ----------------------------------------------------------------


def test_token_slices_rejoin_to_the_input_even_when_it_is_not_nfc():
    """ "Joined, the slices are the text": they are its NFC form, so decomposed accents (macOS file
    names, some PDFs) come back changed; a batch's chunks no longer match the document."""
    text = unicodedata.normalize("NFD", "Café déjà vu, naïve résumé. " * 50)
    assert "".join(tokens.token_slices(text, 16)) == text
