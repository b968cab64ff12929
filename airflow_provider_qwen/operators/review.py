"""Human review of a result before it is pushed (``require_approval=True``).

The result is shown to a person through Airflow's human-in-the-loop machinery (the detail the
standard HITL operators create; the task waits in ``awaiting_input``, holding no worker slot):
**Approve** pushes it as it is, **Edit** pushes the text the person put in the ``output`` field
(a structured result is validated again), **Reject** fails the task, without retries, with the
reviewer's reason. The cost of the try is published at the pause and again when it resumes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_qwen.calls import Calls

APPROVE, EDIT, REJECT = "Approve", "Edit", "Reject"
OUTPUT_PARAM, REASON_PARAM = "output", "reason"
# Characters that hide or reorder what a person reads (bidi overrides, zero-width, controls).
UNSEEN = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]"
)


MAX_REASON_CHARS = 1000  # of a reviewer's reason in the task's error and log


def _shown_text(text: str, limit: int) -> str:
    """A person's text for one log line: whitespace runs (newlines too) as one space, every hidden or
    reordering character escaped, at most ``limit`` characters."""
    shown = visible(" ".join(text.split()))
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def visible(text: str) -> str:
    """``text`` with every character that would hide or reorder it shown as a JSON escape."""
    return UNSEEN.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class ReviewMixin:
    """``require_approval`` for an operator that returns one result (mixed into QwenCallOperator).

    :param require_approval: show the result to a person (approve, edit, reject) before it is
        pushed; the task waits in ``awaiting_input`` meanwhile.
    :param review_timeout: how long to wait (a ``timedelta``); past it the result is rejected and
        the task fails. None: no limit.
    """

    task_id: str
    log: Any

    def __init__(self, *, require_approval: bool = False, review_timeout: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.require_approval = require_approval
        self.review_timeout = review_timeout
        self.check_flags(require_approval=require_approval)  # type: ignore[attr-defined]
        if review_timeout is not None and (
            not isinstance(review_timeout, timedelta) or review_timeout <= timedelta(0)
        ):
            from airflow_provider_qwen.client.errors import InvalidRequestError

            raise InvalidRequestError(
                f"{type(self).__name__} {self.task_id!r}: review_timeout={review_timeout!r} must be a "
                "timedelta > 0, or None for no limit"
            )

    def deliver(self, context: Context, value: Any, *, calls: Calls | None = None) -> Any:
        """The result, or (with ``require_approval``) a pause until a person reviewed it (``calls``:
        the try's, whose spend so far travels in the pause's kwargs too, see ``execute_review``)."""
        if not self.require_approval:
            return value
        from airflow.sdk.exceptions import TaskAwaitingInput
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail

        shown = self.review_text(value)
        self.log.info("waiting for a person to review the result; no worker slot is held meanwhile")
        upsert_hitl_detail(
            ti_id=context["task_instance"].id,
            options=[APPROVE, EDIT, REJECT],
            subject=f"Qwen {self.task_id}: review the result",
            body=review_body(shown),
            defaults=[REJECT],
            multiple=False,
            params={
                OUTPUT_PARAM: {
                    "value": shown,
                    "schema": {"type": "string"},
                    "description": "the result; change it and choose Edit to push your text instead",
                },
                REASON_PARAM: {"value": "", "schema": {"type": "string"}, "description": "why (optional)"},
            },
        )
        kwargs: dict[str, Any] = {"value": value}
        if calls is not None:
            kwargs["spent"] = calls.spent_so_far()
        raise TaskAwaitingInput(method_name="execute_review", kwargs=kwargs, timeout=self.review_timeout)

    def execute_review(
        self, context: Context, event: Mapping[str, Any], value: Any = None, spent: Any = None
    ) -> Any:
        """Resume after the review: the result as approved or edited; a rejection fails the task.
        ``spent``: what the try spent before the pause (counted again; the journal's record when the
        pause kept none)."""
        return self.metered(  # type: ignore[attr-defined]
            context, lambda ctx, calls: self.reviewed(event, value), resumed=True, carried=spent
        )

    def reviewed(self, event: Mapping[str, Any], value: Any) -> Any:
        """What the person's answer makes of ``value`` (the HITL resume event)."""
        from airflow.sdk.exceptions import AirflowFailException

        params = event.get("params_input")
        params = params if isinstance(params, Mapping) else {}
        reason = params.get(REASON_PARAM)
        reason = _shown_text(reason, MAX_REASON_CHARS) if isinstance(reason, str) else ""
        user = event.get("responded_by_user")
        by = str(user.get("name") or user.get("id") or "") if isinstance(user, Mapping) else ""
        by = _shown_text(by, 100)
        chosen = event.get("chosen_options")
        choice = chosen[0] if isinstance(chosen, (list, tuple)) and len(chosen) == 1 else None
        who = f" by {by}" if by else ""
        where = f"{type(self).__name__} {self.task_id!r}"
        if event.get("timedout") or event.get("error_type") == "timeout":
            raise AirflowFailException(
                f"{where}: no review came within review_timeout={self.review_timeout}; the result was "
                "not pushed"
            )
        if event.get("error") or event.get("error_type"):  # the HITL machinery's failure, not a person's
            error = visible(str(event.get("error") or event.get("error_type")))[:300]
            raise AirflowFailException(f"{where}: the review failed: {error}; the result was not pushed")
        if choice == APPROVE:
            self.log.info("the result was approved%s", who)
            return value
        if choice == EDIT:
            output = params.get(OUTPUT_PARAM)
            if not isinstance(output, str):
                raise AirflowFailException(
                    f"{where}: Edit was chosen{who} but the {OUTPUT_PARAM!r} field holds no text (got "
                    f"{visible(repr(output))[:100]}); an edit pushes the text of that field; nothing was "
                    "pushed"
                )
            edited = self.edited_value(output)
            self.log.info("the result was edited%s; pushing the reviewer's version", who)
            return edited
        raise AirflowFailException(
            f"{where}: the result was rejected{who}"
            + (f": {reason}" if reason else " (no reason given)")
            + ("" if choice == REJECT else f" (the answer {chosen!r} approves nothing)")
        )

    def review_text(self, value: Any) -> str:
        """The result as the person reads and edits it: text as is, anything else as JSON."""
        return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)

    def edited_value(self, text: str) -> Any:
        """The result from the person's edited text (a subclass validates structured results)."""
        return text


def review_body(shown: str) -> str:
    """The review page's text (Markdown): the result, fenced so nothing in it is read as markup."""
    fence = "`" * max(3, _longest_backtick_run(shown) + 1)
    return (
        "Approve pushes this result; Edit pushes your text from the output field; Reject fails the "
        f"task with your reason.\n\n{fence}\n{visible(shown)}\n{fence}"
    )


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)
