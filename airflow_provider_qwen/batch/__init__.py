"""The batch engine behind QwenBatchOperator: many items, one task, nothing lost, nothing paid twice.

- ``limiter``: bounded, adaptive concurrency (AIMD on 429, Retry-After, requests-per-minute cap).
- ``retry_policy``: the batch's own client's policy: 429s go to the limiter, a connection per slot.
- ``chunking``: long items split on paragraph/sentence boundaries, then map-reduce.
- ``checkpoint``: a journal of finished items under the provider's storage, read back on a retry.
- ``inputs``: the ``items`` argument, resolved (never rendered) and checked.
- ``items``: one item from prompt to result (structured output, repairs, chunks, large outputs).
- ``runner``: the async scheduler that drives the items and builds the ``qwen_batch`` report.
- ``progress``: a log line every few seconds, never one per item.

No module here imports Airflow at import time; the operator in ``operators/batch.py`` is the glue.
"""

from __future__ import annotations

from airflow_provider_qwen.batch.outputs import is_stored_result, load_result

__all__ = ["is_stored_result", "load_result"]
