"""OpenLineage facets of the Qwen operators (filled in by the lineage work of issue 16)."""

from __future__ import annotations

from typing import Any


class QwenLineageMixin:
    """What every Qwen operator reports to OpenLineage after a try (set by ``finish_cost``)."""

    qwen_cost_record: Any = None
    qwen_inference_ids: list[str] = []
