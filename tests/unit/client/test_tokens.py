"""Qwen token counts: exact with the vocabulary (the seed's 19), a true byte bound without it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_qwen.client import tokens
from airflow_provider_qwen.client.request import build_request

SEED = Path(__file__).parents[2] / "fixtures" / "qwen3.7-max-response.json"
MODEL = "alibaba/qwen3.7-max"


def test_the_seed_example_counts_exactly_what_the_service_reported():
    reported = json.loads(SEED.read_text())["usage"]["prompt_tokens"]
    request = build_request("Hi! What do you think about mankind?", model=MODEL)
    assert tokens.exact()
    assert tokens.request_tokens(request) == reported == 19
    assert tokens.request_token_bound(request) > reported  # the worst case never undercounts


def test_every_digit_is_a_token_and_cjk_is_dense():
    assert tokens.text_tokens("1234567890" * 100) == 1000
    assert tokens.text_tokens("数据工程师每天处理大量文档") >= 6


def test_system_prompts_tools_and_parts_all_count():
    plain = build_request([{"role": "user", "content": "hi"}], model=MODEL)
    system = build_request(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}], model=MODEL
    )
    parts = build_request(
        [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": " there"}]}],
        model=MODEL,
    )
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    with_tools = build_request([{"role": "user", "content": "hi"}], model=MODEL, tools=[tool])
    base = tokens.request_tokens(plain)
    assert tokens.request_tokens(system) == base + tokens.text_tokens("system\nBe brief.\n") + 2
    assert tokens.request_tokens(parts) > base
    assert tokens.request_tokens(with_tools) > base + tokens.text_tokens(json.dumps(tool))


def test_token_slices_rejoin_to_the_text_and_respect_the_limit():
    text = ("Quarterly revenue rose 12%. 收入增长了百分之十二。 " * 500).strip()
    slices = tokens.token_slices(text, 100)
    assert "".join(slices) == text
    assert all(tokens.text_tokens(s) <= 100 for s in slices)


def test_without_the_vocabulary_every_count_is_an_upper_bound(monkeypatch):
    text = "Quarterly revenue: 1234 EUR, 收入 ✓"
    exact = tokens.text_tokens(text)
    request = build_request(text, model=MODEL)
    exact_request = tokens.request_tokens(request)
    monkeypatch.setattr(tokens, "_loaded", [None])
    assert not tokens.exact()
    assert tokens.text_tokens(text) == len(text.encode()) >= exact
    assert tokens.request_tokens(request) >= exact_request
    slices = tokens.token_slices(text, 5)
    assert "".join(slices) == text
    assert all(len(s.encode()) <= 5 for s in slices)


@pytest.mark.parametrize("size", [4_000_000])
def test_four_megabytes_count_in_one_pass(size):
    text = ("Invoice 2026-12-01 total 1,234.56 EUR; 发票总额. " * (size // 48))[:size]
    assert tokens.texts_tokens([text, "hi"])[0] == tokens.text_tokens(text) > size // 8


def test_a_model_off_the_vocabulary_gets_a_byte_bound_worst_case():
    text = "Quarterly revenue 1234 EUR " * 50
    line = build_request(text, model="alibaba/qwen3.8-max")
    older = build_request(text, model="Qwen/Qwen2.5-72B-Instruct-Turbo")
    assert tokens.counts_exactly("alibaba/qwen3.8-max")
    assert tokens.counts_exactly("qwen3.6-flash")
    assert not tokens.counts_exactly("Qwen/Qwen2.5-72B-Instruct-Turbo")
    assert tokens.request_token_bound(line) < len(text.encode())
    assert tokens.request_token_bound(older) >= len(text.encode())
