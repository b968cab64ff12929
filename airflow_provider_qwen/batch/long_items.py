"""Long items: an item over ``max_input_tokens`` is split into parts (``chunking``), each part is
answered with the item's own prompt, and the partial results are combined by the reduce prompt,
in several rounds when together they are still too long. Every part and reduce step is its own
checkpointed work (slots ``part i/n`` and ``reduce r.g``), so a kill mid-item loses little.

Counting and splitting are CPU-bound (exact tokens over megabytes): they run in worker threads.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_qwen.batch.chunking import MIN_PART_TOKENS, reduce_groups, split_text
from airflow_provider_qwen.client.errors import InvalidRequestError
from airflow_provider_qwen.client.tokens import request_tokens

if TYPE_CHECKING:
    from airflow_provider_qwen.batch.items import ItemPlan, _Spend, _Work

TEMPLATE_BYTES = 4096  # what the chat template adds to a body's own characters, at most, in tokens
PART_SLACK = 8  # tokens a part may gain where its text meets the prompt around it
CHUNK_BOUND = {"index": 9999, "count": 9999}  # the widest ``chunk`` rendered when measuring the prompt
OMITTED = "[the text is not repeated here: it was processed in the parts below]"


class LongItems:
    """The map-reduce half of ``ItemProcessor``."""

    plan: ItemPlan

    def _messages(self, prompt: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def _checkpointed_answer(
        self, index: int, messages: list[dict[str, Any]], spend: _Spend, kind: str, slot: str
    ) -> Any:
        raise NotImplementedError

    def _variant(self, item: Any, text: str) -> Any:
        return text if isinstance(item, str) else {**item, self.plan.chunk_field: text}

    def _parts(self, item: Any, index: int, work: _Work) -> list[str] | None:
        """The item's text split to fit ``max_input_tokens``, or None when it fits (or has no text).

        CPU-bound for a long item (exact counts): called in a thread for those."""
        limit = self.plan.max_input_tokens
        if limit is None or work.size * 4 + TEMPLATE_BYTES <= limit:  # 4 bytes a character at most
            return None
        text = item if isinstance(item, str) else _field_text(item, self.plan.chunk_field)
        if not text:
            return None
        variables = {"item": self._variant(item, "."), "index": index, "chunk": CHUNK_BOUND}
        share = request_tokens(self.plan.requests.build(self._messages(self.plan.render_prompt(variables))))
        room = limit - share - PART_SLACK
        if room < MIN_PART_TOKENS:
            raise InvalidRequestError(
                f"max_input_tokens={limit} leaves no room for the text of item {index}: the prompt "
                f"without it is already {share} tokens"
            )
        parts = split_text(text, room)
        return parts if len(parts) > 1 else None

    async def _map_reduce(self, item: Any, index: int, parts: list[str], spend: _Spend) -> Any:
        async def one(number: int, part: str) -> Any:
            chunk = {"index": number, "count": len(parts)}
            prompt = self.plan.render_prompt(
                {"item": self._variant(item, part), "index": index, "chunk": chunk}
            )
            slot = f"part {number}/{len(parts)}"
            return await self._checkpointed_answer(index, self._messages(prompt), spend, "part", slot)

        values = await _all(one(number, part) for number, part in enumerate(parts))
        return await self._reduce(item, index, values, spend)

    async def _reduce(self, item: Any, index: int, values: list[Any], spend: _Spend) -> Any:
        """Combine partial results; in several rounds when together they pass ``max_input_tokens``."""
        render_reduce, limit = self.plan.render_reduce, self.plan.max_input_tokens
        if render_reduce is None or limit is None:  # pragma: no cover - _parts splits only with both
            raise RuntimeError("map-reduce needs max_input_tokens and a reduce prompt")
        instructions = self.plan.render_prompt(
            {"item": self._variant(item, OMITTED), "index": index, "chunk": None}
        )

        def messages_for(texts: list[str]) -> list[dict[str, Any]]:
            variables = {"item": item, "index": index, "summaries": texts, "instructions": instructions}
            return self._messages(render_reduce(variables))

        share = await asyncio.to_thread(lambda: request_tokens(self.plan.requests.build(messages_for([]))))
        room = max(MIN_PART_TOKENS, limit - share - PART_SLACK)
        for round_number in range(len(values) + 1):  # every round at least halves the values
            texts = [v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in values]
            groups = await asyncio.to_thread(reduce_groups, texts, room)
            if len(groups) == 1:
                slot = f"reduce {round_number}.0"
                return await self._checkpointed_answer(index, messages_for(texts), spend, "reduce", slot)
            values = await _all(
                self._checkpointed_answer(
                    index,
                    messages_for([texts[i] for i in group]),
                    spend,
                    "reduce",
                    f"reduce {round_number}.{g}",
                )
                for g, group in enumerate(groups)
            )
        raise AssertionError("unreachable")  # pragma: no cover


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
