import datetime
from decimal import Decimal

import pytest

from airflow_provider_qwen.agent.bounds import bound_text, result_text


def test_small_results_pass_whole():
    assert result_text("plain text") == "plain text"
    assert result_text({"day": datetime.date(2026, 1, 2), "usd": Decimal("0.10")}) == (
        '{"day": "2026-01-02", "usd": "0.10"}'
    )


def test_a_long_result_is_cut_at_a_character_boundary_with_a_note():
    text = bound_text("é" * 1000, 300)
    assert len(text.encode("utf-8")) <= 300
    assert text.startswith("é" * 10)
    shown = len(text.split("\n[truncated")[0].encode("utf-8"))
    assert f"[truncated: {shown} of 2000 bytes shown" in text


def test_max_bytes_must_be_positive():
    with pytest.raises(ValueError, match="max_bytes=0"):
        bound_text("x", 0)
