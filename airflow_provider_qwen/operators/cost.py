"""The cost path every Qwen operator shares: budget check before a request, record after it.

One ``TaskCost`` lives for one try of one task instance. Before each request it refuses one whose
worst case would take the task (all its tries) past ``max_cost_usd`` or the DAG run (all its Qwen
tasks) past ``dag_run_budget_usd``; after each response it records the charge exactly, also when
the task then fails. What may have been charged without a reported cost is recorded as an
estimate: a stream cut before its usage chunk, and every try the client saw fail after its request
was sent (``unconfirmed_tries``). At the end of the try it writes the try's record to a journal
under the task folder (Airflow clears a task's XComs when a new try starts, the journal survives)
and the operator pushes it as the ``qwen_cost`` XCom: the task's figures over all its tries, with
a ``tries`` breakdown.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_qwen.client.cost import (
    Cost,
    CostLedger,
    PriceTable,
    estimate_prompt_tokens,
    estimate_text_tokens,
    estimated_usage,
    generated_text,
    output_cap,
    request_text,
    usd_text,
    worst_case_usd,
)
from airflow_provider_qwen.client.errors import BudgetExceededError, InvalidRequestError, StreamError
from airflow_provider_qwen.operators.cost_journal import CostJournal

if TYPE_CHECKING:
    from airflow_provider_qwen.client.models import ChatCompletion, Usage
    from airflow_provider_qwen.client.request import ChatRequest

log = logging.getLogger(__name__)

COST_XCOM_KEY = "qwen_cost"
RUN_SPEND_TTL_S = 30.0  # how long the other tasks' spend, read through XCom, is trusted before a re-read
COUNT_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "reasoning_tokens", "total_tokens")
USD_QUANTUM = Decimal("0.000001")


class BudgetRefusedError(BudgetExceededError, AirflowFailException):
    """A budget refused a request; the task fails without retries, since a retry would be refused too."""


def parse_usd(field: str, value: Any) -> Decimal | None:
    """A USD amount from an operator argument (number or rendered string), or a clear error."""
    if value is None or value == "":
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidRequestError(f"{field}={value!r} is not a number: give USD, e.g. 0.50") from None
    if not amount.is_finite() or amount < 0:
        raise InvalidRequestError(f"{field}={value!r} must be a finite amount of USD >= 0")
    return amount


def to_decimal(value: Any) -> Decimal:
    """A record's ``usd_spent`` (a decimal string, or a number after some XCom decoders) as Decimal."""
    try:
        return Decimal(str(value)) if value is not None else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def record_tries(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The per-try records inside a ``qwen_cost`` record (a record without ``tries`` is one try)."""
    tries = record.get("tries")
    if isinstance(tries, list) and tries:
        return [t for t in tries if isinstance(t, Mapping)]
    return [record]


def records_usd(records: Iterable[Any]) -> Decimal:
    """Exact USD sum of ``qwen_cost`` records, ignoring anything that is not a record."""
    return sum((to_decimal(r.get("usd_spent")) for r in records if isinstance(r, Mapping)), Decimal(0))


@dataclass
class CostTotals:
    """Exact sums over per-try cost records."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    credits_used: int = 0
    usd_spent: Decimal = field(default_factory=Decimal)
    estimated: bool = False
    tries: int = 0
    instances: int = 0

    def add_try(self, record: Mapping[str, Any]) -> None:
        for name in COUNT_FIELDS:
            setattr(self, name, getattr(self, name) + int(record.get(name) or 0))
        self.credits_used += int(record.get("credits_used") or 0)
        self.usd_spent += to_decimal(record.get("usd_spent"))
        self.estimated = self.estimated or bool(record.get("estimated"))
        self.tries += 1

    def fields(self) -> dict[str, Any]:
        """The summed ``qwen_cost`` fields, JSON-safe (USD as an exact decimal string)."""
        return {
            **{name: getattr(self, name) for name in COUNT_FIELDS},
            "credits_used": self.credits_used,
            "usd_spent": usd_text(self.usd_spent),
            "estimated": self.estimated,
        }

    def as_dict(self) -> dict[str, Any]:
        """``fields()`` plus how many tries and task instances they came from."""
        return {**self.fields(), "tries": self.tries, "instances": self.instances}


def combine_records(
    tries: list[Mapping[str, Any]], *, model: str | None, try_number: int | None
) -> dict[str, Any]:
    """One ``qwen_cost`` record over several tries: exact sums, ``estimated`` if any try was."""
    totals = CostTotals()
    for record in tries:
        totals.add_try(record)
    return {
        "model": model or ",".join(sorted({str(t.get("model")) for t in tries})),
        **totals.fields(),
        "try_number": try_number,
        "tries": [dict(t) for t in tries],
    }


def qwen_task_ids(dag: Any) -> list[str]:
    """Task ids of the DAG's Qwen operators (mapped ones too): the tasks a run budget adds up."""
    from airflow_provider_qwen.operators.base import QwenBaseOperator

    found = []
    for task in getattr(dag, "tasks", []):
        cls = getattr(task, "operator_class", None) or type(task)  # a MappedOperator names its class
        if isinstance(cls, type) and issubclass(cls, QwenBaseOperator):
            found.append(task.task_id)
    return found


def pull_cost_records(ti: Any, task_ids: Iterable[str], **where: Any) -> dict[str, list[Mapping[str, Any]]]:
    """The ``qwen_cost`` records of tasks of the run, every map index, by task id (Task SDK, no DB)."""
    found: dict[str, list[Mapping[str, Any]]] = {}
    for task_id in task_ids:
        # a list of task ids and no map_indexes: a list with the XCom of every map index of the task
        values = ti.xcom_pull(task_ids=[task_id], key=COST_XCOM_KEY, **where) or []
        found[task_id] = [v for v in values if isinstance(v, Mapping)]
    return found


class TaskCost:
    """Budgets and ledger of one task try."""

    def __init__(
        self,
        *,
        prices: PriceTable,
        max_cost_usd: Decimal | None = None,
        dag_run_budget_usd: Decimal | None = None,
        model: str | None = None,
        context: Any = None,
        journal: CostJournal | None = None,
    ) -> None:
        self.prices = prices
        self.max_cost_usd = max_cost_usd
        self.dag_run_budget_usd = dag_run_budget_usd
        self.context = context
        self.model = model
        self.ledger = CostLedger()
        self.by_model: dict[str, CostLedger] = {}
        self.ti = context.get("ti") if isinstance(context, Mapping) else None
        try_number = getattr(self.ti, "try_number", None)
        self.try_number: int | None = try_number if isinstance(try_number, int) else None
        self._journal = journal
        self._lock = threading.Lock()
        self._others: tuple[float, Decimal] | None = None  # (monotonic time read, USD)
        self.reserved_usd = Decimal(0)  # worst cases of requests in flight (see reserve)

    # -- what has been spent ----------------------------------------------------------------

    @property
    def spent_usd(self) -> Decimal:
        """Spent by this try."""
        return self.ledger.usd_spent

    @cached_property
    def journal(self) -> CostJournal:
        return self._journal if self._journal is not None else CostJournal.for_context(self.context)

    @cached_property
    def earlier_tries(self) -> list[dict[str, Any]]:
        """The journal's records of this task instance's earlier tries (their XComs are gone)."""
        if self.try_number is None:
            return []
        return [r for r in self.journal.read() if r["try_number"] < self.try_number]

    @property
    def task_spent_usd(self) -> Decimal:
        """Spent by this task instance over all its tries."""
        return records_usd(self.earlier_tries) + self.spent_usd

    def other_tasks_usd(self) -> Decimal:
        """Spent by the run's other Qwen task instances, from their ``qwen_cost`` XComs (re-read every 30 s).

        This task instance's own XCom was cleared when this try started, so it is not counted twice;
        other map indexes of the same task are counted.
        """
        dag = self.context.get("dag") if isinstance(self.context, Mapping) else None
        if dag is None or self.ti is None:
            return Decimal(0)
        now = time.monotonic()
        if self._others is None or now - self._others[0] > RUN_SPEND_TTL_S:
            records = pull_cost_records(self.ti, qwen_task_ids(dag) or list(getattr(dag, "task_ids", [])))
            self._others = (now, records_usd(r for values in records.values() for r in values))
        return self._others[1]

    # -- before a request -------------------------------------------------------------------

    def check(self, request: ChatRequest) -> None:
        """Refuse ``request`` (raise BudgetRefusedError) if its worst case would pass a budget."""
        self.release(self.reserve(request))

    def reserve(self, request: ChatRequest) -> Decimal:
        """``check``, then hold the request's worst case until ``release(amount)`` (after ``add``).

        Concurrent requests (async batch work) each hold their worst case while in flight, so
        together they cannot pass a budget that each alone would fit.
        """
        if self.max_cost_usd is None and self.dag_run_budget_usd is None:
            return Decimal(0)
        worst = worst_case_usd(request, self.prices)
        shown = worst.quantize(USD_QUANTUM)
        with self._lock:
            task_spent = self.task_spent_usd
            held = self.reserved_usd
            in_flight = f", {usd_text(held)} USD held by requests in flight" if held else ""
            if self.max_cost_usd is not None and task_spent + held + worst > self.max_cost_usd:
                earlier = f" ({len(self.earlier_tries)} earlier tries included)" if self.earlier_tries else ""
                raise BudgetRefusedError(
                    f"max_cost_usd={self.max_cost_usd} would be passed: this task spent "
                    f"{usd_text(task_spent)} USD so far{earlier}{in_flight}, the next request may cost up "
                    f"to {shown} USD; not sent"
                )
            if self.dag_run_budget_usd is not None:
                others = self.other_tasks_usd()
                if others + task_spent + held + worst > self.dag_run_budget_usd:
                    raise BudgetRefusedError(
                        f"dag_run_budget_usd={self.dag_run_budget_usd} would be passed: this DAG run spent "
                        f"{usd_text(others + task_spent)} USD so far ({usd_text(others)} by other tasks, "
                        f"{usd_text(task_spent)} by this one){in_flight}, the next request may cost up to "
                        f"{shown} USD; not sent"
                    )
            self.reserved_usd += worst
        return worst

    def release(self, amount: Decimal) -> None:
        """Drop a reservation once its request was answered (and ``add``-ed) or failed."""
        with self._lock:
            self.reserved_usd -= amount

    @property
    def has_budget(self) -> bool:
        return self.max_cost_usd is not None or self.dag_run_budget_usd is not None

    @contextmanager
    def spending(self, request: ChatRequest) -> Iterator[None]:
        """Hold ``request``'s worst case while it is in flight; record what a failure was charged.

        Under a budget the client does not retry a try that failed after its request was sent
        (``retries_after_send(False)``): such a try may have been paid, and the worst case held is
        for one paid try. The failure is recorded as an estimated charge and fails the call.
        """
        from airflow_provider_qwen.client.client import retries_after_send

        held = self.reserve(request)
        try:
            with retries_after_send(not self.has_budget):
                yield
        except Exception as exc:
            self.add_from_error(exc, request)
            raise
        finally:
            self.release(held)

    # -- after a request --------------------------------------------------------------------

    def _model_ledger(self, model: str) -> CostLedger:
        with self._lock:
            return self.by_model.setdefault(model, CostLedger())

    def add(self, completion: ChatCompletion, request: ChatRequest | None = None) -> None:
        """Record one paid response, and an estimate for each earlier try of its call that may be paid."""
        self.ledger.add(completion)
        self._model_ledger(completion.model).add(completion)
        self.add_unconfirmed(completion.unconfirmed_tries, completion.model, request, completion.usage)

    def add_charge(self, model: str, cost: Cost, usage: Any = None) -> None:
        """Record a charge that came without a parsed response."""
        self.ledger.add_charge(model, cost, usage)
        self._model_ledger(model).add_charge(model, cost, usage)

    def add_unconfirmed(
        self, tries: int, model: str, request: ChatRequest | None, usage: Usage | None = None
    ) -> None:
        """Record ``tries`` that failed after being sent, each as one estimated charge.

        Each is priced as the call's answer (``usage``: the same prompt, the answer's length) when
        one arrived, else as the request's estimated prompt and its output cap (0 if unbounded).
        """
        if tries <= 0:
            return
        if usage is not None:
            tokens = estimated_usage(usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens)
        else:
            prompt = estimate_prompt_tokens(request_text(request)) if request is not None else 0
            tokens = estimated_usage(prompt, output_cap(request) if request is not None else 0)
        cost = Cost.estimate(model, tokens, self.prices)
        for _ in range(tries):
            self.add_charge(model, cost, tokens)

    def add_from_error(self, error: BaseException, request: ChatRequest | None = None) -> None:
        """Record what a failed call may still have been charged for.

        Exactly when the service said so (a cut stream's usage, an unparsable 200's cost headers);
        estimated for a stream cut before its usage (prompt estimated from ``request``, completion
        from the text that arrived) and for every try that failed after being sent.
        """
        partial: ChatCompletion | None = getattr(error, "partial", None)
        unconfirmed = int(getattr(error, "unconfirmed_tries", 0) or 0)  # the partial may carry them too
        if partial is None:
            model = getattr(request, "model", None) or self.model or ""
            cost = getattr(error, "cost", None)
            if cost is not None:
                self.add_charge(self.model or model, cost)
            self.add_unconfirmed(unconfirmed, model, request)
            return
        model = partial.model or self.model or ""
        if partial.usage is not None or (partial.meta is not None and partial.meta.usage is not None):
            self.add(partial, request)  # what the stream reported, and the partial's unconfirmed tries
            self.add_unconfirmed(unconfirmed - partial.unconfirmed_tries, model, request, partial.usage)
            return
        if not (isinstance(error, StreamError) and error.reported_by_service):
            self.add_cut_stream(partial, request)
        self.add_unconfirmed(max(unconfirmed, partial.unconfirmed_tries), model, request)

    def add_cut_stream(self, partial: ChatCompletion, request: ChatRequest | None) -> None:
        """Record a stream cut before its usage: the request's prompt and the text so far, estimated.

        The completion estimate never passes the request's output cap: the service cannot bill more.
        """
        answer, reasoning = generated_text(partial)
        thinking = estimate_text_tokens(reasoning)
        completion = estimate_text_tokens(answer) + thinking
        prompt, cap = 0, 0
        if request is not None:
            prompt, cap = estimate_prompt_tokens(request_text(request)), output_cap(request)
        if cap:
            completion, thinking = min(completion, cap), min(thinking, cap)
        tokens = estimated_usage(prompt, completion, thinking)
        model = partial.model or self.model or ""
        self.add_charge(model, Cost.estimate(model, tokens, self.prices), tokens)

    # -- the records ------------------------------------------------------------------------

    def try_record(self, try_number: int | None = None) -> dict[str, Any]:
        """This try alone, stamped with its try number."""
        return self.ledger.record(model=self.model, try_number=try_number or self.try_number)

    def record(self, try_number: int | None = None) -> dict[str, Any]:
        """The ``qwen_cost`` record: every try of this task instance so far, with a ``tries`` list."""
        number = try_number or self.try_number
        tries = [*self.earlier_tries, self.try_record(number)]
        return combine_records(tries, model=self.model, try_number=number)

    def finish(self) -> dict[str, Any]:
        """Journal this try (a failure to is logged, not raised) and return the ``qwen_cost`` record."""
        try:
            self.journal.write(self.try_record())
        except Exception as exc:
            log.warning("could not write the Qwen cost journal (a retry will not see this try): %s", exc)
        return self.record()
