"""Report a DAG run's Qwen cost from a callback, without adding a task.

    from airflow_provider_qwen.callbacks import qwen_cost_callback

    @dag(on_success_callback=qwen_cost_callback, on_failure_callback=qwen_cost_callback, ...)

As a DAG callback it runs in the DAG processor (or inline under ``dag.test()``) once the run ends and
logs the same table as ``QwenCostReportOperator``; as a task callback it reports the run so far.
``make_cost_callback(sink)`` hands the report to your own code (a chat message, a ledger table ...).
It reads the run's ``qwen_cost`` XComs through the callback context's task instance (Task SDK, no DB).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

log = logging.getLogger(__name__)

CostSink = Callable[[dict[str, Any], Mapping[str, Any]], Any]


def run_cost_report(context: Mapping[str, Any]) -> dict[str, Any] | None:
    """The run's cost report (as QwenCostReportOperator returns it), logged as a table; None if unreadable."""
    from airflow_provider_qwen.operators.spend import collect_run_cost

    if context.get("ti") is None:
        log.warning(
            "Qwen cost report skipped for run %s: Airflow gave this callback no task instance to read "
            "XComs through (the run has no task instances)",
            context.get("run_id"),
        )
        return None
    try:
        with _task_sdk_comms(context["ti"]):
            report = collect_run_cost(context)
    except Exception:
        log.exception("could not collect the Qwen cost of run %s", context.get("run_id"))
        return None
    log.info("%s", report.table())
    return report.as_dict()


@contextlib.contextmanager
def _task_sdk_comms(ti: Any) -> Iterator[None]:
    """The Task SDK channel XComs are read through.

    The DAG processor and workers run callbacks with one; ``dag.test()`` runs DAG callbacks inline
    without any, so there the same in-process channel ``dag.test()`` gives its tasks is set up.
    """
    from airflow.sdk.execution_time import task_runner

    if hasattr(task_runner, "SUPERVISOR_COMMS") or getattr(ti, "id", None) is None:
        yield  # a channel is there already (or ``ti`` is not a Task SDK task instance)
        return
    import os

    import psutil
    import structlog
    from airflow.sdk.execution_time.supervisor import (
        InProcessSupervisorComms,
        InProcessTestSupervisor,
        set_supervisor_comms,
    )

    supervisor = InProcessTestSupervisor(
        id=ti.id,
        pid=os.getpid(),
        process=psutil.Process(),
        process_log=structlog.get_logger(logger_name="task").bind(),
        client=InProcessTestSupervisor._api_client(),
    )
    supervisor.comms = InProcessSupervisorComms(supervisor=supervisor)
    with set_supervisor_comms(supervisor.comms):
        yield


def qwen_cost_callback(context: Mapping[str, Any]) -> None:
    """``on_success_callback`` / ``on_failure_callback``: log the run's Qwen cost; never raises."""
    run_cost_report(context)


def make_cost_callback(sink: CostSink) -> Callable[[Mapping[str, Any]], None]:
    """A callback that logs the run's cost and passes the report and the context to ``sink``."""

    def callback(context: Mapping[str, Any]) -> None:
        report = run_cost_report(context)
        if report is None:
            return
        try:
            sink(report, context)
        except Exception:
            log.exception("the Qwen cost sink %r failed", sink)

    callback.__name__ = f"qwen_cost_callback_to_{getattr(sink, '__name__', 'sink')}"
    return callback
