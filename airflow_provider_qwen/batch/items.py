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
from typing import TYPE_CHECKING, Any

from airflow_provider_qwen.batch.checkpoint import Journal, request_key
from airflow_provider_qwen.batch.chunking import MIN_PART_TOKENS, reduce_groups, split_text
from airflow_provider_qwen.client.errors import BudgetExceededError, InvalidRequestError, QwenError
from airflow_provider_qwen.client.tokens import request_tokens, text_tokens
from airflow_provider_qwen.cost.record import CostTotals

if TYPE_CHECKING:
    from airflow_provider_qwen.batch.outputs import OutputStore
    from airflow_provider_qwen.client.builder import RequestBuilder
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
    requests: RequestBuilder  # messages -> a validated request
    base_messages: list[dict[str, Any]] = field(default_factory=list)  # system prompt, history
    spec: ToolSpec | None = None  # structured result through a forced tool call
    max_repairs: int = 2
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
            unsent = isinstance(exc, BudgetExceededError) and not spend.paid.requests
            return ItemOutcome(
                index,
                "unstarted" if unsent else "failed",
                error=describe_error(exc),
                exception=exc,
                reused=spend.reused,
            )

    async def _process(self, index: int, spend: _Spend) -> ItemOutcome:
        item = self.plan.items[index]
        messages = self._messages(self.plan.render_prompt({"item": item, "index": index, "chunk": None}))
        request = self.plan.requests.build(messages)
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
        )

    def _messages(self, prompt: str) -> list[dict[str, Any]]:
        return [*self.plan.base_messages, {"role": "user", "content": prompt}]

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
        self, index: int, messages: list[dict[str, Any]], spend: _Spend, kind: str
    ) -> Any:
        """``_answer`` for a part or a reduce step, itself checkpointed (a kill mid-item loses little).

        Its record carries what its own requests cost; the item's record sums its parts.
        """
        request = self.plan.requests.build(messages)
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
        tokens = request_tokens(request)
        text = item if isinstance(item, str) else _field_text(item, self.plan.chunk_field)
        if tokens <= limit or not text:
            return None
        room = limit - (tokens - text_tokens(text))
        if room < MIN_PART_TOKENS:
            raise InvalidRequestError(
                f"max_input_tokens={limit} leaves no room for the text of item {index}: the prompt "
                f"without it is already about {tokens - text_tokens(text)} tokens"
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
    return text_tokens(json.dumps(messages, ensure_ascii=False))
