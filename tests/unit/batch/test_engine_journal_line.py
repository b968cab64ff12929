"""A journal line is written with one JSON encoding and reads back as the sealed record."""

from __future__ import annotations

import json

import pytest

from airflow_provider_qwen.batch.checkpoint import decode_record, encode_record, seal, sealed, sealed_line


@pytest.mark.parametrize(
    "record",
    [
        {
            "key": "k",
            "index": 3,
            "slot": "item",
            "request": "h",
            "result": "résumé \u2603",
            "usd_spent": "0.1",
        },
        {"key": "k", "result": {"nested": [1, 2.5, None, True]}, "checksum": "stale"},
        {"key": "k"},
    ],
)
def test_a_sealed_line_reads_back_as_the_sealed_record(record):
    line = sealed_line(record)
    assert line.endswith(b"\n")
    read = decode_record(line)
    assert read == json.loads(encode_record(seal(record)))
    assert sealed(read)
