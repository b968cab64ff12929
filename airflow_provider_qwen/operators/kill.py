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

Nothing is raised where it would break more than the body: while the body waits for an answer of
Airflow's supervisor (the answer would stay unread in the socket and the next request, the cost
journal's or the ``qwen_cost`` push, would read it as its own) or while the try's money is being
recorded (a charge half filed would be counted again as a possibly paid try). A stop that finds
the body there is held and delivered (a thread watches the stack, then signals the main thread
again) the moment the body is out. A kill that comes before the body starts (while ``metered``
fetches prices or opens the journal) stops it at its start; one after a body ended (the timeout
path) stops nothing. ``unkillable()`` holds a timeout until the try's cost is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
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
        self.held = False  # a stop waits for the body to leave a supervisor request or the bookkeeping
        self.ended = False
        self.alarm: Any = None  # the SIGALRM handler routing to this run, while it is installed
        self.watcher: threading.Thread | None = None


class KillableMixin:
    """``on_kill`` and the ``killable()`` scope for operators whose ``execute`` body runs inside it."""

    _qwen_run: _Run | None = None
    _qwen_ran = False  # a body ran to its end on this operator: a later on_kill has nothing to stop
    _qwen_early: QwenTaskKilled | None = None  # a kill that came before the body started

    @contextmanager
    def killable(self) -> Iterator[None]:
        """Run the body so a kill or a timeout unwinds it (see the module's docstring)."""
        early, self._qwen_early = self._qwen_early, None
        if early is not None:
            raise early  # killed while metered got ready: nothing was sent
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
            run.ended = True  # a stop still held is given at the edge, never raised into what follows
            run.held = False
            self._qwen_run = None
            self._qwen_ran = True
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
            if not self._qwen_ran and self._qwen_early is None:  # before the body: stop it at its start
                self._qwen_early = QwenTaskKilled(f"{_name(self)} was killed (SIGTERM) before its body ran")
            return
        self._stop(run, QwenTaskKilled(f"{_name(self)} was killed (SIGTERM) while it ran"))

    @contextmanager
    def unkillable(self) -> Iterator[None]:
        """Around what comes after the body (publishing the try's cost): a timeout that passes here
        is held until the block is done, then given back; a SIGTERM here stops nothing (``on_kill``)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGALRM)
        if not callable(previous):
            yield
            return
        held: list[BaseException] = []

        def hold_alarm(signum: int, frame: Any) -> None:
            try:
                previous(signum, frame)
            except BaseException as exc:  # AirflowTaskTimeout: given back once the block is done
                held.append(exc)

        signal.signal(signal.SIGALRM, hold_alarm)
        try:
            yield
        finally:
            if signal.getsignal(signal.SIGALRM) is hold_alarm:
                signal.signal(signal.SIGALRM, previous)
            if held:
                raise held[0]

    # -- internals ------------------------------------------------------------------------------

    def _watch_alarm(self, run: _Run) -> Any:
        """Route SIGALRM (Airflow's ``execution_timeout``) through ``_stop`` while the body runs."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGALRM)
        if not callable(previous):  # no timeout handler: nothing to route
            return lambda: None

        def on_alarm(signum: int, frame: Any) -> None:
            if run.held:  # our own signal: the held stop may be delivered now
                self._deliver(run)
                return
            try:
                previous(signum, frame)
            except BaseException as exc:  # Airflow's AirflowTaskTimeout (a BaseException in 3.3)
                self._stop(run, QwenTaskKilled(f"{_name(self)} timed out: {exc}", cause=exc))

        signal.signal(signal.SIGALRM, on_alarm)
        run.alarm = on_alarm

        def restore() -> None:
            # After a stop the routing stays (a later alarm only logs: it would break the cleanup after
            # the body, the cost record's journal and XCom); the next timeout() installs its own.
            if run.stop is None and signal.getsignal(signal.SIGALRM) is on_alarm:
                signal.signal(signal.SIGALRM, previous)

        return restore

    def _stop(self, run: _Run, stop: QwenTaskKilled) -> None:
        run.signals += 1
        logger = getattr(self, "log", log)
        if run.held:  # a stop waits for the body to be out of a supervisor request or the bookkeeping
            self._deliver(run)
            return
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
            busy = _busy(sys._getframe(1))
            if busy is None:
                raise stop  # in the body's thread: a signal handler interrupting it
            logger.warning("%s: the stop waits until the body is out of %s", _name(self), busy)
            self._hold(run)
        # another thread, no loop to cancel: the body stops at the edge of killable()

    def _hold(self, run: _Run) -> None:
        """Deliver the stop once the body's thread is out of what ``_busy`` names: a thread watches its
        stack, then signals it (SIGALRM when ours routes it, else SIGTERM to the task runner's handler,
        which calls ``on_kill``); without either handler the stop waits for the edge of the body."""
        run.held = True
        if run.alarm is not None and signal.getsignal(signal.SIGALRM) is run.alarm:
            signum: int | None = signal.SIGALRM
        elif callable(signal.getsignal(signal.SIGTERM)):
            signum = signal.SIGTERM
        else:
            signum = None
        if signum is None or run.watcher is not None:
            return
        run.watcher = threading.Thread(target=_redeliver, args=(run, signum), name="qwen-kill", daemon=True)
        run.watcher.start()

    def _deliver(self, run: _Run) -> None:
        """The held stop, raised now if the body's thread is out of what held it (else held on)."""
        if run.ended or run.stop is None or threading.get_ident() != run.thread:
            return
        if _busy(sys._getframe(1)) is not None:
            return
        run.held = False
        raise run.stop

    @staticmethod
    def _cancel(run: _Run) -> None:
        loop, task = run.loop, run.task
        if loop is None or task is None or task.done():
            return  # the engine is done: killable() raises the stop once the body returns
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(task.cancel, str(run.stop))


# Where nothing may be raised into the body: Airflow's supervisor requests (comms.py; in-process, as
# under dag.test, the supervisor's own handling) and the try's money (the ledger, budgets, journals).
_COMMS = "/airflow/sdk/execution_time/comms.py"
_IN_PROCESS = ("/airflow/sdk/execution_time/supervisor.py", frozenset({"send", "_handle_request"}))
_MONEY = "/airflow_provider_qwen/cost/"
REDELIVERIES = 100


def _busy(frame: FrameType | None) -> str | None:
    """What the stack from ``frame`` up is in the middle of, where no stop may be raised (None: nothing)."""
    while frame is not None:
        code = frame.f_code
        path = code.co_filename.replace(os.sep, "/")
        if path.endswith(_COMMS) or (path.endswith(_IN_PROCESS[0]) and code.co_name in _IN_PROCESS[1]):
            return "a request to Airflow's supervisor"
        if _MONEY in path:
            return "the try's cost bookkeeping"
        frame = frame.f_back
    return None


def _redeliver(run: _Run, signum: int) -> None:
    """Signal the body's thread again once its stack is out of what held the stop (at most
    ``REDELIVERIES`` times: a handler that does not reach ``on_kill`` leaves the stop to the edge)."""
    signals = 0
    while run.held and not run.ended and signals < REDELIVERIES:
        frame = sys._current_frames().get(run.thread)
        clear = frame is not None and _busy(frame) is None
        del frame
        if clear:
            with contextlib.suppress(OSError, ValueError):
                signal.pthread_kill(run.thread, signum)
            signals += 1
            time.sleep(0.02)  # the handler raises, or finds the body busy again and holds on
        else:
            time.sleep(0.002)


def _given_back(stop: QwenTaskKilled) -> BaseException:
    """What leaves the body: Airflow's own timeout error for a timeout, else the kill."""
    return stop.cause if stop.cause is not None else stop


def _name(operator: Any) -> str:
    return f"{type(operator).__name__} {getattr(operator, 'task_id', '?')!r}"
