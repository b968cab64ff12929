"""Running an operator as the task runner does, under a timeout or a SIGTERM, for the kill tests."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk.execution_time.task_runner import _run_execute_callable

from airflow_provider_qwen.operators import QwenBatchOperator
from tests.support.batch_fakes import echo, user_text


def task_context(op: Any, ti: Any) -> dict[str, Any]:
    """The bits of a task context the operators read, with ``op``'s template fields rendered."""
    context = {"ti": ti, "task_instance": ti, "params": {}, "run_id": ti.run_id}
    op.render_template_fields(context)
    return context


def timed(op: Any, ti: Any, seconds: float) -> Any:
    """``execute`` as the task runner runs it under ``execution_timeout``."""
    op.execution_timeout = timedelta(seconds=seconds)
    return _run_execute_callable(task_context(op, ti), op.execute, op)


def kill_self_after(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    return timer


def records(storage: Path) -> list[dict]:
    """Every record journalled under the task storage ``storage``."""
    return [json.loads(line) for p in storage.rglob("journal/*.jsonl") for line in p.read_text().splitlines()]


def batch(**kwargs: Any) -> QwenBatchOperator:
    """A batch of small answers, its progress logged rarely."""
    kwargs.setdefault("task_id", "batch")
    kwargs.setdefault("prompt", "Summarise: {{ item }}")
    kwargs.setdefault("progress_interval", 60)
    kwargs.setdefault("max_completion_tokens", 40)
    return QwenBatchOperator(**kwargs)


def slow_from(first_slow: int, *, block: float | None = None):
    """Items below ``first_slow`` answer at once; the first slow one blocks the main thread for
    ``block`` seconds inside its coroutine (where SIGALRM then lands); the others take 5 s."""

    def reply(request):
        index = int(user_text(request).split()[-1])
        if index < first_slow:
            return echo(request)
        if index == first_slow and block is not None:
            time.sleep(block)
            return echo(request)
        return 5.0, echo(request)

    return reply
