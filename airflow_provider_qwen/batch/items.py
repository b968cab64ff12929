"""One item from prompt to result: render, look up the checkpoint, send (with structured-output
repairs, or map-reduce over parts of a long text), keep large results out of XCom, record it.

Item text is data: it reaches the prompt template only as the ``item`` variable, and partial
results reach the reduce template only as ``summaries``; neither is ever compiled as a template.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from airflow_provider_qwen.batch.checkpoint import Journal, request_key
from airflow_provider_qwen.batch.chunking import MIN_PART_TOKENS, estimate_tokens, reduce_groups, split_text
from airflow_provider_qwen.client.cost import Cost
from airflow_provider_qwen.client.errors import BudgetExceededError, InvalidRequestError, QwenError

if TYPE_CHECKING:
    from airflow_provider_qwen.batch.outputs import OutputStore
    from airflow_provider_qwen.client.models import ChatCompletion
    from airflow_provider_qwen.client.request import ChatRequest
    from airflow_provider_qwen.client.structured import ToolSpec

ERROR_CHARS = 500  # an error message kept in the qwen_batch report is cut to this length
OMITTED = "[the text is not repeated here: it was processed in the parts below]"

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


@dataclass
class ItemPlan:
    """What is fixed for every item of one batch."""

    items: Sequence[Any]
    render_prompt: Render  # variables (item, index, chunk ...) -> the user message
    build: Callable[[list[dict[str, Any]]], ChatRequest]  # messages -> a validated request
    base_messages: list[dict[str, Any]] = field(default_factory=list)  # system prompt, history
    spec: ToolSpec | None = None  # structured result through a forced tool call
    max_repairs: int = 2
    fail_on_truncation: bool = False
    max_input_tokens: int | None = None
    chunk_field: str = "text"
    render_reduce: Render | None = None


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
    reused: Cost = field(default_factory=Cost)  # checkpointed work this try took instead of sending
    reused_requests: int = 0


@dataclass
class _Spend:
    """What producing one piece of work took: requests paid now, and checkpointed work reused."""

    requests: int = 0
    cost: Cost = field(default_factory=Cost)
    truncated: bool = False
    reused_requests: int = 0
    reused: Cost = field(default_factory=Cost)

    def merge(self, other: _Spend) -> None:
        self.requests += other.requests
        self.cost = self.cost + other.cost
        self.truncated = self.truncated or other.truncated
        self.reused_requests += other.reused_requests
        self.reused = self.reused + other.reused

    def reuse(self, record: Mapping[str, Any]) -> None:
        """Count a checkpoint record's recorded cost as reused (paid by the try that wrote it)."""
        requests, cost = record_cost(record)
        self.reused_requests += requests
        self.reused = self.reused + cost

    def record_fields(self) -> dict[str, Any]:
        """The cost fields of a checkpoint record: the whole piece of work, whichever try paid for it."""
        total = self.cost + self.reused
        return {
            "requests": self.requests + self.reused_requests,
            "credits_used": total.credits_used,
            "usd_spent": str(total.usd_spent),
            "estimated": total.estimated,
        }


def record_cost(record: Mapping[str, Any]) -> tuple[int, Cost]:
    """(requests, cost) a checkpoint record says its work took; zero for a record without them."""
    try:
        requests = int(record.get("requests") or 0)
        cost = Cost(
            int(record.get("credits_used") or 0),
            Decimal(str(record.get("usd_spent") or "0")),
            bool(record.get("estimated")),
        )
    except (TypeError, ValueError, InvalidOperation):
        return 0, Cost()
    return requests, cost


def describe_error(exc: BaseException) -> str:
    """A short, key-free description of why an item failed."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


class ItemProcessor:
    """Turns item indices into outcomes; all requests go through ``send`` (limits, budget, cost)."""

    def __init__(self, plan: ItemPlan, send: Send, journal: Journal, outputs: OutputStore) -> None:
        self.plan = plan
        self.send = send
        self.journal = journal
        self.outputs = outputs

    async def process(self, index: int) -> ItemOutcome:
        spend = _Spend()
        try:
            return await self._process(index, spend)
        except Exception as exc:
            status = "unstarted" if isinstance(exc, BudgetExceededError) and not spend.requests else "failed"
            return ItemOutcome(
                index,
                status,
                error=describe_error(exc),
                exception=exc,
                reused=spend.reused,
                reused_requests=spend.reused_requests,
            )

    async def _process(self, index: int, spend: _Spend) -> ItemOutcome:
        item = self.plan.items[index]
        messages = self._messages(self.plan.render_prompt({"item": item, "index": index, "chunk": None}))
        request = self.plan.build(messages)
        key = request_key(request)
        record = self.journal.get(key)
        if record is not None:
            spend.reuse(record)
            return ItemOutcome(
                index,
                "ok",
                record.get("result"),
                chunked=bool(record.get("chunked")),
                parts=int(record.get("parts") or 0),
                resumed=True,
                truncated=bool(record.get("truncated")),
                reused=spend.reused,
                reused_requests=spend.reused_requests,
            )
        parts = self._parts(item, index, request)
        if parts is None:
            value = await self._answer(messages, spend, request)
        else:
            value = await self._map_reduce(item, index, parts, spend)
        value = await self.outputs.keep(index, key, value)
        await self.journal.put(
            {
                "key": key,
                "kind": "item",
                "index": index,
                "result": value,
                "chunked": parts is not None,
                "parts": len(parts or ()),
                "truncated": spend.truncated,
                **spend.record_fields(),
            }
        )
        return ItemOutcome(
            index,
            "ok",
            value,
            chunked=parts is not None,
            parts=len(parts or ()),
            truncated=spend.truncated,
            reused=spend.reused,
            reused_requests=spend.reused_requests,
        )

    def _messages(self, prompt: str) -> list[dict[str, Any]]:
        return [*self.plan.base_messages, {"role": "user", "content": prompt}]

    # -- one answer -----------------------------------------------------------------------

    async def _send(self, request: ChatRequest, spend: _Spend) -> ChatCompletion:
        completion = await self.send(request)
        spend.requests += 1
        spend.cost = spend.cost + completion.cost
        if completion.refusal:
            raise QwenError(f"the model refused: {completion.refusal}", inference_id=completion.inference_id)
        if completion.finish_reason == "length":
            spend.truncated = True
            if self.plan.fail_on_truncation:
                raise QwenError(
                    "the answer was cut at the token limit (finish_reason='length'); raise "
                    "max_completion_tokens or lower max_input_tokens",
                    inference_id=completion.inference_id,
                )
        return completion

    async def _answer(
        self, messages: list[dict[str, Any]], spend: _Spend, request: ChatRequest | None = None
    ) -> Any:
        """The text, or the validated structured value (repair turns as QwenToolCallOperator)."""
        spec = self.plan.spec
        if spec is None:
            completion = await self._send(request or self.plan.build(messages), spend)
            if not completion.content and completion.finish_reason == "length":
                raise QwenError(
                    "no answer text: the token limit was spent before any (finish_reason='length'); "
                    "raise max_completion_tokens",
                    inference_id=completion.inference_id,
                )
            return completion.content or ""
        from airflow_provider_qwen.client.repair import RepairLoop

        loop = RepairLoop(spec, messages, max_repairs=self.plan.max_repairs)
        sent = request if request is not None else self.plan.build(messages)
        while not loop.accept(await self._send(sent, spend)):
            sent = self.plan.build(loop.messages)
        return loop.value

    async def _checkpointed_answer(
        self, index: int, messages: list[dict[str, Any]], spend: _Spend, kind: str
    ) -> Any:
        """``_answer`` for a part or a reduce step, itself checkpointed (a kill mid-item loses little).

        Its record carries what its own requests cost; the item's record sums its parts.
        """
        request = self.plan.build(messages)
        key = request_key(request)
        record = self.journal.get(key)
        if record is not None:
            spend.reuse(record)
            return record.get("result")
        own = _Spend()
        try:
            value = await self._answer(messages, own, request)
        finally:
            spend.merge(own)
        await self.journal.put(
            {"key": key, "kind": kind, "index": index, "result": value, **own.record_fields()}
        )
        return value

    # -- long items: map-reduce -----------------------------------------------------------

    def _parts(self, item: Any, index: int, request: ChatRequest) -> list[str] | None:
        """The item's text split to fit ``max_input_tokens``, or None when it fits (or has no text)."""
        limit = self.plan.max_input_tokens
        if limit is None:
            return None
        tokens = _request_tokens(request)
        text = item if isinstance(item, str) else _field_text(item, self.plan.chunk_field)
        if tokens <= limit or not text:
            return None
        room = limit - (tokens - estimate_tokens(text))
        if room < MIN_PART_TOKENS:
            raise InvalidRequestError(
                f"max_input_tokens={limit} leaves no room for the text of item {index}: the prompt "
                f"without it is already about {tokens - estimate_tokens(text)} tokens"
            )
        parts = split_text(text, room)
        return parts if len(parts) > 1 else None

    async def _map_reduce(self, item: Any, index: int, parts: list[str], spend: _Spend) -> Any:
        async def one(number: int, part: str) -> Any:
            variant = part if isinstance(item, str) else {**item, self.plan.chunk_field: part}
            chunk = {"index": number, "count": len(parts)}
            prompt = self.plan.render_prompt({"item": variant, "index": index, "chunk": chunk})
            return await self._checkpointed_answer(index, self._messages(prompt), spend, "part")

        values = await _all(one(number, part) for number, part in enumerate(parts))
        return await self._reduce(item, index, values, spend)

    async def _reduce(self, item: Any, index: int, values: list[Any], spend: _Spend) -> Any:
        """Combine partial results; in several rounds when together they pass ``max_input_tokens``."""
        render_reduce, limit = self.plan.render_reduce, self.plan.max_input_tokens
        if render_reduce is None or limit is None:  # pragma: no cover - _parts splits only with both
            raise RuntimeError("map-reduce needs max_input_tokens and a reduce prompt")
        placeholder = OMITTED if isinstance(item, str) else {**item, self.plan.chunk_field: OMITTED}
        instructions = self.plan.render_prompt({"item": placeholder, "index": index, "chunk": None})

        def messages_for(texts: list[str]) -> list[dict[str, Any]]:
            variables = {"item": item, "index": index, "summaries": texts, "instructions": instructions}
            return self._messages(render_reduce(variables))

        room = max(MIN_PART_TOKENS, limit - _messages_tokens(messages_for([])))
        while True:
            texts = [v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in values]
            groups = reduce_groups(texts, room)
            if len(groups) == 1:
                return await self._checkpointed_answer(index, messages_for(texts), spend, "reduce")
            values = await _all(
                self._checkpointed_answer(index, messages_for([texts[i] for i in group]), spend, "reduce")
                for group in groups
            )


async def _all(awaitables: Any) -> list[Any]:
    """Run all to the end (every finished part is checkpointed), then raise the first failure."""
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _field_text(item: Any, name: str) -> str | None:
    value = item.get(name) if isinstance(item, Mapping) else None
    return value if isinstance(value, str) else None


def _messages_tokens(messages: list[dict[str, Any]]) -> int:
    return estimate_tokens(json.dumps(messages, ensure_ascii=False))


def _request_tokens(request: ChatRequest) -> int:
    body = request.to_body()
    return estimate_tokens(json.dumps([body["messages"], body.get("tools", [])], ensure_ascii=False))
