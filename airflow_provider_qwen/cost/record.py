"""The ``qwen_cost`` record and the one totals type that every sum of usage and cost goes through."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from airflow_provider_qwen.client.errors import InvalidRequestError
from airflow_provider_qwen.client.pricing import Cost, to_decimal, usd_text

if TYPE_CHECKING:
    from airflow_provider_qwen.client.models import ChatCompletion, Usage

COST_XCOM_KEY = "qwen_cost"
COUNT_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "reasoning_tokens", "total_tokens")
MAX_ESTIMATES = 1000  # estimate entries kept per record; the rest are summed into one entry
ESTIMATE_KINDS = ("cut_stream", "unconfirmed", "no_usage", "unfinished", "summed", "in_flight")
IN_FLIGHT = "in_flight"  # a deferred call not answered yet: its worst case, all unsettled


def parse_usd(field_name: str, value: Any) -> Decimal | None:
    """A USD amount from an operator argument (number or rendered string), or a clear error."""
    if value is None or value == "":
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidRequestError(f"{field_name}={value!r} is not a number: give USD, e.g. 0.50") from None
    if not amount.is_finite() or amount < 0:
        raise InvalidRequestError(f"{field_name}={value!r} must be a finite amount of USD >= 0")
    return amount


@dataclass
class Estimate:
    """One call whose cost is (partly) estimated: what it was estimated at, what the service confirmed
    of it, and how to find it in the service's records (``client_request_id``, inference ids).

    ``unsettled_usd`` is what the call may still cost beyond its estimate (up to its worst case):
    budgets count it as spent until the service's figure replaces the estimate.
    """

    client_request_id: str | None
    model: str
    kind: str = ""  # one of ESTIMATE_KINDS; "" while nothing is estimated
    estimated: Cost = field(default_factory=lambda: Cost(estimated=True))
    reported: Cost = field(default_factory=Cost)
    inference_ids: list[str] = field(default_factory=list)
    unsettled_usd: Decimal = Decimal(0)
    marks: dict[str, Any] = field(default_factory=dict)  # what reconciliation added, kept as is

    @classmethod
    def of(cls, client_request_id: str | None, model: str, inference_id: str | None = None) -> Estimate:
        return cls(client_request_id, model, inference_ids=[inference_id] if inference_id else [])

    def add(self, cost: Cost) -> None:
        """A charge of this call: estimated or confirmed."""
        if cost.estimated:
            self.estimated = self.estimated + cost
        else:
            self.reported = self.reported + cost

    def to_dict(self) -> dict[str, Any]:
        return {
            "client_request_id": self.client_request_id,
            "model": self.model,
            "kind": self.kind,
            "estimated_usd": usd_text(self.estimated.usd_spent),
            "estimated_credits": self.estimated.credits_used,
            "reported_usd": usd_text(self.reported.usd_spent),
            "reported_credits": self.reported.credits_used,
            "inference_ids": list(self.inference_ids),
            "unsettled_usd": usd_text(self.unsettled_usd),
            **self.marks,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Estimate:
        rid = data.get("client_request_id")
        ids = data.get("inference_ids")
        return cls(
            client_request_id=str(rid) if rid else None,
            model=str(data.get("model") or ""),
            kind=str(data.get("kind") or "summed"),
            estimated=Cost(_int(data.get("estimated_credits")), to_decimal(data.get("estimated_usd")), True),
            reported=Cost(_int(data.get("reported_credits")), to_decimal(data.get("reported_usd"))),
            inference_ids=[str(i) for i in ids] if isinstance(ids, list) else [],
            unsettled_usd=to_decimal(data.get("unsettled_usd")),
            marks={k: v for k, v in data.items() if k not in _ESTIMATE_KEYS},
        )


_ESTIMATE_KEYS = frozenset(
    {
        "client_request_id",
        "model",
        "kind",
        "estimated_usd",
        "estimated_credits",
        "reported_usd",
        "reported_credits",
        "inference_ids",
        "unsettled_usd",
    }
)


def _capped(estimates: list[Estimate]) -> list[Estimate]:
    """At most MAX_ESTIMATES entries: past that, the rest summed into one (not reconcilable)."""
    if len(estimates) <= MAX_ESTIMATES:
        return estimates
    rest = Estimate(None, "", kind="summed")
    for one in estimates[MAX_ESTIMATES - 1 :]:
        rest.estimated = rest.estimated + one.estimated
        rest.reported = rest.reported + one.reported
        rest.unsettled_usd += one.unsettled_usd
    return [*estimates[: MAX_ESTIMATES - 1], rest]


@dataclass
class CostTotals:
    """Exact sums of requests, tokens and cost; ``tries`` and ``instances`` count what was summed."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    cost: Cost = field(default_factory=Cost)
    models: set[str] = field(default_factory=set)
    tries: int = 0
    instances: int = 0
    estimates: list[Estimate] = field(default_factory=list)

    @property
    def usd_spent(self) -> Decimal:
        return self.cost.usd_spent

    @property
    def usd_unsettled(self) -> Decimal:
        """What the estimated calls may still cost beyond their estimates (see ``Estimate``)."""
        return sum((e.unsettled_usd for e in self.estimates), Decimal(0))

    @property
    def usd_at_most(self) -> Decimal:
        """The most this can have cost: spent plus unsettled. Budgets count this."""
        return self.usd_spent + self.usd_unsettled

    def add(self, completion: ChatCompletion) -> Cost:
        """One paid response; returns its cost."""
        return self.add_charge(completion.model, completion.cost, completion.usage)

    def add_charge(self, model: str, cost: Cost, usage: Usage | None = None, *, requests: int = 1) -> Cost:
        """A charge that may come without a parsed response (a cut stream, an unparsable body)."""
        self.requests += requests
        if usage is not None:
            self.prompt_tokens += usage.prompt_tokens
            self.completion_tokens += usage.completion_tokens
            self.reasoning_tokens += usage.reasoning_tokens
            self.total_tokens += usage.total_tokens
        self.cost = self.cost + cost
        if model:
            self.models.add(model)
        return cost

    def add_record(self, record: Mapping[str, Any]) -> None:
        """One try's ``qwen_cost`` fields (or a checkpoint's), read leniently."""
        for name in COUNT_FIELDS:
            setattr(self, name, getattr(self, name) + _int(record.get(name)))
        self.cost = self.cost + Cost(
            _int(record.get("credits_used")),
            to_decimal(record.get("usd_spent")),
            bool(record.get("estimated")),
        )
        if record.get("model"):
            self.models.add(str(record["model"]))
        estimates = record.get("estimates")
        if isinstance(estimates, list):
            self.estimates.extend(Estimate.from_dict(e) for e in estimates if isinstance(e, Mapping))
        elif to_decimal(record.get("usd_unsettled")):  # a record whose entries were not kept
            self.estimates.append(
                Estimate(None, "", "summed", unsettled_usd=to_decimal(record["usd_unsettled"]))
            )
        self.tries += 1

    def merge(self, other: CostTotals) -> None:
        for name in COUNT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.cost = self.cost + other.cost
        self.models |= other.models
        self.tries += other.tries
        self.instances += other.instances
        self.estimates.extend(other.estimates)

    def fields(self) -> dict[str, Any]:
        """The summed ``qwen_cost`` fields, JSON-safe (USD as an exact decimal string)."""
        return {
            **{name: getattr(self, name) for name in COUNT_FIELDS},
            "credits_used": self.cost.credits_used,
            "usd_spent": usd_text(self.cost.usd_spent),
            "estimated": self.cost.estimated,
            "usd_unsettled": usd_text(self.usd_unsettled),
        }

    def charge_fields(self) -> dict[str, Any]:
        """What some work cost: requests, credits, USD, estimated (checkpoint and reuse records)."""
        fields = self.fields()
        return {name: fields[name] for name in ("requests", "credits_used", "usd_spent", "estimated")}

    def as_dict(self) -> dict[str, Any]:
        """``fields()`` plus how many tries and task instances they came from."""
        return {**self.fields(), "tries": self.tries, "instances": self.instances}

    def record(self, *, model: str | None = None, try_number: int | None = None) -> CostRecord:
        """These totals as one try's ``qwen_cost`` record."""
        return CostRecord(model=model or ",".join(sorted(self.models)), totals=self, try_number=try_number)


@dataclass
class CostRecord:
    """The ``qwen_cost`` XCom: a task's figures over its tries (``tries`` lists each try's own record)."""

    model: str
    totals: CostTotals
    try_number: int | None = None
    tries: list[CostRecord] | None = None

    @classmethod
    def combine(cls, tries: Iterable[CostRecord], *, model: str | None, try_number: int | None) -> CostRecord:
        """One record over several tries: exact sums, ``estimated`` if any try was."""
        listed = list(tries)
        totals = CostTotals()
        for one in listed:
            totals.add_record(one.to_xcom())
        return cls(
            model=model or ",".join(sorted({one.model for one in listed})),
            totals=totals,
            try_number=try_number,
            tries=listed,
        )

    @property
    def usd_spent(self) -> Decimal:
        return self.totals.usd_spent

    def each_try(self) -> list[CostRecord]:
        """The per-try records (a record without ``tries`` is one try)."""
        return self.tries or [self]

    def to_xcom(self) -> dict[str, Any]:
        """JSON-safe, the documented shape."""
        data: dict[str, Any] = {"model": self.model, **self.totals.fields(), "try_number": self.try_number}
        data["estimates"] = [e.to_dict() for e in _capped(self.totals.estimates)]
        if self.tries is not None:
            data["tries"] = [one.to_xcom() for one in self.tries]
        return data

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> CostRecord:
        """A record read back (an XCom, a journal file); lenient about numbers a decoder changed."""
        totals = CostTotals()
        totals.add_record(data)
        totals.tries = 0
        tries = data.get("tries")
        number = data.get("try_number")
        return cls(
            model=str(data.get("model") or ""),
            totals=totals,
            try_number=number if isinstance(number, int) and not isinstance(number, bool) else None,
            tries=[cls.from_xcom(t) for t in tries if isinstance(t, Mapping)]
            if isinstance(tries, list)
            else None,
        )


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0
