"""The batch engine behind QwenBatchOperator: many items, one task, nothing lost, nothing paid twice.

- ``limiter`` (and ``limits_*``): concurrency and start rate held under the limits learned from the 429s.
- ``sender``: every request of a batch: a slot from the limiter, one try, 429s retried here.
- ``retry_policy``: the batch's own client's policy: 429s go to the limiter, a connection per slot.
- ``chunking``: long text split on paragraph/sentence boundaries by exact token counts, linearly.
- ``long_items``: map-reduce over the parts of an item too long for one request.
- ``checkpoint``: a journal of finished work under the provider's storage, read back on a retry;
  each record bound to its item, slot and request, with a checksum.
- ``inputs``: the ``items`` argument, resolved (never rendered) and checked.
- ``sources``, ``readers``, ``feed``: items from a file, folder, glob or URL, read as a stream
  (JSONL, CSV, Parquet, text files), and ``shard_input`` to split one over mapped tasks.
- ``results_file``, ``streams``: results written as they finish (JSONL or Parquet), and the manifest.
- ``items``: one item from prompt to result (structured output, repairs, chunks, large outputs).
- ``runner``: the async scheduler that drives the items and builds the ``qwen_batch`` report.
- ``progress``: a log line every few seconds, never one per item.
- ``event_loop``: the batch's own event loop, with the heap before it frozen.

No module here imports Airflow at import time; the operator in ``operators/batch.py`` is the glue.
"""

from __future__ import annotations

from airflow_provider_qwen.batch.outputs import is_stored_result, load_result
from airflow_provider_qwen.batch.sources import shard_input
from airflow_provider_qwen.batch.streams import results_asset

__all__ = ["is_stored_result", "load_result", "results_asset", "shard_input"]
