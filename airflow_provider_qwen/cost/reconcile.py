"""Estimates replaced by the service's own figures: ``qwen_cost`` records against its request logs.

Each per-try record (and each try of a combined record's ``tries``) lists its estimated calls in
``estimates``: ``{"client_request_id", "model", "kind", "estimated_usd", "estimated_credits",
"reported_usd", "reported_credits", "inference_ids"}``; the call's spend in the record is
estimated + reported. The service's figure for the call is the sum of its log rows, the rows with
its ``client_request_id`` (every try of a call sends the same one); a row's cost comes from the
ledger (``reference_id`` = inference id) when the ledger has it, else from the row. A call with no
row in a window that covers it was never billed (0).

An entry stays estimated when it has no ``client_request_id``, when an inference id the client saw
has no row yet (the service records a charge after the answer), or when the rows were not read for
a window known to cover the call. No Airflow import; records in are never changed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from airflow_provider_qwen.client.pricing import to_decimal, usd_from_credits, usd_text
from airflow_provider_qwen.client.records import LogRow, Transaction

ESTIMATES_KEY = "estimates"
NO_ID = "no client_request_id: the service's rows cannot be matched to the call"
SUMMED = "summed: the record kept the first calls' entries and added up the rest"
NOT_COVERED = "no row in the logs read, and they were not read for a window covering the call"


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True)
class ServiceFigure:
    """What the service billed one call: exact credits over its rows (``source``: ledger and/or logs)."""

    credits: int
    rows: int
    charged: int
    inference_ids: tuple[str, ...]
    source: str

    @property
    def usd(self) -> Decimal:
        return usd_from_credits(self.credits)


@dataclass(frozen=True)
class StillEstimated:
    """An estimated call that could not be reconciled, and why (``record``: its index in the input)."""

    record: int
    client_request_id: str | None
    model: str
    kind: str
    estimated_usd: Decimal
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "record": self.record,
            "client_request_id": self.client_request_id,
            "model": self.model,
            "kind": self.kind,
            "usd": usd_text(self.estimated_usd),
            "reason": self.reason,
        }


@dataclass
class ReconcileReport:
    """Entries reconciled, entries still estimated (and why), and how much the figures moved."""

    reconciled: int = 0
    already_reconciled: int = 0
    still_estimated: list[StillEstimated] = field(default_factory=list)
    recorded_usd: Decimal = Decimal(0)  # estimated + reported, of the entries reconciled now
    service_usd: Decimal = Decimal(0)
    credits_difference: int = 0

    @property
    def usd_difference(self) -> Decimal:
        return self.service_usd - self.recorded_usd

    def as_dict(self) -> dict[str, Any]:
        return {
            "reconciled": self.reconciled,
            "already_reconciled": self.already_reconciled,
            "still_estimated": [one.as_dict() for one in self.still_estimated],
            "recorded_usd": usd_text(self.recorded_usd),
            "service_usd": usd_text(self.service_usd),
            "usd_difference": usd_text(self.usd_difference),
            "credits_difference": self.credits_difference,
        }

    def summary(self) -> str:
        text = (
            f"Reconciled {self.reconciled} estimated call(s) with the service's records: "
            f"{usd_text(self.recorded_usd)} USD recorded, {usd_text(self.service_usd)} USD billed "
            f"(difference {usd_text(self.usd_difference)} USD)"
        )
        if self.still_estimated:
            reasons = sorted({one.reason for one in self.still_estimated})
            text += f"; {len(self.still_estimated)} still estimated: " + "; ".join(reasons)
        return text


@dataclass
class Reconciliation:
    """The records with estimates replaced (same order as given), and the report."""

    records: list[dict[str, Any]]
    report: ReconcileReport


class ServiceRecords:
    """The service's rows, indexed: log rows by ``client_request_id`` and by inference id, ledger
    charges (``CHARGE`` / ``MODEL_USAGE``) in credits by ``reference_id``."""

    def __init__(self, rows: Iterable[LogRow], ledger: Iterable[Transaction] | None = None) -> None:
        self.by_request: dict[str, list[LogRow]] = {}
        self.by_inference: dict[str, list[LogRow]] = {}
        for row in rows:
            if row.client_request_id:
                self.by_request.setdefault(row.client_request_id, []).append(row)
            if row.inference_id:
                self.by_inference.setdefault(row.inference_id, []).append(row)
        self.ledger: dict[str, int] | None = None
        if ledger is not None:
            self.ledger = {}
            for entry in ledger:
                if entry.is_model_charge and entry.reference_id:
                    credits = self.ledger.get(entry.reference_id, 0) + entry.amount.exact_credits
                    self.ledger[entry.reference_id] = credits

    def rows_of(self, client_request_id: str, inference_ids: Sequence[str]) -> list[LogRow]:
        """The call's rows: its id's, and those of inference ids it saw that carry no other id."""
        found = {id(row): row for row in self.by_request.get(client_request_id, [])}
        for inference_id in inference_ids:
            for row in self.by_inference.get(inference_id, []):
                if row.client_request_id in (None, client_request_id):
                    found[id(row)] = row
        return list(found.values())

    def figure(self, rows: Sequence[LogRow]) -> ServiceFigure:
        credits, charged, sources = 0, 0, set()
        for row in rows:
            if self.ledger is not None and row.inference_id in self.ledger:
                amount, source = self.ledger[row.inference_id], "ledger"
            else:
                amount, source = row.cost.exact_credits, "logs"
            credits += amount
            charged += amount > 0
            sources.add(source)
        ids = tuple(row.inference_id for row in rows if row.inference_id)
        return ServiceFigure(credits, len(rows), charged, ids, "+".join(sorted(sources)) or "logs")


def estimate_entries(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Every estimate entry not yet reconciled, over each record's tries."""
    return [
        entry
        for record in records
        for one_try in _tries(record)
        for entry in _entries(one_try)
        if entry.get("reconciled") is not True
    ]


def inference_ids_to_price(records: Iterable[Mapping[str, Any]], rows: Iterable[LogRow]) -> set[str]:
    """The inference ids of the rows that reconciling ``records`` would read: the ledger lookups."""
    index = ServiceRecords(rows)
    ids: set[str] = set()
    for entry in estimate_entries(records):
        crid = entry.get("client_request_id")
        if isinstance(crid, str) and crid:
            ids |= {r.inference_id for r in index.rows_of(crid, _ids(entry)) if r.inference_id}
    return ids


def reconcile_records(
    records: Sequence[Mapping[str, Any]],
    rows: Iterable[LogRow],
    *,
    ledger: Iterable[Transaction] | None = None,
    covered: bool = True,
) -> Reconciliation:
    """``records`` with every estimate the service's rows settle replaced by the service's figure.

    ``covered``: the rows are every row of a window that covers the records' calls, so a call
    without rows was never billed. Only ``usd_spent`` / ``credits_used`` move (and ``estimated``;
    a reconciled call's ``unsettled_usd`` becomes 0, and the record's ``usd_unsettled`` with it);
    token counts stay the client's.
    """
    index = ServiceRecords(rows, ledger)
    report = ReconcileReport()
    out: list[dict[str, Any]] = []
    for number, record in enumerate(records):
        whole = copy.deepcopy(dict(record))
        tries = whole.get("tries")
        if isinstance(tries, list) and tries:
            moved = _Moved()
            for one_try in tries:
                if isinstance(one_try, dict):
                    own = _reconcile_try(one_try, number, index, report, covered)
                    _apply(one_try, own)
                    moved.merge(own)
            _apply(whole, moved)
            whole["estimated"] = any(bool(t.get("estimated")) for t in tries if isinstance(t, Mapping))
            for entry in _entries(whole):  # a combined record's own list mirrors its tries'
                mark = moved.marks.get(str(entry.get("client_request_id")))
                if mark is not None and entry.get("reconciled") is not True:
                    entry.update(mark)
        else:
            _apply(whole, _reconcile_try(whole, number, index, report, covered))
        out.append(whole)
    return Reconciliation(out, report)


@dataclass
class _Moved:
    """What reconciling moved: credits, USD, unsettled USD released, and the marks made by request id."""

    credits: int = 0
    usd: Decimal = Decimal(0)
    unsettled: Decimal = Decimal(0)
    marks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def merge(self, other: _Moved) -> None:
        self.credits += other.credits
        self.usd += other.usd
        self.unsettled += other.unsettled
        self.marks.update(other.marks)


def _reconcile_try(
    record: dict[str, Any], number: int, index: ServiceRecords, report: ReconcileReport, covered: bool
) -> _Moved:
    """Reconcile one try's entries in place (not its totals: see ``_apply``); what it moved."""
    entries = _entries(record)
    moved = _Moved()
    for entry in entries:
        if entry.get("reconciled") is True:
            report.already_reconciled += 1
            continue
        recorded_usd = to_decimal(entry.get("estimated_usd")) + to_decimal(entry.get("reported_usd"))
        recorded_credits = _int(entry.get("estimated_credits")) + _int(entry.get("reported_credits"))
        crid = entry.get("client_request_id")
        reason, figure = _settle(crid, entry, index, covered)
        if figure is None:
            entry.update(reconciled=False, reason=reason)
            if isinstance(crid, str) and crid:
                moved.marks[crid] = {"reconciled": False, "reason": reason}
            report.still_estimated.append(
                StillEstimated(
                    number,
                    crid if isinstance(crid, str) else None,
                    str(entry.get("model") or record.get("model") or ""),
                    str(entry.get("kind") or ""),
                    to_decimal(entry.get("estimated_usd")),
                    reason,
                )
            )
            continue
        moved.credits += figure.credits - recorded_credits
        moved.usd += figure.usd - recorded_usd
        moved.unsettled += to_decimal(entry.get("unsettled_usd"))
        mark = {
            "reconciled": True,
            "service_usd": usd_text(figure.usd),
            "service_credits": figure.credits,
            "service_rows": figure.rows,
            "service_inference_ids": list(figure.inference_ids),
            "source": figure.source,
        }
        if "unsettled_usd" in entry:
            mark["unsettled_usd"] = "0"
        entry.pop("reason", None)
        entry.update(mark)
        moved.marks[str(crid)] = mark
        report.reconciled += 1
        report.recorded_usd += recorded_usd
        report.service_usd += figure.usd
        report.credits_difference += figure.credits - recorded_credits
    if entries:
        record["estimated"] = any(entry.get("reconciled") is not True for entry in entries)
    return moved


def _settle(
    crid: Any, entry: Mapping[str, Any], index: ServiceRecords, covered: bool
) -> tuple[str, ServiceFigure | None]:
    if not isinstance(crid, str) or not crid:
        return (SUMMED if entry.get("kind") == "summed" else NO_ID), None
    seen = _ids(entry)
    rows = index.rows_of(crid, seen)
    missing = sorted(set(seen) - {row.inference_id for row in rows})
    if missing:
        reason = (
            f"no log row yet for inference id {', '.join(missing)} (the service records a charge "
            "after the answer; reconcile again later)"
        )
        return reason, None
    if not rows and not covered:
        return NOT_COVERED, None
    return "", index.figure(rows)


def _apply(record: dict[str, Any], moved: _Moved) -> None:
    if moved.credits or moved.usd:
        record["credits_used"] = _int(record.get("credits_used")) + moved.credits
        record["usd_spent"] = usd_text(to_decimal(record.get("usd_spent")) + moved.usd)
    if moved.unsettled and "usd_unsettled" in record:
        left = max(to_decimal(record.get("usd_unsettled")) - moved.unsettled, Decimal(0))
        record["usd_unsettled"] = usd_text(left)


def _tries(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    tries = record.get("tries")
    if isinstance(tries, list) and tries:
        return [t for t in tries if isinstance(t, Mapping)]
    return [record]


def _entries(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    entries = record.get(ESTIMATES_KEY)
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _ids(entry: Mapping[str, Any]) -> list[str]:
    ids = entry.get("inference_ids")
    return [i for i in ids if isinstance(i, str) and i] if isinstance(ids, list) else []
