"""The context window: a request whose prompt and output cap pass its model's window is refused
before sending, for free (the service would refuse it too, after the upload)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_qwen.client.errors import InvalidRequestError
from airflow_provider_qwen.client.profiles import profile_for
from airflow_provider_qwen.client.tokens import output_cap, request_tokens

if TYPE_CHECKING:
    from airflow_provider_qwen.client.request import ChatRequest

# Bytes the chat template adds beyond a request body's own (the tools block's instructions, turn
# markers). A token is at least one byte of the NFC text, and NFC at most triples a text's bytes:
# a body whose bytes, tripled, plus these stay under the window cannot pass it.
TEMPLATE_BYTES = 4096
NFC_EXPANSION = 3


def may_pass_window(request: ChatRequest, body_bytes: int) -> bool:
    """Whether the request might not fit its window: only then are its tokens counted."""
    window = profile_for(request.model).context_window
    return window is not None and NFC_EXPANSION * body_bytes + TEMPLATE_BYTES + output_cap(request) > window


def check_window(request: ChatRequest) -> None:
    """Refuse a request over its model's context window (prompt tokens plus the output cap)."""
    window = profile_for(request.model).context_window
    if window is None:
        return
    prompt, cap = request_tokens(request), output_cap(request)
    if prompt + cap > window:
        room = window - prompt
        fix = (
            f"lower max_completion_tokens to at most {room} or shorten the prompt"
            if room > 0 and cap
            else "shorten the prompt (a batch splits long items: see max_input_tokens)"
        )
        raise InvalidRequestError(
            f"the request is {prompt} prompt tokens"
            + (f" plus max_completion_tokens={cap}" if cap else "")
            + f": more than the {window}-token context window of model={request.model!r}; {fix}; not sent"
        )
