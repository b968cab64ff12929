"""Kills and timeouts: what a Qwen task does when it is stopped while ``execute`` runs.

Airflow stops a running task in two ways that reach the task's own process:

- SIGTERM (a user marked it failed or success, the scheduler stopped it, the worker shuts down):
  the task runner's handler calls ``on_kill()`` and returns; the supervisor SIGKILLs later.
- ``execution_timeout``: SIGALRM raises ``AirflowTaskTimeout`` into whatever the main thread runs
  (in an event loop: into a callback, which logs and drops it, or into any coroutine, whose
  ``except`` may take it for its own error), then ``on_kill()`` is called once ``execute`` unwound.

Either way the try must unwind through its ``finally`` blocks: ``Calls`` counts a call in flight as
one possibly paid try, ``metered`` journals the try's cost and pushes ``qwen_cost``, a batch has
its checkpoint, an agent its journal. ``KillableMixin.killable()`` (around the body of ``metered``)
makes both paths do that:

- in sync code (a chat call blocked in a socket read) the signal raises ``QwenTaskKilled``, a
  ``BaseException``, so no ``except Exception`` on the way (a retry loop, a tool's error handling)
  takes it for an error of its own; the blocked read is interrupted (PEP 475 would resume it);
- in an async engine (the batch, the agent; ``attach_loop()``) nothing is raised into the event
  loop, where a callback would swallow it or an item would record it as its own failure: the
  engine's main task is cancelled instead, and every request, item and tool unwinds as cancelled;
- at the edge of the body, a timeout is given back as Airflow's own ``AirflowTaskTimeout`` (so
  Airflow fails the try as timed out, with retries) and a kill as ``QwenTaskKilled``.

A second signal while the try unwinds only logs: the cleanup runs to its end. SIGKILL cannot be
handled: see docs/kill.md for what it loses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["KillableMixin", "QwenTaskKilled"]

log = logging.getLogger(__name__)


class QwenTaskKilled(BaseException):
    """The task was stopped while ``execute`` ran (SIGTERM, or its ``execution_timeout``).

    A ``BaseException``: the code it unwinds through must not record it as one failed item or
    one tool error. ``cause`` is the exception Airflow raised (``AirflowTaskTimeout``), given back
    at the operator's edge; None for a kill."""

    def __init__(self, message: str, *, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class _Run:
    """One ``execute`` body running in this process."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.stop: QwenTaskKilled | None = None  # set by the first kill or timeout
        self.loop: asyncio.AbstractEventLoop | None = None  # the async engine's, once attached
        self.task: asyncio.Future[Any] | None = None
        self.signals = 0


class KillableMixin:
    """``on_kill`` and the ``killable()`` scope for operators whose ``execute`` body runs inside it."""

    _qwen_run: _Run | None = None

    @contextmanager
    def killable(self) -> Iterator[None]:
        """Run the body so a kill or a timeout unwinds it (see the module's docstring)."""
        run = _Run()
        restore = self._watch_alarm(run)
        self._qwen_run = run
        try:
            yield
        except BaseException as exc:
            if run.stop is None:
                raise
            given = _given_back(run.stop)
            if given is exc:
                raise
            raise given.with_traceback(exc.__traceback__) from None  # where the body was stopped
        finally:
            self._qwen_run = None
            restore()
        if run.stop is not None:  # the body finished before the stop reached it: the try still stops
            raise _given_back(run.stop)

    def attach_loop(self) -> None:
        """Called in the async engine's main task: from now on a kill or a timeout cancels that task
        instead of raising into the event loop."""
        run = self._qwen_run
        if run is None:
            return
        run.loop = asyncio.get_running_loop()
        run.task = asyncio.current_task()
        if run.stop is not None:  # stopped while the loop started: stop at once
            self._cancel(run)

    def on_kill(self) -> None:
        """SIGTERM (Airflow's handler calls this): stop the running body. After the body ended (the
        timeout path calls this once ``execute`` unwound), nothing to do."""
        run = self._qwen_run
        if run is None:
            return
        self._stop(run, QwenTaskKilled(f"{_name(self)} was killed (SIGTERM) while it ran"))

    # -- internals ------------------------------------------------------------------------------

    def _watch_alarm(self, run: _Run) -> Any:
        """Route SIGALRM (Airflow's ``execution_timeout``) through ``_stop`` while the body runs."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGALRM)
        if not callable(previous):  # no timeout handler: nothing to route
            return lambda: None

        def on_alarm(signum: int, frame: Any) -> None:
            try:
                previous(signum, frame)
            except BaseException as exc:  # Airflow's AirflowTaskTimeout (a BaseException in 3.3)
                self._stop(run, QwenTaskKilled(f"{_name(self)} timed out: {exc}", cause=exc))

        signal.signal(signal.SIGALRM, on_alarm)

        def restore() -> None:
            # After a stop the routing stays (a later alarm only logs: it would break the cleanup after
            # the body, the cost record's journal and XCom); the next timeout() installs its own.
            if run.stop is None and signal.getsignal(signal.SIGALRM) is on_alarm:
                signal.signal(signal.SIGALRM, previous)

        return restore

    def _stop(self, run: _Run, stop: QwenTaskKilled) -> None:
        run.signals += 1
        logger = getattr(self, "log", log)
        if run.stop is not None:  # the try is already unwinding: let its cleanup finish
            logger.warning(
                "%s: %s; the try is already stopping (%s), its cleanup goes on", _name(self), stop, run.stop
            )
            return
        run.stop = stop
        logger.error("%s: stopping this try: requests in flight are cancelled and counted", stop)
        if run.loop is not None:
            self._cancel(run)
            return  # the loop's main task unwinds; killable() raises the stop at the edge
        if threading.get_ident() == run.thread:
            raise stop  # in the body's thread: a signal handler interrupting it
        # another thread, no loop to cancel: the body stops at the edge of killable()

    @staticmethod
    def _cancel(run: _Run) -> None:
        loop, task = run.loop, run.task
        if loop is None or task is None or task.done():
            return  # the engine is done: killable() raises the stop once the body returns
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(task.cancel, str(run.stop))


def _given_back(stop: QwenTaskKilled) -> BaseException:
    """What leaves the body: Airflow's own timeout error for a timeout, else the kill."""
    return stop.cause if stop.cause is not None else stop


def _name(operator: Any) -> str:
    return f"{type(operator).__name__} {getattr(operator, 'task_id', '?')!r}"
