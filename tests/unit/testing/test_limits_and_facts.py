"""The emulator's limits (context windows, requests and tokens a minute) and the prompt facts it
fills structured answers with."""

from __future__ import annotations

import jsonschema
import pytest

from airflow_provider_qwen.testing import facts, limits
from airflow_provider_qwen.testing.arguments import tool_arguments
from airflow_provider_qwen.testing.values import SchemaValues


@pytest.mark.parametrize(
    ("model", "window"),
    [
        ("alibaba/qwen3.8-max", 1_000_000),
        ("alibaba/qwen3.7-max", 1_000_000),
        ("alibaba/qwen3.6-flash", 1_000_000),
        ("alibaba/qwen3.8-27b", 262_144),
        ("alibaba/qwen3.5-flash", 262_144),
        ("qwen3.8-27b", 262_144),  # without the vendor prefix
        ("qwen-max", 32_000),
        ("alibaba/qwen-unknown", limits.DEFAULT_CONTEXT_WINDOW),
    ],
)
def test_context_windows_per_model(model, window):
    assert limits.context_window(model) == window


def test_the_window_counts_the_completion_budget_too():
    assert limits.window_error("m", 100, 0, 100) is None
    message = limits.window_error("m", 90, 20, 100)
    assert message is not None
    assert "maximum context length is 100" in message
    assert "110" in message
    assert limits.context_window("alibaba/qwen3.8-27b", {"alibaba/qwen3.8-27b": 10}) == 10


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_slide_with_the_clock():
    clock = Clock()
    window = limits.RateWindow(clock)
    assert [window.admit(1, rpm=2, tpm=None) for _ in range(3)] == [True, True, False]
    clock.now += 59.9
    assert not window.admit(1, rpm=2, tpm=None)
    clock.now += 0.2
    assert window.admit(1, rpm=2, tpm=None)


def test_tokens_per_minute_count_prompts_and_generated_tokens():
    clock = Clock()
    window = limits.RateWindow(clock)
    assert window.admit(60, rpm=None, tpm=100)
    window.add_tokens(30)
    assert not window.admit(11, rpm=None, tpm=100)
    assert window.admit(10, rpm=None, tpm=100)
    clock.now += 61
    assert window.admit(100, rpm=None, tpm=100)
    assert window.admit(101, rpm=None, tpm=None) is not False  # no limit: always admitted


TEXT = (
    "Classify the severity as low, medium, high or critical.\n\n"
    "Incident INC-4471: the payment API is down since 09:12, severity high. Refunded amount: 129.50 USD "
    "after 3 retries. Reporter: ops@acme.io, cc lead@acme.io."
)
SCHEMA = {
    "type": "object",
    "properties": {
        "severity": {"enum": ["low", "medium", "high", "critical"]},
        "reporter": {"type": "string", "format": "email"},
        "cc_email": {"type": "string"},
        "amount": {"type": "number", "minimum": 0},
        "retries": {"type": "integer", "minimum": 0, "maximum": 10},
        "ticket": {"type": "string", "pattern": "^INC-[0-9]+$"},
    },
    "required": ["severity", "reporter", "cc_email", "amount", "retries", "ticket"],
}


def test_structured_values_come_from_the_prompt():
    import json

    value = json.loads(tool_arguments(SCHEMA, TEXT))
    jsonschema.validate(value, SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    assert value == {
        "severity": "high",  # named last: in the document, after the instructions list them all
        "reporter": "ops@acme.io",
        "cc_email": "lead@acme.io",  # each found value used once
        "amount": 129.5,  # the number after the field's name
        "retries": 3,  # the first number in the text that fits 0..10
        "ticket": "INC-4471",  # the text's match of the pattern
    }


def test_values_that_do_not_fit_fall_back_to_generated_ones():
    schema = {
        "type": "object",
        "properties": {
            "level": {"enum": ["one", "two"]},
            "mail": {"type": "string", "format": "email", "maxLength": 5},
            "n": {"type": "integer", "minimum": 10000},
        },
        "required": ["level", "mail", "n"],
    }
    values = SchemaValues(schema, "nothing here but 42 and x@y.io")
    result = values.example()
    assert values.is_valid(result)
    assert result["level"] in {"one", "two"}
    assert result["mail"] != "x@y.io"
    assert result["n"] != 42


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Temperature -5 C, 1,000 items and 3.5 kg", [-5, 1000, 3.5]),
        ("version v2, host 10.0.0.1, id INC-44", []),
        ("total: 12 of 40", [12, 40]),
    ],
)
def test_numbers_in_text(text, found):
    assert facts.numbers(text) == found


def test_named_option_prefers_the_one_named_last_and_whole_words():
    assert facts.named_option(["low", "high"], "low, high? It is low.") == "low"
    assert facts.named_option(["low"], "slowly") is None
    assert facts.named_option(["in_progress", "done"], "the task is in progress") == "in_progress"
    assert facts.emails("mail a.b@c.co. or a.b@c.co") == ["a.b@c.co"]
