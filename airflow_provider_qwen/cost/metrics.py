"""Metrics of Qwen spend, so StatsD / OpenTelemetry dashboards show cost next to task health.

Emitted once per task try, for what that try spent, tagged ``dag_id``, ``task_id`` and ``model``
(plain StatsD drops tags; use the Datadog, InfluxDB-style StatsD or OpenTelemetry backend to keep them):

- ``qwen.requests``           counter, paid responses
- ``qwen.tokens.prompt``      counter, prompt tokens
- ``qwen.tokens.completion``  counter, completion tokens (reasoning included)
- ``qwen.cost.usd``           counter of USD as a float (StatsD and OTel counters both add floats)
- ``qwen.cost.credits``       counter of service credits, an exact integer (1 USD = 2,000,000 credits)

Metrics never fail a task: a broken metrics backend is logged and ignored. ``stats`` is Airflow's
metrics facade, handed in (``airflow_provider_qwen.metrics.get_stats``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from airflow_provider_qwen.cost.record import CostTotals

log = logging.getLogger(__name__)

REQUESTS = "qwen.requests"
PROMPT_TOKENS = "qwen.tokens.prompt"
COMPLETION_TOKENS = "qwen.tokens.completion"
COST_USD = "qwen.cost.usd"
COST_CREDITS = "qwen.cost.credits"


def emit_cost_metrics(stats: Any, by_model: Mapping[str, CostTotals], *, dag_id: str, task_id: str) -> None:
    """Emit one try's spend, one set of counters per model it used."""
    try:
        for model, totals in by_model.items():
            if not totals.requests:
                continue
            tags = {"dag_id": dag_id, "task_id": task_id, "model": model}
            stats.incr(REQUESTS, count=totals.requests, tags=tags)
            stats.incr(PROMPT_TOKENS, count=totals.prompt_tokens, tags=tags)
            stats.incr(COMPLETION_TOKENS, count=totals.completion_tokens, tags=tags)
            stats.incr(COST_CREDITS, count=totals.cost.credits_used, tags=tags)
            stats.incr(COST_USD, count=float(totals.usd_spent), tags=tags)
    except Exception:
        log.warning("could not emit Qwen cost metrics", exc_info=True)
