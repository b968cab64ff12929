"""Long items: split text on paragraph/sentence boundaries by exact token counts, group partial results.

An item whose request is over ``max_input_tokens`` is split into parts that fit, each part is
processed with the item's own prompt, and the partial results are combined by a final call
(map-reduce; several rounds when the partial results themselves do not fit).

Splitting is linear in the text: each part is the longest prefix of the rest that fits (cut by
``tokens.token_slices`` over a window a little longer than one part), moved back to the last
paragraph, sentence or word boundary in it, then counted exactly once more. CPU-bound (about a
second per 4 MB): callers run it off the event loop.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from airflow_provider_qwen.client.tokens import text_tokens, token_slices

MIN_PART_TOKENS = 32  # below this a split makes no sense: the prompt leaves no room for text
_FIRST_WINDOW_CHARS_PER_TOKEN = 1.5  # the first window's guess (doubled while it fits); then the text's own
_LAST_MATCH_REACH = (256, 4096, 65536)  # a boundary is looked for this far back first, then further
_WINDOW_GROWTH = 1.25  # a window is this much longer than the last part, so it holds one part and more

_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_SENTENCE_END = re.compile(r"[.!?\u2026]+(?=\s)|[\u3002\uff01\uff1f\uff1b]+")
_NEXT_SENTENCE_END = re.compile(_SENTENCE_END.pattern + "|" + _PARAGRAPH.pattern)
_SPACE = re.compile(r"\s+")


def split_text(text: str, max_tokens: int) -> list[str]:
    """``text`` (NFC) in consecutive parts of at most ``max_tokens`` exact tokens each.

    A paragraph stays whole where it fits in a part; a longer one is cut between sentences, a longer
    sentence between words, and a longer word (a blob without spaces) between tokens. Whitespace at a
    cut is dropped; otherwise the parts joined are the text.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens={max_tokens} must be >= 1")
    text = unicodedata.normalize("NFC", text)
    parts: list[str] = []
    start, end_of_text = _skip_space(text, 0, len(text)), len(text)
    width = int(max_tokens * _FIRST_WINDOW_CHARS_PER_TOKEN) + 64
    while start < end_of_text:
        end = min(end_of_text, start + width)
        window = text[start:end]
        slices = token_slices(window, max_tokens)
        if not window.startswith(slices[0]):  # normalisation changed the window: cut by bytes instead
            slices = [_byte_prefix(window, max_tokens), ""]
        if len(slices) == 1 and end < end_of_text:
            width *= 2  # the window fits whole: the text is sparser in tokens than guessed
            continue
        fit = start + len(slices[0])
        cut = fit if fit >= end_of_text else _cut(text, start, fit)
        part = text[start:cut].rstrip()
        parts.extend(_exact(part, max_tokens) if cut != fit else [part] if part else [])
        width = int((fit - start) * _WINDOW_GROWTH) + 64
        start = _skip_space(text, cut, end_of_text)
    return parts or [text]


def _cut(text: str, start: int, fit: int) -> int:
    """Where the part that may reach ``fit`` ends: what greedy packing of paragraphs, then
    sentences, then words would choose. ``span`` (the part's length) estimates whether the piece
    after a boundary fits a part of its own; the exact count comes after."""
    span = fit - start
    paragraph = _last(_PARAGRAPH, text, start, fit)
    inner_break = paragraph is not None and paragraph.start() > start
    if paragraph is not None and inner_break and _piece_fits(_PARAGRAPH, text, paragraph.end(), span):
        return paragraph.start()  # the next paragraph goes whole into the next part
    region = paragraph.end() if paragraph is not None else start
    sentence = _last(_SENTENCE_END, text, region, fit)
    if sentence is not None and _piece_fits(_NEXT_SENTENCE_END, text, sentence.end(), span):
        return sentence.end()
    space = _last(_SPACE, text, region, fit)
    if space is not None and space.start() > start and _piece_fits(_SPACE, text, space.end(), span):
        return space.start()
    return paragraph.start() if paragraph is not None and inner_break else fit


def _last(pattern: re.Pattern[str], text: str, start: int, end: int) -> re.Match[str] | None:
    """The last match in ``text[start:end]``, looked for near ``end`` first (boundaries are dense)."""
    for reach in (*_LAST_MATCH_REACH, end - start):
        found = None
        for found in pattern.finditer(text, max(start, end - reach), end):  # noqa: B007 - the last one
            pass
        if found is not None or reach >= end - start:
            return found
    return None


def _piece_fits(pattern: re.Pattern[str], text: str, start: int, span: int) -> bool:
    """Whether the piece from ``start`` to the next boundary is at most ``span`` characters long
    (so likely fits a part); the search stops after ``span`` characters, keeping the split linear."""
    limit = min(len(text), start + span + 1)
    return limit == len(text) or pattern.search(text, start, limit) is not None


def _skip_space(text: str, start: int, end: int) -> int:
    found = _SPACE.match(text, start, end)
    return found.end() if found else start


def _exact(part: str, max_tokens: int) -> list[str]:
    """``part`` if its exact count fits (a prefix of a slice nearly always does), else its token slices."""
    if not part:
        return []
    if text_tokens(part) <= max_tokens:
        return [part]
    return [piece for piece in token_slices(part, max_tokens) if piece]


def _byte_prefix(text: str, max_bytes: int) -> str:
    """The longest prefix of at most ``max_bytes`` UTF-8 bytes (so at most that many tokens)."""
    prefix = text.encode("utf-8", "surrogatepass")[:max_bytes].decode("utf-8", "ignore")
    return prefix or text[:1]


def reduce_groups(texts: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Indices of ``texts`` grouped in order so that each group's texts fit ``max_tokens`` together.

    Every group holds at least two texts when there are two or more, so each round of reduction
    shrinks the list even when single texts are already near the limit.
    """
    if len(texts) <= 1:
        return [list(range(len(texts)))]
    groups: list[list[int]] = []
    current: list[int] = []
    size = 0
    for index, text in enumerate(texts):
        tokens = text_tokens(text)
        if len(current) >= 2 and size + tokens > max_tokens:
            groups.append(current)
            current, size = [], 0
        current.append(index)
        size += tokens
    if len(current) == 1 and groups:  # never leave one text alone at the end
        groups[-1].append(current[0])
    elif current:
        groups.append(current)
    return groups
