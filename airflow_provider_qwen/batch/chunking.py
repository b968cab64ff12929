"""Long items: estimate tokens, split text on paragraph/sentence boundaries, group partial results.

An item whose rendered prompt is estimated above ``max_input_tokens`` is split into parts that
fit, each part is processed with the item's own prompt, and the partial results are combined by
a final call (map-reduce; several rounds when the partial results themselves do not fit).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from airflow_provider_qwen.client.tokens import text_tokens

MIN_PART_TOKENS = 32  # below this a split makes no sense: the prompt leaves no room for text

_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_SENTENCE = re.compile(r"(?<=[.!?\u2026])\s+|(?<=[\u3002\uff01\uff1f\uff1b])")
_WORD = re.compile(r"(?<=\S)(?=\s)")


def split_text(text: str, max_tokens: int) -> list[str]:
    """``text`` in consecutive parts of at most ``max_tokens`` (estimated) each.

    Paragraphs are kept whole where they fit; a longer paragraph is cut between sentences, a longer
    sentence between words, and a longer word (a blob) by characters. Parts are packed greedily, so
    there are as few as the limit allows.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens={max_tokens} must be >= 1")
    if text_tokens(text) <= max_tokens:
        return [text]
    pieces: list[tuple[str, str]] = []  # (separator before it, piece)
    for paragraph in _PARAGRAPH.split(text.strip()):
        for i, (separator, piece) in enumerate(_fit(paragraph, max_tokens)):
            pieces.append(("\n\n" if i == 0 else separator, piece))
    return _pack(pieces, max_tokens)


def _fit(paragraph: str, max_tokens: int) -> list[tuple[str, str]]:
    """A paragraph as (separator, piece) pairs that each fit: itself, its sentences, their words,
    or slices of a word (joined back without a separator)."""
    if text_tokens(paragraph) <= max_tokens:
        return [("", paragraph)]
    pieces: list[tuple[str, str]] = []
    for sentence in (s for s in _SENTENCE.split(paragraph) if s.strip()):
        if text_tokens(sentence) <= max_tokens:
            pieces.append((" ", sentence.strip()))
            continue
        for word in (w.strip() for w in _WORD.split(sentence) if w.strip()):
            if text_tokens(word) <= max_tokens:
                pieces.append((" ", word))
                continue
            step = max(1, max_tokens // 4)  # 4 bytes (tokens at most) per character
            pieces.extend(("" if i else " ", word[i : i + step]) for i in range(0, len(word), step))
    return pieces


def _pack(pieces: list[tuple[str, str]], max_tokens: int) -> list[str]:
    """Consecutive pieces joined by their separators, as few parts as fit ``max_tokens`` each."""
    packed: list[str] = []
    current = ""
    for separator, piece in pieces:
        candidate = f"{current}{separator}{piece}" if current else piece
        if current and text_tokens(candidate) > max_tokens:
            packed.append(current)
            current = piece
        else:
            current = candidate
    if current:
        packed.append(current)
    return packed


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
