"""reconcile_records on hand-made qwen_cost records: estimates replaced by the service's rows, exactly."""

from __future__ import annotations

import copy
from decimal import Decimal

from airflow_provider_qwen.client.records import LogRow, Transaction
from airflow_provider_qwen.cost.reconcile import (
    NO_ID,
    NOT_COVERED,
    SUMMED,
    estimate_entries,
    inference_ids_to_price,
    reconcile_records,
)

MODEL = "alibaba/qwen3.7-max"


def entry(
    crid: str | None, kind: str = "cut_stream", *, est: int = 2000, rep: int = 0, ids=("inf-1",), **extra
):
    return {
        "client_request_id": crid,
        "model": MODEL,
        "kind": kind,
        "estimated_usd": str(Decimal(est) / 2_000_000),
        "estimated_credits": est,
        "reported_usd": str(Decimal(rep) / 2_000_000),
        "reported_credits": rep,
        "inference_ids": list(ids),
        **extra,
    }


def record(*entries, exact: int = 0, try_number: int = 1, **extra) -> dict:
    """A try: ``exact`` credits of reported answers plus each entry's estimated + reported figures."""
    credits = exact + sum(e["estimated_credits"] + e["reported_credits"] for e in entries)
    return {
        "model": MODEL,
        "requests": 1 + len(entries),
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "reasoning_tokens": 0,
        "total_tokens": 15,
        "credits_used": credits,
        "usd_spent": str(Decimal(credits) / 2_000_000),
        "estimated": bool(entries),
        "try_number": try_number,
        "estimates": list(entries),
        **extra,
    }


def log_row(n: int, crid: str | None, credits: int) -> LogRow:
    return LogRow.model_validate(
        {
            "created": "2026-07-02T03:04:05.000Z",
            "status": "succeeded" if credits else "failed",
            "origin": "api",
            "model": MODEL,
            "cost": {"usd": credits / 2_000_000, "credits": credits},
            "tokens": {"input": 1, "output": 1, "total": 2},
            "request_id": f"req-{n}",
            "inference_id": f"inf-{n}",
            "client_request_id": crid,
        }
    )


def charge(reference_id: str, credits: int, **extra) -> Transaction:
    return Transaction.model_validate(
        {
            "created_at": "2026-07-02T03:04:06.000Z",
            "direction": "CHARGE",
            "type": "MODEL_USAGE",
            "amount": {"usd": credits / 2_000_000, "credits": credits},
            "model": MODEL,
            "reference_id": reference_id,
            **extra,
        }
    )


def test_a_cut_stream_takes_the_service_figure():
    given = record(entry("call-1", est=2000), exact=1000)
    result = reconcile_records([given], [log_row(1, "call-1", 1500)])
    (fixed,) = result.records
    assert (fixed["credits_used"], fixed["usd_spent"], fixed["estimated"]) == (2500, "0.00125", False)
    (marked,) = fixed["estimates"]
    assert marked["reconciled"] is True
    assert (marked["service_credits"], marked["service_usd"], marked["source"]) == (1500, "0.00075", "logs")
    assert marked["service_inference_ids"] == ["inf-1"]
    report = result.report
    assert (report.reconciled, report.still_estimated) == (1, [])
    assert (report.usd_difference, report.credits_difference) == (Decimal("-0.00025"), -500)
    assert given["credits_used"] == 3000  # the input is not changed
    assert "reconciled" not in given["estimates"][0]


def test_a_retried_call_is_the_sum_of_its_tries_rows_and_a_failed_try_costs_nothing():
    retried = entry("call-2", "unconfirmed", est=1000, rep=1000, ids=("inf-3",))
    rows = [log_row(2, "call-2", 0), log_row(3, "call-2", 1000), log_row(4, "someone-else", 7)]
    (fixed,) = reconcile_records([record(retried)], rows).records
    assert (fixed["credits_used"], fixed["usd_spent"], fixed["estimated"]) == (1000, "0.0005", False)
    assert fixed["estimates"][0]["service_rows"] == 2


def test_a_try_the_service_billed_twice_counts_twice():
    retried = entry("call-2", "unconfirmed", est=900, rep=1000, ids=("inf-3",))
    (fixed,) = reconcile_records(
        [record(retried)], [log_row(2, "call-2", 1000), log_row(3, "call-2", 1000)]
    ).records
    assert fixed["credits_used"] == 2000
    assert fixed["usd_spent"] == "0.001"


def test_a_call_without_rows_in_a_covering_window_was_never_billed():
    lost = entry("call-3", "unconfirmed", est=5000, ids=())
    (fixed,) = reconcile_records([record(lost, exact=100)], [], covered=True).records
    assert (fixed["credits_used"], fixed["estimated"]) == (100, False)
    assert fixed["estimates"][0]["service_credits"] == 0


def test_a_call_without_rows_outside_a_known_window_stays_estimated():
    lost = entry("call-3", "unconfirmed", est=5000, ids=())
    result = reconcile_records([record(lost, exact=100)], [], covered=False)
    (fixed,) = result.records
    assert (fixed["credits_used"], fixed["estimated"]) == (5100, True)
    assert fixed["estimates"][0] | {"reconciled": False, "reason": NOT_COVERED} == fixed["estimates"][0]
    (still,) = result.report.still_estimated
    assert (still.client_request_id, still.kind, still.reason) == ("call-3", "unconfirmed", NOT_COVERED)
    assert still.estimated_usd == Decimal("0.0025")


def test_without_a_client_request_id_the_rows_cannot_be_matched():
    anonymous, summed = entry(None, "no_usage"), entry(None, "summed", ids=())
    result = reconcile_records([record(anonymous, summed)], [log_row(1, None, 1)])
    assert result.records[0]["estimated"] is True
    assert [s.reason for s in result.report.still_estimated] == [NO_ID, SUMMED]
    assert result.report.reconciled == 0


def test_an_inference_id_without_a_row_yet_waits():
    cut = entry("call-1", ids=("inf-1", "inf-9"))
    result = reconcile_records([record(cut)], [log_row(1, "call-1", 1500)])
    assert result.records[0]["estimated"] is True
    assert result.records[0]["credits_used"] == 2000
    assert "inf-9" in result.report.still_estimated[0].reason


def test_a_row_without_our_id_is_matched_by_an_inference_id_we_saw():
    (fixed,) = reconcile_records([record(entry("call-1"))], [log_row(1, None, 1234)]).records
    assert fixed["credits_used"] == 1234


def test_the_ledger_wins_over_the_logs_and_the_logs_fill_in_what_it_lacks():
    two = entry("call-1", "unconfirmed", est=1000, rep=1000, ids=("inf-1", "inf-2"))
    rows = [log_row(1, "call-1", 1000), log_row(2, "call-1", 1000)]
    ledger = [charge("inf-1", 1200), charge("inf-1", 5, direction="TOPUP", type="REFUND"), charge("other", 9)]
    (fixed,) = reconcile_records([record(two)], rows, ledger=ledger).records
    assert fixed["credits_used"] == 2200
    assert fixed["estimates"][0]["source"] == "ledger+logs"


def test_a_combined_record_moves_its_totals_by_its_tries_and_mirrors_their_marks():
    first = record(entry("call-1", est=2000), try_number=1, exact=0)
    second = record(entry(None, "no_usage"), try_number=2, exact=500)
    combined = {
        "model": MODEL,
        "credits_used": first["credits_used"] + second["credits_used"],
        "usd_spent": str(Decimal(first["credits_used"] + second["credits_used"]) / 2_000_000),
        "estimated": True,
        "try_number": 2,
        "estimates": copy.deepcopy(first["estimates"] + second["estimates"]),
        "tries": [first, second],
    }
    (fixed,) = reconcile_records([combined], [log_row(1, "call-1", 100)]).records
    assert fixed["credits_used"] == 100 + 2500
    assert fixed["usd_spent"] == "0.0013"
    assert [t["credits_used"] for t in fixed["tries"]] == [100, 2500]
    assert fixed["tries"][0]["usd_spent"] == "0.00005"
    assert fixed["tries"][0]["estimated"] is False
    assert fixed["tries"][1]["estimated"] is True
    assert fixed["estimated"] is True  # the second try's call cannot be matched
    assert fixed["estimates"][0]["reconciled"] is True
    assert fixed["estimates"][0]["service_credits"] == 100
    assert "reconciled" not in fixed["estimates"][1]


def test_reconciling_again_changes_nothing():
    first = reconcile_records([record(entry("call-1"), exact=1000)], [log_row(1, "call-1", 1500)])
    again = reconcile_records(first.records, [log_row(1, "call-1", 9999)])
    assert again.records == first.records
    assert (again.report.reconciled, again.report.already_reconciled) == (0, 1)
    assert estimate_entries(first.records) == []


def test_a_reconciled_call_releases_what_it_held_as_unsettled():
    held = entry("call-1", unsettled_usd="0.004")
    given = record(held, usd_unsettled="0.005")
    (fixed,) = reconcile_records([given], [log_row(1, "call-1", 1500)]).records
    assert fixed["estimates"][0]["unsettled_usd"] == "0"
    assert fixed["usd_unsettled"] == "0.001"


def test_records_without_estimates_pass_unchanged():
    exact = record(exact=1000)
    older = {"model": MODEL, "credits_used": 7, "usd_spent": "0.0000035", "estimated": True}
    result = reconcile_records([exact, older], [log_row(1, "call-1", 1)])
    assert result.records == [exact, older]
    assert result.report.as_dict()["reconciled"] == 0


def test_only_the_rows_of_estimated_calls_are_priced_from_the_ledger():
    records = [record(entry("call-1", ids=())), record(exact=5)]
    rows = [log_row(1, "call-1", 10), log_row(2, "call-2", 10)]
    assert inference_ids_to_price(records, rows) == {"inf-1"}


def test_the_report_says_what_moved_and_what_is_still_estimated():
    result = reconcile_records(
        [record(entry("call-1"), entry(None, "no_usage"))], [log_row(1, "call-1", 1500)], covered=True
    )
    data = result.report.as_dict()
    assert data["reconciled"] == 1
    assert (data["recorded_usd"], data["service_usd"], data["usd_difference"]) == (
        "0.001",
        "0.00075",
        "-0.00025",
    )
    assert data["still_estimated"] == [
        {
            "record": 0,
            "client_request_id": None,
            "model": MODEL,
            "kind": "no_usage",
            "usd": "0.001",
            "reason": NO_ID,
        }
    ]
    assert "1 still estimated" in result.report.summary()


def test_reconciliation_marks_survive_a_cost_record_round_trip():
    from airflow_provider_qwen.cost.record import CostRecord

    entry = {
        "client_request_id": "r1",
        "model": "m",
        "kind": "cut_stream",
        "estimated_usd": "0.1",
        "reported_usd": "0",
        "reconciled": True,
        "service_usd": "0.05",
        "service_credits": 100000,
    }
    record = CostRecord.from_xcom({"try_number": 1, "usd_spent": "0.05", "estimates": [entry]})
    (back,) = record.to_xcom()["estimates"]
    assert (back["reconciled"], back["service_usd"], back["service_credits"]) == (True, "0.05", 100000)
