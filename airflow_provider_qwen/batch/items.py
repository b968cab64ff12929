"""One item from prompt to result: render, look up the checkpoint, send (with structured-output
repairs, or map-reduce over parts of a long text), keep large results out of XCom, record it.

Item text is data: it reaches the prompt template only as the ``item`` variable, and partial
results reach the reduce template only as ``summaries``; neither is ever compiled as a template.

Each item is its own work, identical items too (the checkpoint key holds the item's index); with
``deduplicate`` an item whose request another item is already sending waits for that answer and
takes it (reported ``deduplicated``). Token counting and the hashing of a large item's request
run in a worker thread, never on the batch's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_provider_qwen.batch.checkpoint import (
    Journal,
    record_problem,
    request_hash_and_size,
    work_key,
)
from airflow_provider_qwen.batch.feed import after_sends
from airflow_provider_qwen.batch.long_items import LongItems
from airflow_provider_qwen.batch.readers import BadItem
from airflow_provider_qwen.client.errors import BudgetExceededError, QwenError
from airflow_provider_qwen.cost.record import CostTotals

if TYPE_CHECKING:
    from airflow_provider_qwen.batch.outputs import OutputStore
    from airflow_provider_qwen.client.builder import RequestBuilder
    from airflow_provider_qwen.client.models import ChatCompletion
    from airflow_provider_qwen.client.request import ChatRequest
    from airflow_provider_qwen.client.structured import ToolSpec


class BatchStoppedBeforeSendError(QwenError):
    """The batch stopped while this request waited for a slot: it is not sent."""


# an item that met one of these before paying for any request is reported unstarted, not failed
UNSENT_ERRORS: tuple[type[BaseException], ...] = (BudgetExceededError, BatchStoppedBeforeSendError)
ERROR_CHARS = 500  # an error message kept in the qwen_batch report is cut to this length
BIG_CHARS = 100_000  # an item (with the messages before it) longer than this is prepared in a thread
REJECTIONS_LOGGED = 20  # mismatched checkpoint records named in the log one by one; then only counted

DEFAULT_REDUCE_PROMPT = """\
The text was too long to process at once, so it was split into {{ summaries | length }} consecutive \
parts and each part was processed separately with these instructions:

<instructions>
{{ instructions }}
</instructions>

Combine the partial results below into one result for the whole text that follows the same \
instructions. Do not mention the parts.
{% for summary in summaries %}
<part number="{{ loop.index }}">
{{ summary }}
</part>
{% endfor %}"""

Render = Callable[[Mapping[str, Any]], str]
Send = Callable[["ChatRequest"], Awaitable["ChatCompletion"]]
T = TypeVar("T")


@dataclass
class ItemPlan:
    """What is fixed for every item of one batch."""

    render_prompt: Render  # variables (item, index, chunk ...) -> the user message
    requests: RequestBuilder  # messages -> a validated request
    base_messages: list[dict[str, Any]] = field(default_factory=list)  # system prompt, history
    spec: ToolSpec | None = None  # structured result through a forced tool call
    max_repairs: int = 2
    max_input_tokens: int | None = None
    chunk_field: str = "text"
    render_reduce: Render | None = None
    deduplicate: bool = False  # identical requests of different items sent once
    base_chars: int = 0  # characters of ``base_messages`` (decides what is prepared off the loop)


@dataclass
class ItemOutcome:
    """What became of one item; ``exception`` is kept for the runner (fatal or budget stop)."""

    index: int
    status: str  # "ok", "failed" or "unstarted"
    result: Any = None
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False)
    chunked: bool = False
    parts: int = 0
    resumed: bool = False
    truncated: bool = False
    deduplicated: bool = False  # the answer of an identical item of this try, taken instead of sent
    reused: CostTotals = field(default_factory=CostTotals)  # checkpointed work taken instead of sent


@dataclass
class _Spend:
    """What producing one piece of work took: requests paid now, and checkpointed work reused."""

    paid: CostTotals = field(default_factory=CostTotals)
    reused: CostTotals = field(default_factory=CostTotals)
    truncated: bool = False

    def merge(self, other: _Spend) -> None:
        self.paid.merge(other.paid)
        self.reused.merge(other.reused)
        self.truncated = self.truncated or other.truncated

    def reuse(self, record: Mapping[str, Any]) -> None:
        """Count a checkpoint record's recorded cost as reused (paid by the try that wrote it)."""
        self.reused.add_record(record)

    def record_fields(self) -> dict[str, Any]:
        """The cost fields of a checkpoint record: the whole piece of work, whichever try paid for it."""
        whole = CostTotals()
        whole.merge(self.paid)
        whole.merge(self.reused)
        return whole.charge_fields()


@dataclass(frozen=True)
class _Work:
    """One rendered request of an item and what identifies it."""

    messages: list[dict[str, Any]]
    request: ChatRequest
    request_hash: str
    size: int  # characters of its canonical body


def describe_error(exc: BaseException) -> str:
    """A short, key-free description of why an item failed."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


class ItemProcessor(LongItems):
    """Turns item indices into outcomes; all requests go through ``send`` (limits, budget, cost)."""

    def __init__(
        self, plan: ItemPlan, send: Send, journal: Journal, outputs: OutputStore, log: Any = None
    ) -> None:
        self.plan = plan
        self.send = send
        self.journal = journal
        self.outputs = outputs
        self.log = log or logging.getLogger(__name__)
        self.rejected = 0  # checkpoint records that did not match their work (sent again)
        self._leaders: dict[str, asyncio.Future[tuple[int, ItemOutcome]]] = {}

    async def process(self, index: int, item: Any) -> ItemOutcome:
        if isinstance(item, BadItem):  # an input record that is no item: never sent
            return ItemOutcome(index, "failed", error=f"input: {item.error}"[:ERROR_CHARS])
        spend = _Spend()
        leader: asyncio.Future[tuple[int, ItemOutcome]] | None = None
        try:
            big = _text_chars(item, self.plan.chunk_field) + self.plan.base_chars > BIG_CHARS
            variables = {"item": item, "index": index, "chunk": None}
            work = await _cpu(big, self._work, self._messages(self.plan.render_prompt(variables)))
            key = work_key(index, "item", work.request_hash)
            record = self._lookup(key, index, "item", work.request_hash)
            if record is not None:
                spend.reuse(record)
                return _resumed(index, record, spend.reused)
            if self.plan.deduplicate:
                first = self._leaders.get(work.request_hash)
                if first is not None:
                    return await self._copy(index, key, work, first)
                leader = asyncio.get_running_loop().create_future()
                self._leaders[work.request_hash] = leader
            outcome = await self._produce(index, item, key, work, spend, big)
        except Exception as exc:
            unsent = isinstance(exc, UNSENT_ERRORS) and not spend.paid.requests
            outcome = ItemOutcome(
                index,
                "unstarted" if unsent else "failed",
                error=describe_error(exc),
                exception=exc,
                reused=spend.reused,
            )
        except BaseException:
            if leader is not None:  # cancelled: the copies must not wait forever
                leader.set_result((index, ItemOutcome(index, "failed", error="cancelled")))
            raise
        if leader is not None:
            leader.set_result((index, outcome))
        return outcome

    async def _produce(
        self, index: int, item: Any, key: str, work: _Work, spend: _Spend, big: bool
    ) -> ItemOutcome:
        parts = await _cpu(big, self._parts, item, index, work)
        if parts is None:
            value = await self._answer(work.messages, spend, work.request)
        else:
            value = await self._map_reduce(item, index, parts, spend)
        interrupted = await after_sends()

        async def record() -> Any:
            kept = await self.outputs.keep(index, key, value)
            await self.journal.put(
                self._record(key, "item", index, "item", work.request_hash, kept)
                | {"chunked": parts is not None, "parts": len(parts or ()), "truncated": spend.truncated}
                | spend.record_fields()
            )
            return kept

        # A paid answer is kept and journaled as one step: a stop (a kill, a timeout; the engine
        # cancels twice) waits for it, or a retry would pay the item again.
        recording = asyncio.ensure_future(record())
        while not recording.done():
            try:
                await asyncio.shield(recording)
            except asyncio.CancelledError as exc:
                interrupted = interrupted or exc
        value = recording.result()
        if interrupted is not None:
            raise interrupted  # cancelled while waiting its turn: journaled all the same, then stopped
        return ItemOutcome(
            index,
            "ok",
            value,
            chunked=parts is not None,
            parts=len(parts or ()),
            truncated=spend.truncated,
            reused=spend.reused,
        )

    async def _copy(
        self, index: int, key: str, work: _Work, leader: asyncio.Future[tuple[int, ItemOutcome]]
    ) -> ItemOutcome:
        """The outcome of the item already sending the same request (``deduplicate``), recorded as this
        item's own, at no cost: a retry finds it, and nothing is counted twice."""
        first, outcome = await asyncio.shield(leader)
        if outcome.status != "ok":
            error = f"the same request as item {first}, which did not succeed: {outcome.error}"
            return ItemOutcome(index, outcome.status, error=error[:ERROR_CHARS], deduplicated=True)
        record = self._record(key, "item", index, "item", work.request_hash, outcome.result)
        flags = {"chunked": outcome.chunked, "parts": outcome.parts, "truncated": outcome.truncated}
        await self.journal.put(record | flags | {"copy_of": first} | CostTotals().charge_fields())
        return ItemOutcome(
            index,
            "ok",
            outcome.result,
            chunked=outcome.chunked,
            parts=outcome.parts,
            truncated=outcome.truncated,
            deduplicated=True,
        )

    def _work(self, messages: list[dict[str, Any]]) -> _Work:
        request = self.plan.requests.build(messages)
        request_hash, size = request_hash_and_size(request)
        return _Work(messages, request, request_hash, size)

    def _messages(self, prompt: str) -> list[dict[str, Any]]:
        return [*self.plan.base_messages, {"role": "user", "content": prompt}]

    # -- the checkpoint -------------------------------------------------------------------

    @staticmethod
    def _record(key: str, kind: str, index: int, slot: str, request_hash: str, value: Any) -> dict[str, Any]:
        return {
            "key": key,
            "kind": kind,
            "index": index,
            "slot": slot,
            "request": request_hash,
            "result": value,
        }

    def _lookup(self, key: str, index: int, slot: str, request_hash: str) -> dict[str, Any] | None:
        """The checkpoint record of this work, if there is one and it is bound to this work."""
        record = self.journal.take(key)
        if record is None:
            return None
        problem = record_problem(record, index=index, slot=slot, request_hash=request_hash)
        if problem is None:
            return record
        self.rejected += 1
        if self.rejected <= REJECTIONS_LOGGED:
            self.log.warning(
                "checkpoint: the record found for item %d (%s) is not used, %s; sending it again%s",
                index,
                slot,
                problem,
                "" if self.rejected < REJECTIONS_LOGGED else " (further mismatched records are only counted)",
            )
        return None

    # -- one answer -----------------------------------------------------------------------

    async def _send(self, request: ChatRequest, spend: _Spend) -> ChatCompletion:
        """One request through ``send`` (limiter, budget, cost and the finish checks)."""
        completion = await self.send(request)
        spend.paid.add(completion)
        spend.truncated = spend.truncated or completion.finish_reason == "length"
        return completion

    async def _answer(
        self, messages: list[dict[str, Any]], spend: _Spend, request: ChatRequest | None = None
    ) -> Any:
        """The text, or the validated structured value (repair turns as QwenToolCallOperator)."""
        spec = self.plan.spec
        if spec is None:
            completion = await self._send(request or self.plan.requests.build(messages), spend)
            if not completion.content and completion.finish_reason == "length":
                raise QwenError(
                    "no answer text: the token limit was spent before any (finish_reason='length'); "
                    "raise max_completion_tokens",
                    inference_id=completion.inference_id,
                )
            return completion.content or ""
        from airflow_provider_qwen.client.repair import RepairLoop

        loop = RepairLoop(spec, messages, max_repairs=self.plan.max_repairs)
        sent = request if request is not None else self.plan.requests.build(messages)
        while not loop.accept(await self._send(sent, spend)):
            sent = self.plan.requests.build(loop.messages)
        return loop.value

    async def _checkpointed_answer(
        self, index: int, messages: list[dict[str, Any]], spend: _Spend, kind: str, slot: str
    ) -> Any:
        """``_answer`` for a part or a reduce step, itself checkpointed (a kill mid-item loses little).

        Its record carries what its own requests cost; the item's record sums its parts.
        """
        work = await asyncio.to_thread(self._work, messages)  # a part may be megabytes
        key = work_key(index, slot, work.request_hash)
        record = self._lookup(key, index, slot, work.request_hash)
        if record is not None:
            spend.reuse(record)
            return record.get("result")
        own = _Spend()
        try:
            value = await self._answer(messages, own, work.request)
        finally:
            spend.merge(own)
        await self.journal.put(
            self._record(key, kind, index, slot, work.request_hash, value) | own.record_fields()
        )
        return value


def _text_chars(item: Any, name: str) -> int:
    """The characters of an item's text (a string item, or its text field and other strings)."""
    if isinstance(item, str):
        return len(item)
    if isinstance(item, Mapping):
        return sum(len(v) for v in item.values() if isinstance(v, str))
    return 0


async def _cpu(big: bool, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)``: in a worker thread when the work is big (counting, hashing megabytes),
    inline otherwise (a thread hop per small item would cost more than the work)."""
    return await asyncio.to_thread(function, *args) if big else function(*args)


def _resumed(index: int, record: Mapping[str, Any], reused: CostTotals) -> ItemOutcome:
    return ItemOutcome(
        index,
        "ok",
        record.get("result"),
        chunked=bool(record.get("chunked")),
        parts=int(record.get("parts") or 0),
        resumed=True,
        truncated=bool(record.get("truncated")),
        reused=reused,
    )
