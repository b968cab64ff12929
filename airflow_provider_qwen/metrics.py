"""Airflow metrics of Qwen spend, so StatsD / OpenTelemetry dashboards show cost next to task health.

Emitted once per task try, for what that try spent, tagged ``dag_id``, ``task_id`` and ``model``
(plain StatsD drops tags; use the Datadog, InfluxDB-style StatsD or OpenTelemetry backend to keep them):

- ``qwen.requests``           counter, paid responses
- ``qwen.tokens.prompt``      counter, prompt tokens
- ``qwen.tokens.completion``  counter, completion tokens (reasoning included)
- ``qwen.cost.usd``           counter of USD as a float (StatsD and OTel counters both add floats)
- ``qwen.cost.credits``       counter of service credits, an exact integer (1 USD = 2,000,000 credits)

Metrics never fail a task: a broken metrics backend is logged and ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_qwen.client.cost import CostLedger

log = logging.getLogger(__name__)

REQUESTS = "qwen.requests"
PROMPT_TOKENS = "qwen.tokens.prompt"
COMPLETION_TOKENS = "qwen.tokens.completion"
COST_USD = "qwen.cost.usd"
COST_CREDITS = "qwen.cost.credits"


def get_stats() -> Any:
    """Airflow's metrics facade: ``airflow.sdk.observability.stats`` (3.2+), else ``airflow.stats``."""
    try:
        from airflow.sdk.observability.stats import Stats
    except ImportError:  # Airflow 3.0 / 3.1
        from airflow.stats import Stats
    return Stats


def emit_cost_metrics(by_model: Mapping[str, CostLedger], *, dag_id: str, task_id: str) -> None:
    """Emit one try's spend, one set of counters per model it used."""
    try:
        stats = get_stats()
        for model, ledger in by_model.items():
            if not ledger.requests:
                continue
            tags = {"dag_id": dag_id, "task_id": task_id, "model": model}
            stats.incr(REQUESTS, count=ledger.requests, tags=tags)
            stats.incr(PROMPT_TOKENS, count=ledger.prompt_tokens, tags=tags)
            stats.incr(COMPLETION_TOKENS, count=ledger.completion_tokens, tags=tags)
            stats.incr(COST_CREDITS, count=ledger.cost.credits_used, tags=tags)
            stats.incr(COST_USD, count=float(ledger.usd_spent), tags=tags)
    except Exception:
        log.warning("could not emit Qwen cost metrics", exc_info=True)
