"""What a decorated function may return: each odd value refused with an error naming the task, the
value's type and what is allowed (never the value itself), everything allowed passed on unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from airflow_provider_qwen.client.errors import InvalidRequestError
from airflow_provider_qwen.decorators.base import ReturnedValueError, check_items, check_prompt

WHERE = "@task.qwen 'ask'"
SECRET = "sk-SECRET-in-the-value-4242"


class Note(BaseModel):
    text: str


def _generator():
    yield "a"


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (None, "returned None (does the function end without a return?)"),
        (SECRET.encode(), "returned bytes (27 bytes) (decode it to a str first)"),
        (42, "returned an int"),
        (4.2, "returned a float"),
        (True, "returned a bool"),
        (
            {"role": "user", "content": SECRET},
            "returned a dict (a single dict: return a list of one, [value])",
        ),
        (Note(text=SECRET), "returned a Note (a pydantic model: return model.model_dump()"),
        (_generator(), "returned a generator (a generator or iterator: return a list)"),
        (iter([SECRET]), "(a generator or iterator: return a list)"),
        ({SECRET}, "returned a set"),
        ("", "a prompt with no text (an empty string)"),
        ("  \n\t ", "a prompt with no text (5 whitespace character(s) '  \\n\\t ')"),
        ([], "returned an empty list of messages"),
        ([SECRET], "element [0] is a str; each message must be a dict"),
        ([{"role": "user", "content": "hi"}, b"x"], "element [1] is bytes (1 bytes)"),
        ([Note(text=SECRET)], "element [0] is a Note; each message must be a dict"),
        ([None], "element [0] is None"),
        ([{"role": "human", "content": "hi"}], "message [0] returned by the function has role 'human'"),
        ([{"role": SECRET, "content": "hi"}], "has role a str; allowed: system, user, assistant, tool"),
        ([{"role": None, "content": "hi"}], "has role None"),
        ([{"role": "user"}], 'message [0] returned by the function has no "content"'),
    ],
)
def test_a_prompt_of_the_wrong_kind_is_refused_by_type_never_by_content(value, named):
    with pytest.raises(ReturnedValueError) as caught:
        check_prompt(WHERE, value)
    message = str(caught.value)
    assert message.startswith(f"{WHERE}: ")
    assert named in message
    assert SECRET not in message
    assert "nothing was sent" in message
    if not isinstance(value, list):
        assert "the prompt (a non-empty str) or a list of messages" in message  # what is allowed


def test_the_refusal_is_an_invalid_request_and_a_type_error():
    with pytest.raises(InvalidRequestError):
        check_prompt(WHERE, None)
    with pytest.raises(TypeError):
        check_prompt(WHERE, None)


@pytest.mark.parametrize(
    "text",
    ["{{ 7*7 }}", "{% raw %}", "notes.j2", "x.prompt", "{{ ds }}", "é" * 5, "a" * 2_000_000, " padded \n"],
)
def test_a_prompt_is_passed_on_as_it_is(text):
    assert check_prompt(WHERE, text) is text


def test_a_str_subclass_is_sent_as_a_plain_str():
    from markupsafe import Markup

    class Shouty(str):
        def strip(self, *args):
            return "not empty"

    checked = check_prompt(WHERE, Markup("<b>{{ x }}</b>"))
    assert type(checked) is str
    assert checked == "<b>{{ x }}</b>"
    with pytest.raises(ReturnedValueError, match="no text"):
        check_prompt(WHERE, Shouty("   "))
    (message,) = check_prompt(WHERE, [{"role": Markup("user"), "content": (Markup("a"), "b")}])
    assert message == {"role": "user", "content": ["a", "b"]}
    assert type(message["role"]) is str
    assert all(type(part) is str for part in message["content"])


def test_a_message_holding_itself_or_nested_too_deep_is_refused():
    looped: dict = {"role": "user", "content": []}
    looped["content"].append(looped)
    with pytest.raises(ReturnedValueError, match=r"message \[0\] returned by the function is nested more"):
        check_prompt(WHERE, [looped])
    deep: list = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ReturnedValueError, match="nested more than 32 levels"):
        check_prompt(WHERE, [{"role": "user", "content": deep}])


def test_messages_are_copied_as_dicts_with_nested_jinja_untouched():
    returned = (
        {"role": "system", "content": "{{ params.x }}"},
        {"role": "user", "content": [{"type": "text", "text": "{% raw %}{{ ds }}"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
        {"role": "tool", "content": "{{ 100 * 3 }}", "tool_call_id": "c1"},
    )
    checked = check_prompt(WHERE, returned)
    assert checked == list(returned)
    assert isinstance(checked, list)
    assert all(type(m) is dict for m in checked)
    assert checked[0] is not returned[0]  # a copy: the function's objects are not changed later


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (None, "returned None"),
        (b"a,b", "returned bytes (3 bytes)"),
        (3, "returned an int"),
        ({"text": SECRET}, "returned a dict"),
        ("not a url", "returned a str of 9 character(s) that is not the URL or absolute path of an input"),
        ([1, 2], "items whose element [0] is an int; each item must be a str or a dict"),
        (["ok", None], "element [1] is None"),
        ([Note(text=SECRET)], "element [0] is a Note"),
        ((x for x in "ab"), "returned a generator"),
    ],
)
def test_items_of_the_wrong_kind_are_refused(value, named):
    with pytest.raises(ReturnedValueError) as caught:
        check_items("@task.qwen_batch 'b'", value)
    message = str(caught.value)
    assert message.startswith("@task.qwen_batch 'b': ")
    assert named in message
    assert SECRET not in message
    assert "the items (a list of str or dict)" in message or "each item" in message


def test_items_and_inputs_are_passed_on():
    assert check_items("b", ("a {{ x }}", {"text": "{% raw %}"})) == ["a {{ x }}", {"text": "{% raw %}"}]
    assert check_items("b", []) == []
    assert check_items("b", "s3://bucket/docs/*.txt ") == "s3://bucket/docs/*.txt"
    assert check_items("b", "/data/items.jsonl") == "/data/items.jsonl"
    path = Path("/data/items.jsonl")
    assert check_items("b", path) is path
    from airflow_provider_qwen.batch.sources import SHARD_MARKER

    shard = {SHARD_MARKER: True, "url": "file:///data/x.jsonl"}
    assert check_items("b", shard) is shard
