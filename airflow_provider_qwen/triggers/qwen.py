"""QwenChatTrigger: one chat-completions call of a deferred task, run in the triggerer.

The task reserved the call's worst case and journaled it before deferring; the trigger sends the
request on the async client under the task's client request id and hands back the answer, or the
error and what it may have cost, in one event (``ChatCompletion.to_dict`` / ``error_to_dict``).
A triggerer restarted mid-call runs the trigger again: it sends again under the same id, and a
marker in the task's storage folder counts the earlier sends, which the task records as possibly
paid tries (estimated until reconciled against the service's records).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_qwen import DEFAULT_CONN_ID

# Airflow 3.3 fails a task whose trigger fires before the scheduler has drained the executor's
# report of the deferring process's exit (apache/airflow#72716, #71580: seconds under load). The
# call is sent at once; its event is handed back no sooner than this long after the task deferred
# ([qwen] resume_guard_seconds).
RESUME_GUARD_S = 10.0


def resume_guard_s() -> float:
    """``[qwen] resume_guard_seconds`` (default ``RESUME_GUARD_S``); 0 fires at once."""
    from airflow_provider_qwen.storage import config_value

    text = config_value("resume_guard_seconds")
    try:
        value = float(text) if text is not None else RESUME_GUARD_S
    except ValueError:
        raise ValueError(f"[qwen] resume_guard_seconds={text!r} must be a number of seconds >= 0") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"[qwen] resume_guard_seconds={text!r} must be a number of seconds >= 0")
    return value


class QwenChatTrigger(BaseTrigger):
    """Send one chat request and fire one event: ``{"status": "success", "completion": ...}``,
    ``{"status": "error", "error": ...}`` (the service's or the client's error, with its charge) or
    ``{"status": "failed", "message": ..., "sent": ...}`` (the trigger itself failed, before or after
    it sent the request); each with ``resent``.

    :param request: the ChatRequest as ``ChatRequest.to_dict()`` (validated again here).
    :param client_request_id: the call's ``X-Client-Request-Id``, the same for every send.
    :param retry_after_send: whether the client may retry a try that failed after being sent
        (False under a budget: its worst case is held for one paid try).
    :param marker: URL of the file that counts this call's sends (None: not counted).
    :param storage_conn_id: the connection of the marker's storage.
    :param not_before: epoch seconds before which no event is fired (see ``RESUME_GUARD_S``).
    :param resume: what the task resumes with (its deferred call and turn state), handed back in
        every event: ``dag.test()`` in Airflow 3.3 drops the resume kwargs of a task when its trigger
        fires, so they travel here.
    """

    def __init__(
        self,
        *,
        request: Mapping[str, Any],
        client_request_id: str,
        qwen_conn_id: str = DEFAULT_CONN_ID,
        retry_after_send: bool = True,
        marker: str | None = None,
        storage_conn_id: str | None = None,
        resume: Mapping[str, Any] | None = None,
        not_before: float | None = None,
    ) -> None:
        super().__init__()
        self.request = dict(request)
        self.client_request_id = client_request_id
        self.qwen_conn_id = qwen_conn_id
        self.retry_after_send = retry_after_send
        self.marker = marker
        self.storage_conn_id = storage_conn_id
        self.resume = dict(resume or {})
        self.not_before = not_before

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "request": self.request,
                "client_request_id": self.client_request_id,
                "qwen_conn_id": self.qwen_conn_id,
                "retry_after_send": self.retry_after_send,
                "marker": self.marker,
                "storage_conn_id": self.storage_conn_id,
                "resume": self.resume,
                "not_before": self.not_before,
            },
        )

    def __repr__(self) -> str:  # the request (a whole prompt) is not for log lines
        return f"<QwenChatTrigger {self.client_request_id} model={self.request.get('model')!r}>"

    async def run(self) -> AsyncIterator[TriggerEvent]:
        event = await self._call()
        if self.not_before is not None and (wait := self.not_before - time.time()) > 0:
            await asyncio.sleep(wait)
        yield event

    async def _call(self) -> TriggerEvent:
        from airflow_provider_qwen.client.errors import QwenError, error_to_dict
        from airflow_provider_qwen.client.request import ChatRequest
        from airflow_provider_qwen.client.scrub import scrub_generic
        from airflow_provider_qwen.hooks.qwen import QwenHook

        resent = await self._count_send()
        scrub = scrub_generic
        sent, completion = False, None
        try:
            request = ChatRequest.from_dict(self.request)
            async with QwenHook(qwen_conn_id=self.qwen_conn_id).async_client() as client:
                scrub = client._redact
                self.log.info(
                    "sending %s to %s%s",
                    self.client_request_id,
                    request.model,
                    f" (send {resent + 1})" * bool(resent),
                )
                sent = True  # from here the call may have reached the service
                completion = await client.send(
                    request, client_request_id=self.client_request_id, retry_after_send=self.retry_after_send
                )
        except QwenError as exc:
            if completion is None:
                return self._event("error", resent, error=error_to_dict(exc))
            self.log.warning(
                "closing the client after the answer of %s failed: %s", self.client_request_id, exc
            )
        except Exception as exc:  # the triggerer's own failure (a connection it cannot read ...)
            message = scrub(f"{type(exc).__name__}: {exc}")
            if completion is None:  # ``sent``: whether this run may have sent it (then possibly paid)
                return self._event("failed", resent, message=message, sent=sent)
            self.log.warning(
                "closing the client after the answer of %s failed: %s", self.client_request_id, message
            )
        return self._event("success", resent, completion=completion.to_dict())

    def _event(self, status: str, resent: int, **payload: Any) -> TriggerEvent:
        return TriggerEvent({"status": status, "resent": resent, "resume": self.resume, **payload})

    async def _count_send(self) -> int:
        """How many earlier runs of this trigger reached the send (and this one's, counted now)."""
        if not self.marker:
            return 0
        try:
            return await asyncio.to_thread(_bump, self.marker, self.storage_conn_id)
        except Exception as exc:
            self.log.warning(
                "cannot count the sends of %s in %s (%s): a resend after a triggerer restart would not "
                "be counted in qwen_cost",
                self.client_request_id,
                self.marker,
                exc,
            )
            return 0


def _bump(url: str, conn_id: str | None) -> int:
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(url, conn_id=conn_id)
    before = _sends(path.read_text()) if path.exists() else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"sends": before + 1}))
    return before


def _sends(text: str) -> int:
    """The sends a marker counts (at most MAX_RESENDS). A marker this trigger did not write (not JSON,
    not a count >= 1) still shows that an earlier run got this far: one send."""
    from airflow_provider_qwen.calls import MAX_RESENDS

    try:
        value = json.loads(text).get("sends")
    except (ValueError, AttributeError):
        value = None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return min(value, MAX_RESENDS)
    return 1
