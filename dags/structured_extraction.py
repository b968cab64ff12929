"""Structured extraction with Qwen: support tickets -> a pydantic model, one mapped task per ticket.

qwen3.7-max has no JSON mode: `QwenToolCallOperator` forces a call of a tool built from the
`Ticket` model, validates the arguments (asking the model to repair them if needed) and returns
`Ticket.model_dump(mode="json")`. Tickets are passed as data through `.expand()`, never rendered
as templates; the instructions live in `prompts/extract_ticket_system.prompt`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import pendulum
from airflow.sdk import Param, XComArg, dag, task
from pydantic import BaseModel, Field

from airflow_provider_qwen.operators import QwenToolCallOperator
from airflow_provider_qwen.retry_policy import QwenRetryPolicy

DEFAULT_TICKETS = [
    "Hi, I was charged twice for the Pro plan this month (invoice 8841). Please refund one. "
    "- ana@example.com",
    "The CSV export button in Reports does nothing since this morning. Chrome 126, no console errors.",
    "Would be great if dashboards could be shared with a public link.",
]


class Ticket(BaseModel):
    """A support ticket, structured for routing."""

    category: Literal["billing", "bug", "account", "feature_request", "other"]
    urgency: Literal["low", "medium", "high"]
    summary: str = Field(description="One plain sentence, at most 25 words.")
    customer_email: str | None = Field(default=None, description="Only if the ticket states it.")
    products: list[str] = Field(default_factory=list, description="Products or features mentioned.")


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["qwen-example"],
    params={
        "company": Param("Acme Analytics", type="string"),
        "tickets": Param(DEFAULT_TICKETS, type="array", items={"type": "string"}),
    },
    default_args={"retries": 2, "retry_policy": QwenRetryPolicy()},  # see docs/retry-policy.md
    doc_md=__doc__,
)
def qwen_structured_extraction():
    @task
    def load_tickets(**context) -> list[str]:
        """Today's tickets (in real life: from the helpdesk API)."""
        return list(context["params"]["tickets"])

    extract = QwenToolCallOperator.partial(
        task_id="extract_ticket",
        system_prompt="prompts/extract_ticket_system.prompt",
        output_model=Ticket,
        temperature=0.2,
        max_completion_tokens=16_000,
        max_cost_usd=0.25,
    ).expand(prompt=load_tickets())  # one mapped task per ticket; add pool="qwen_api" to cap concurrency

    @task
    def route(tickets: list[dict], costs: list[dict]):
        """Group the tickets for the queues and add up what the extraction cost, exactly."""
        queues: dict[str, list[str]] = {}
        for ticket in tickets:
            queues.setdefault(ticket["category"], []).append(ticket["summary"])
        return {
            "queues": queues,
            "urgent": [t["summary"] for t in tickets if t["urgency"] == "high"],
            "usd_spent": str(sum((Decimal(c["usd_spent"]) for c in costs), Decimal(0))),
            "requests": sum(c["requests"] for c in costs),
        }

    route(extract.output, XComArg(extract, key="qwen_cost"))


qwen_structured_extraction()
