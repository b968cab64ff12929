"""Long items: splitting on paragraph/sentence boundaries, grouping for reduction, and map-reduce."""

from __future__ import annotations

import re

import pytest

from airflow_provider_qwen.batch.chunking import reduce_groups, split_text
from airflow_provider_qwen.client.tokens import text_tokens
from airflow_provider_qwen.operators import QwenBatchOperator
from tests.support.batch_fakes import BatchTI, user_text, with_async_client
from tests.support.operator_fakes import answer, run


@pytest.fixture(autouse=True)
def storage(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", f"file://{tmp_path}")


def paragraph(n: int, sentences: int = 6) -> str:
    return " ".join(f"Paragraph {n} sentence {s} says something useful." for s in range(sentences))


def words(text: str) -> list[str]:
    return text.split()


def test_short_text_is_one_part_unchanged():
    text = "One line.\n\nAnother."
    assert split_text(text, 1000) == [text]


def test_paragraphs_stay_whole_and_parts_fit():
    text = "\n\n".join(paragraph(n) for n in range(12))
    parts = split_text(text, 200)
    assert len(parts) > 1
    assert all(text_tokens(p) <= 200 for p in parts)
    assert words(" ".join(parts)) == words(text)  # nothing lost, nothing reordered
    for part in parts:  # a paragraph that fits is never cut
        assert all(p.startswith("Paragraph") and p.endswith("useful.") for p in part.split("\n\n"))


def test_a_long_paragraph_is_cut_between_sentences():
    text = paragraph(1, sentences=40)
    parts = split_text(text, 100)
    assert len(parts) > 1
    assert all(text_tokens(p) <= 100 for p in parts)
    assert all(p.endswith(".") for p in parts)
    assert words(" ".join(parts)) == words(text)


def test_cjk_sentences_without_spaces_are_split():
    text = "今天天气很好。" * 200
    parts = split_text(text, 100)
    assert all(text_tokens(p) <= 100 for p in parts)
    assert all(p.endswith("。") for p in parts)
    assert "".join(parts).replace(" ", "") == text


def test_a_blob_without_spaces_is_sliced():
    text = "x" * 5000
    parts = split_text(text, 100)
    assert all(text_tokens(p) <= 100 for p in parts)
    assert "".join(parts) == text


def test_reduce_groups_keep_order_fit_and_always_shrink():
    texts = ["a" * 300] * 7  # 100 tokens each
    groups = reduce_groups(texts, 250)
    assert [i for g in groups for i in g] == list(range(7))
    assert all(len(g) >= 2 for g in groups)
    assert len(groups) < len(texts)
    huge = ["a" * 3000] * 5  # each alone over the limit: still pairs, so the rounds end
    assert all(len(g) >= 2 for g in reduce_groups(huge, 100))
    assert reduce_groups(["a"], 10) == [[0]]
    assert reduce_groups(["a", "b", "c"], 1000) == [[0, 1, 2]]


def test_long_item_is_mapped_over_parts_then_reduced(mocker):
    long_text = "\n\n".join(paragraph(n) for n in range(30))

    def reply(request):
        text = user_text(request)
        if text.startswith("The text was too long"):
            return answer("COMBINED {{ 7*7 }}")
        number = re.search(r"part (\d+)/(\d+)", text)
        return answer(f"partial {number.group(1)} {{{{ not a template }}}}" if number else "short summary")

    client = with_async_client(mocker, reply)
    op = QwenBatchOperator(
        task_id="batch",
        items=[long_text, "short item"],
        prompt="Summarise{% if chunk %} (part {{ chunk.index }}/{{ chunk.count }}){% endif %}: {{ item }}",
        max_input_tokens=600,
    )
    result, ti = run(op, BatchTI())
    assert result == ["COMBINED {{ 7*7 }}", "short summary"]
    report = ti.pushed["qwen_batch"]
    assert report["chunked"] == 1
    parts = [p for p in client.prompts if "(part " in p]
    assert len(parts) >= 3
    assert all(text_tokens(p) <= 600 for p in parts)
    assert words(" ".join(p.split(": ", 1)[1] for p in sorted(parts, key=_part_number))) == words(long_text)
    (reduce,) = [p for p in client.prompts if p.startswith("The text was too long")]
    for n in range(len(parts)):  # partial results arrive verbatim, in order
        assert f"partial {n} {{{{ not a template }}}}" in reduce
    assert "Summarise: [the text is not repeated here" in reduce  # the instructions, without the text
    assert ti.pushed["qwen_cost"]["requests"] == len(parts) + 2


def _part_number(prompt: str) -> int:
    return int(re.search(r"part (\d+)/", prompt).group(1))


def test_dict_items_split_their_chunk_field_and_reduce_in_rounds(mocker):
    doc = {"title": "Report", "body": "\n\n".join(paragraph(n) for n in range(40))}

    def reply(request):
        text = user_text(request)
        return answer("R" * 200 if text.startswith("The text was too long") else "partial " * 300)

    client = with_async_client(mocker, reply)
    op = QwenBatchOperator(
        task_id="batch",
        items=[doc],
        prompt="{{ item.title }}: {{ item.body }}",
        chunk_field="body",
        max_input_tokens=400,
    )
    result, _ = run(op, BatchTI())
    assert result == ["R" * 200]
    parts = [p for p in client.prompts if p.startswith("Report: ")]
    reduces = [p for p in client.prompts if p.startswith("The text was too long")]
    assert len(parts) > 4
    assert len(reduces) >= 2  # the partial results did not fit one reduce call


def test_max_input_tokens_too_small_for_the_prompt_fails_the_item_without_a_request(mocker):
    client = with_async_client(mocker)
    op = QwenBatchOperator(
        task_id="batch",
        items=["word " * 2000],
        prompt=" ".join(f"w{i}" for i in range(400)) + "{{ item }}",
        max_input_tokens=300,
    )
    with pytest.raises(Exception, match="leaves no room for the text of item 0"):
        run(op, BatchTI())
    assert client.requests == []


def counted_characters(mocker) -> list[int]:
    """Characters handed to the tokenizer by the splitter (the work it does)."""
    from airflow_provider_qwen.batch import chunking

    seen: list[int] = []
    for name in ("text_tokens", "token_slices"):
        real = getattr(chunking, name)

        def spy(text, *args, _real=real):
            seen.append(len(text))
            return _real(text, *args)

        mocker.patch.object(chunking, name, new=spy)
    return seen


@pytest.mark.parametrize(
    "text",
    [
        "".join(f"第{n}句话说了一些有用的事情。" for n in range(12_000)),  # CJK sentences, no spaces
        "\n\n".join(paragraph(n) for n in range(600)),  # paragraphs
        "7" * 150_000,  # digits: one token each, no boundary at all
    ],
    ids=["cjk", "paragraphs", "digits"],
)
def test_splitting_is_linear_in_the_text_and_exact(mocker, text):
    seen = counted_characters(mocker)
    parts = split_text(text, 500)
    assert sum(seen) <= 3 * len(text)  # each character counted about twice, never once per part
    assert len(seen) <= 3 * len(parts) + 8
    mocker.stopall()
    counts = [text_tokens(p) for p in parts]
    assert max(counts) <= 500
    assert sum(counts) <= text_tokens(text) * 1.01 + len(parts)  # as few parts as fit: no tiny ones
    assert "".join(parts).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")


def test_a_long_item_is_counted_and_split_off_the_event_loop(mocker):
    import asyncio

    from airflow_provider_qwen.batch import long_items

    threads = []
    real = long_items.split_text

    def spy(text, max_tokens):
        try:
            asyncio.get_running_loop()
            threads.append("event loop")
        except RuntimeError:
            threads.append("worker")
        return real(text, max_tokens)

    mocker.patch.object(long_items, "split_text", new=spy)
    with_async_client(mocker, lambda r: answer("ok"))
    text = "今天天气很好。" * 20_000  # 140,000 characters: prepared in a thread
    op = QwenBatchOperator(task_id="batch", items=[text], prompt="{{ item }}", max_input_tokens=20_000)
    run(op, BatchTI())
    assert threads == ["worker"]
