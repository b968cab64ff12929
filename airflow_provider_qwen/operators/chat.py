"""QwenChatOperator: one templated prompt in, the model's text out (optionally streamed)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from airflow_provider_qwen.operators.call import Done, QwenCallOperator

if TYPE_CHECKING:
    import logging

    from airflow.sdk import Context

    from airflow_provider_qwen.calls import Calls
    from airflow_provider_qwen.client.models import ChatCompletion, ChatCompletionChunk
    from airflow_provider_qwen.client.request import ChatRequest
    from airflow_provider_qwen.operators.call import State

PROGRESS_EVERY_S = 2.0


class QwenChatOperator(QwenCallOperator):
    """Send a prompt (and optional system prompt / message history) to Qwen and return the answer text.

    :param include_reasoning: return ``{"content", "reasoning_content"}`` instead of the text.
    :param stream: stream the answer, logging progress (characters so far, tokens/s) every few
        seconds; the result is the same (deferred, the triggerer assembles the stream).
    :param fail_on_truncation: fail when the answer was cut at the token limit (default: warn).
    :param deferrable: make the call in the triggerer, holding no worker slot while it runs.
    :param require_approval: a person approves, edits or rejects the answer before it is pushed.

    Every parameter of :class:`QwenBaseOperator` applies (prompt files, generation parameters,
    ``max_cost_usd``); the ``qwen_cost`` XCom is pushed for every try.
    """

    def __init__(self, *, include_reasoning: bool = False, stream: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.include_reasoning = include_reasoning
        self.stream = stream
        self.check_flags(include_reasoning=include_reasoning, stream=stream)
        self.validate_static_parameters()

    def extra_request_params(self) -> dict[str, Any]:
        if self.stream:
            return {"stream": True, "stream_options": {"include_usage": True}}
        return {}

    def turn_request(self, context: Context, state: State) -> ChatRequest:
        return self.build_request(self.rendered_messages(context))

    def send_turn(self, calls: Calls, request: ChatRequest) -> ChatCompletion:
        if not self.stream:
            return super().send_turn(calls, request)
        progress = StreamProgress(self.log)
        completion = calls.stream(request, progress.update, fail_on_truncation=self.fail_on_truncation)
        progress.done(completion)
        return completion

    def after_turn(self, state: State, completion: ChatCompletion) -> Done:
        if self.include_reasoning:
            return Done({"content": completion.content, "reasoning_content": completion.reasoning_content})
        return Done(completion.content)

    def edited_value(self, text: str) -> Any:
        if not self.include_reasoning:
            return text
        from airflow.sdk.exceptions import AirflowFailException

        try:
            edited = json.loads(text)
        except ValueError as exc:
            edited = exc
        texts = (str, type(None))
        if (
            not isinstance(edited, dict)
            or not isinstance(edited.get("content"), texts)
            or not isinstance(edited.get("reasoning_content"), texts)
        ):
            raise AirflowFailException(
                f"{type(self).__name__} {self.task_id!r}: the edited output must be a JSON object with "
                f'"content" and "reasoning_content", each a string or null, as shown; got {text[:200]!r}; '
                "nothing was pushed"
            )
        return {"content": edited.get("content"), "reasoning_content": edited.get("reasoning_content")}


class StreamProgress:
    """Logs a stream's progress at most every ``PROGRESS_EVERY_S`` seconds, never per chunk."""

    def __init__(self, log: logging.Logger | Any, every: float = PROGRESS_EVERY_S) -> None:
        self.log = log
        self.every = every
        self.started = time.monotonic()
        self.last_logged = self.started
        self.content_chars = 0
        self.reasoning_chars = 0
        self.token_chunks = 0  # chunks carrying text: about one token each

    def update(self, chunk: ChatCompletionChunk) -> None:
        for choice in chunk.choices:
            delta = choice.delta
            if delta.content or delta.reasoning_content:
                self.token_chunks += 1
            self.content_chars += len(delta.content or "")
            self.reasoning_chars += len(delta.reasoning_content or "")
        now = time.monotonic()
        if now - self.last_logged >= self.every:
            self.last_logged = now
            self.log.info(
                "streaming: %d characters so far (%d of reasoning), %.1f tokens/s",
                self.content_chars + self.reasoning_chars,
                self.reasoning_chars,
                self.token_chunks / max(now - self.started, 1e-6),
            )

    def done(self, completion: ChatCompletion) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        tokens = completion.usage.completion_tokens if completion.usage else self.token_chunks
        self.log.info(
            "streamed %d characters (%d of reasoning) in %.1f s, %.1f tokens/s",
            self.content_chars + self.reasoning_chars,
            self.reasoning_chars,
            elapsed,
            tokens / elapsed,
        )
