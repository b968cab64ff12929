"""Token counts of an answer the service did not count for us: a cut stream, an answer without usage.

Prompt and generated text go through the Qwen tokenizer (``client/tokens.py``); the completion never
passes the request's output cap, since the service cannot bill more than that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_qwen.client.models import Usage
from airflow_provider_qwen.client.tokens import output_cap, request_tokens, text_tokens

if TYPE_CHECKING:
    from airflow_provider_qwen.client.models import ChatCompletion
    from airflow_provider_qwen.client.request import ChatRequest

# What a generation adds around its text: "</think>\n\n" after the reasoning, the closing <|im_end|>,
# and per tool call its <tool_call>/<function=...> wrapping.
ANSWER_FRAMING_TOKENS = 4
TOOL_CALL_FRAMING_TOKENS = 10


def usage_of(prompt: int, completion: int, reasoning: int = 0) -> Usage:
    """A Usage of token counts (``completion`` includes ``reasoning``, as on the wire)."""
    return Usage.model_validate(
        {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
    )


def generated_text(completion: ChatCompletion) -> tuple[str, str]:
    """(answer text, reasoning text) a completion holds: content and tool calls, and reasoning."""
    calls = "".join(call.function.name + call.function.arguments for call in completion.tool_calls)
    return (completion.content or "") + calls, completion.reasoning_content or ""


def answer_usage(request: ChatRequest | None, completion: ChatCompletion) -> Usage:
    """The usage the service counted for ``completion`` (received whole or in part), estimated."""
    answer, reasoning = generated_text(completion)
    thinking = text_tokens(reasoning)
    generated = text_tokens(answer) + thinking
    if generated:
        generated += ANSWER_FRAMING_TOKENS + TOOL_CALL_FRAMING_TOKENS * len(completion.tool_calls)
    prompt = 0
    if request is not None:
        prompt = request_tokens(request)
        cap = output_cap(request)
        if cap:
            generated, thinking = min(generated, cap), min(thinking, cap)
    return usage_of(prompt, generated, thinking)


def unsent_answer_usage(request: ChatRequest | None) -> Usage:
    """A try that failed after being sent, nothing received: its prompt and its output cap."""
    if request is None:
        return usage_of(0, 0)
    return usage_of(request_tokens(request), output_cap(request))


def billable_usage(request: ChatRequest | None, completion: ChatCompletion) -> Usage:
    """The token counts to price an answer at: its usage when sane, else estimated from its text.

    Usage that is missing, negative or all zero on an answer with text is not trusted; without a
    reported cost, the larger of the reported and the estimated counts is taken (never low).
    """
    usage = completion.usage
    counts = (usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens) if usage else ()
    if usage is None or min(counts) < 0 or usage.cached_tokens < 0 or not any(counts):
        return answer_usage(request, completion)
    if completion.reported_cost is not None:
        return usage
    estimated = answer_usage(request, completion)
    if (
        usage.prompt_tokens >= estimated.prompt_tokens
        and usage.completion_tokens >= estimated.completion_tokens
    ):
        return usage
    return usage_of(
        max(usage.prompt_tokens, estimated.prompt_tokens),
        max(usage.completion_tokens, estimated.completion_tokens),
        max(usage.reasoning_tokens, estimated.reasoning_tokens),
    )
