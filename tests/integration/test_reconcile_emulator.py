"""Reconciliation over the emulator: estimated calls (a cut stream, retried tries) replaced by what the
emulator billed, exactly; and the records endpoints answer in the service's published shapes and limits."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import httpx
import pytest

from airflow_provider_qwen.client.errors import StreamError
from airflow_provider_qwen.client.records import RateLimiter, RecordsClient
from airflow_provider_qwen.hooks.qwen import QwenHook
from airflow_provider_qwen.operators import QwenChatOperator, QwenCostReportOperator
from airflow_provider_qwen.testing.faults import Fault
from airflow_provider_qwen.testing.records import RATE_LIMIT
from airflow_provider_qwen.testing.schema import to_json_schema
from tests.conftest import FIXTURES
from tests.support.cost_fakes import FakeRun
from tests.support.operator_fakes import FakeTI, run

MODEL = "alibaba/qwen3.7-max"
PROMPT = "Tell me about the weather in Paris today."


def since() -> datetime:
    return datetime.now(timezone.utc) - timedelta(minutes=5)


def billed_for(emulator, record) -> int:
    crids = {e["client_request_id"] for t in record.get("tries") or [record] for e in t["estimates"]}
    return sum(c.credits for c in emulator.charges if c.client_request_id in crids)


def estimated_calls(emulator):
    """A stream cut before its usage, and a call whose first try was dropped after being sent."""
    emulator.add_faults(Fault.cut(3))
    cut_ti = FakeTI()
    with pytest.raises(StreamError):
        run(QwenChatOperator(task_id="cut", prompt=PROMPT, model=MODEL, stream=True), cut_ti)
    emulator.add_faults(Fault.drop(), Fault.cut())  # two tries fail after sending, the third answers
    _, retried_ti = run(QwenChatOperator(task_id="retried", prompt=PROMPT, model=MODEL))
    return cut_ti.pushed["qwen_cost"], retried_ti.pushed["qwen_cost"]


def test_estimates_are_replaced_by_what_the_emulator_billed(qwen_emulator):
    cut, retried = estimated_calls(qwen_emulator)
    assert cut["estimated"]
    assert retried["estimated"]
    assert {e["kind"] for t in retried.get("tries") or [retried] for e in t["estimates"]} == {"unconfirmed"}
    credits, usd = qwen_emulator.total_charged()
    assert len(qwen_emulator.charges) == 3  # the cut stream, the cut body, the answer: not the drop
    assert cut["credits_used"] + retried["credits_used"] != credits  # the estimates are off

    result = QwenHook().reconcile([cut, retried], since=since())

    fixed_cut, fixed_retried = result.records
    for fixed, given in ((fixed_cut, cut), (fixed_retried, retried)):
        assert fixed["estimated"] is False
        assert fixed["credits_used"] == billed_for(qwen_emulator, given)
        for one_try in fixed.get("tries") or []:  # each try's own figures moved with the total
            assert one_try["credits_used"] == billed_for(qwen_emulator, one_try)
            assert one_try["estimated"] is False
    assert fixed_cut["credits_used"] + fixed_retried["credits_used"] == credits
    assert Decimal(fixed_cut["usd_spent"]) + Decimal(fixed_retried["usd_spent"]) == usd
    (entry,) = fixed_cut["estimates"]
    assert (entry["reconciled"], entry["source"]) == (True, "ledger")
    assert result.report.reconciled == 2
    assert result.report.still_estimated == []
    # one logs query (the window covers the run) and one ledger page
    paths = [r.path for r in qwen_emulator.requests if r.path.startswith("/v2/")]
    assert paths == ["/v2/logs", "/v2/billing/transactions"]


def test_nothing_is_read_when_nothing_is_estimated(qwen_emulator):
    _, ti = run(QwenChatOperator(task_id="exact", prompt=PROMPT, model=MODEL))
    result = QwenHook().reconcile([ti.pushed["qwen_cost"]], since=since())
    assert result.records == [ti.pushed["qwen_cost"]]
    assert not [r for r in qwen_emulator.requests if r.path.startswith("/v2/")]


def test_the_cost_report_reconciles_the_run(qwen_emulator):
    cut, retried = estimated_calls(qwen_emulator)
    fake_run = FakeRun()
    fake_run.put("cut", cut)
    fake_run.put("retried", retried)
    report_op = QwenCostReportOperator(
        task_id="cost_report",
        task_ids=["cut", "retried"],
        reconcile=True,
        reconcile_since=timedelta(minutes=5),
    )
    report = report_op.execute({"ti": fake_run.ti("cost_report"), "run_id": "manual__1"})
    credits, usd = qwen_emulator.total_charged()
    assert report["total"]["credits_used"] == credits
    assert Decimal(report["total"]["usd_spent"]) == usd
    assert report["total"]["estimated"] is False
    assert report["reconciliation"]["reconciled"] == 2
    assert report["reconciliation"]["still_estimated"] == []


def test_the_cost_report_keeps_the_estimates_when_the_records_cannot_be_read(qwen_emulator, monkeypatch):
    cut, _ = estimated_calls(qwen_emulator)
    monkeypatch.setenv(
        "AIRFLOW_CONN_QWEN_DEFAULT", qwen_emulator.conn_json().replace("test-key", "wrong-key")
    )
    fake_run = FakeRun()
    fake_run.put("cut", cut)
    report_op = QwenCostReportOperator(task_id="cost_report", task_ids=["cut"], reconcile=True)
    context = {"ti": fake_run.ti("cost_report"), "run_id": "manual__1", "dag_run": _Run()}
    report = report_op.execute(context)
    assert report["total"]["credits_used"] == cut["credits_used"]
    assert report["total"]["estimated"] is True
    assert "AuthenticationError" in report["reconciliation"]["error"]
    assert "wrong-key" not in json.dumps(report)


class _Run:
    start_date = datetime.now(timezone.utc)
    run_after = start_date
    clear_number = 0


# -- the records endpoints ---------------------------------------------------------------------------


def _schema(name: str, path: str):
    from jsonschema import Draft4Validator

    document = json.loads((FIXTURES / f"aimlapi-{name}.json").read_text())
    schema = document["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    return Draft4Validator(to_json_schema(schema))


def _get(emulator, path: str, key: str = "test-key", **params):
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.get(f"{emulator.url}{path}", params=params, headers=headers, timeout=10)


def test_the_records_answers_validate_against_the_published_schemas(qwen_emulator):
    estimated_calls(qwen_emulator)
    logs = _get(qwen_emulator, "/v2/logs", period="1h", limit=2)
    ledger = _get(qwen_emulator, "/v2/billing/transactions", limit=2, direction="CHARGE")
    usage = _get(qwen_emulator, "/v2/usage", period="24h")
    for name, path, answer in (
        ("logs-v2", "/v2/logs", logs),
        ("billing-transactions-v2", "/v2/billing/transactions", ledger),
        ("usage-v2", "/v2/usage", usage),
    ):
        assert answer.status_code == 200, answer.text
        assert list(_schema(name, path).iter_errors(answer.json())) == []
    assert logs.json()["pagination"] == {"limit": 2, "offset": 0, "total": 4, "has_more": True}
    assert [row["status"] for row in _get(qwen_emulator, "/v2/logs", period="1h").json()["data"]].count(
        "failed"
    ) == 1
    assert usage.json()["requests"] == 3
    assert Decimal(str(usage.json()["spend"])) == qwen_emulator.total_charged()[1]


def test_the_ledger_pages_with_its_cursor_only_as_issued(qwen_emulator):
    estimated_calls(qwen_emulator)
    first = _get(qwen_emulator, "/v2/billing/transactions", limit=2).json()
    cursor = first["pagination"]["next_cursor"]
    second = _get(qwen_emulator, "/v2/billing/transactions", limit=2, cursor=cursor).json()
    ids = [e["reference_id"] for e in first["data"] + second["data"]]
    assert sorted(ids) == sorted(c.inference_id for c in qwen_emulator.charges)
    assert second["pagination"] == {"next_cursor": None, "has_more": False}
    assert _get(qwen_emulator, "/v2/billing/transactions", cursor=cursor + "=").status_code == 400
    assert _get(qwen_emulator, "/v2/billing/transactions", offset=2).status_code == 400  # unknown parameter


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"period": "7d", "start": "2026-07-01T00:00:00Z", "end": "2026-07-02T00:00:00Z"},
        {"period": "7w"},
        {"start": "2026-07-01T00:00:00Z", "end": "2026-10-02T00:00:00Z"},  # 93 days
        {"start": "2026-07-02T00:00:00Z", "end": "2026-07-01T00:00:00Z"},
        {"period": "1h", "limit": 101},
        {"period": "1h", "status": "succeeded,failed"},
    ],
)
def test_the_logs_refuse_what_the_service_refuses(qwen_emulator, params):
    answer = _get(qwen_emulator, "/v2/logs", **params)
    assert answer.status_code == 400
    assert set(answer.json()) >= {"message", "path", "statusCode"}


def test_a_92_day_window_is_legal_and_a_bad_key_is_refused(qwen_emulator):
    assert (
        _get(qwen_emulator, "/v2/logs", start="2026-07-01T00:00:00Z", end="2026-10-01T00:00:00Z").status_code
        == 200
    )
    assert _get(qwen_emulator, "/v2/usage", key="nope", period="1h").status_code == 401


def test_more_than_200_calls_a_minute_answer_429_without_retry_after(qwen_emulator):
    with httpx.Client(headers={"Authorization": "Bearer test-key"}) as http:
        statuses = [
            http.get(f"{qwen_emulator.url}/v2/usage", params={"period": "1h"}).status_code for _ in range(201)
        ]
        refused = http.get(f"{qwen_emulator.url}/v2/logs", params={"period": "1h"})
    assert statuses[:RATE_LIMIT] == [200] * RATE_LIMIT
    assert statuses[RATE_LIMIT] == 429
    assert refused.status_code == 429
    assert "retry-after" not in refused.headers


def test_the_client_splits_a_long_window_into_legal_queries(qwen_emulator):
    estimated_calls(qwen_emulator)
    now = datetime.now(timezone.utc)
    client = RecordsClient("test-key", base_url=qwen_emulator.base_url, limiter=RateLimiter(), page_size=1)
    with client:
        rows = client.logs(now - timedelta(days=200), now + timedelta(seconds=1))
    assert len(rows) == 4
    assert len({r.inference_id for r in rows}) == 4
    windows = [r for r in qwen_emulator.requests if r.path == "/v2/logs"]
    assert {r.status for r in windows} == {200}
    assert len(windows) == 2 + 4  # two empty windows, then the four rows one per page
