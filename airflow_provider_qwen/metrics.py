"""Airflow's side of the Qwen cost metrics: the metrics facade; names and emission in ``cost.metrics``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_qwen.cost import metrics as _metrics
from airflow_provider_qwen.cost.metrics import (
    COMPLETION_TOKENS,
    COST_CREDITS,
    COST_USD,
    PROMPT_TOKENS,
    REQUESTS,
)

if TYPE_CHECKING:
    from airflow_provider_qwen.cost.record import CostTotals

log = logging.getLogger(__name__)

__all__ = ["COMPLETION_TOKENS", "COST_CREDITS", "COST_USD", "PROMPT_TOKENS", "REQUESTS", "emit_cost_metrics"]


def get_stats() -> Any:
    """Airflow's metrics facade: ``airflow.sdk.observability.stats`` (3.2+), else ``airflow.stats``."""
    try:
        from airflow.sdk.observability.stats import Stats
    except ImportError:  # Airflow 3.0 / 3.1
        from airflow.stats import Stats
    return Stats


def emit_cost_metrics(by_model: Mapping[str, CostTotals], *, dag_id: str, task_id: str) -> None:
    """Emit one try's spend through Airflow's metrics; never raises."""
    try:
        stats = get_stats()
    except Exception:
        log.warning("could not emit Qwen cost metrics", exc_info=True)
        return
    _metrics.emit_cost_metrics(stats, by_model, dag_id=dag_id, task_id=task_id)
