"""The one place credentials are cut from what a client says: messages, reprs and exception chains.

A ``Scrubber`` knows a client's secrets (the API key, the ``user:password@`` of its base URL, the
credentials of the proxies the environment names) and every form a server, a proxy or an HTTP library
may echo them in: as they are, URL-encoded and decoded, HTML- and JSON-escaped, base64 (how Basic and
proxy authentication send ``user:password``, at any alignment inside a longer base64 text), and any
run of ``FRAGMENT`` or more of their characters (a key cut short by someone's truncation). It also
cuts, knowing no secret: the userinfo of every URL, and the value of any ``Authorization`` /
``Proxy-Authorization`` header or long ``Bearer`` token quoted in text.

Rules the client follows with it:

- scrub before cutting: a message is cut to length only after scrubbing (a cut inside a key would
  leave a prefix no exact match finds);
- never chain a foreign exception (httpx, httpcore, aiohttp, h11, pydantic): its message, ``args``
  and own chain may quote the request headers. ``stand_in`` re-tells it as a ``ScrubbedError``
  (its class name and scrubbed message, its chain re-told the same way), and an error is raised
  ``from`` that stand-in outside any ``except`` block, so ``__context__`` holds nothing raw either.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import logging
import os
import re
import urllib.parse
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

REDACTED = "***"
FRAGMENT = 8  # a run of this many characters of a longer secret is redacted too
QUARTER = FRAGMENT // 2  # the window the search for such runs looks at first
MIN_SECRET = 4  # a shorter value (a one-letter user name) is only redacted inside user:password forms
MAX_CHAIN = 8  # how many links of a foreign exception chain are re-told

_URL_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#]*@")  # to the last @ of the netloc
_AUTH_HEADER = re.compile(
    r"(?i)(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|digest|token)\s+)?)"
    r"[^\s\"',;<>\\)]+"
)
ID_SHAPE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # an id: a uuid, chatcmpl-..., a request id
_BEARER = re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{16,}")
# the proxy variables httpx and the aiohttp transport read (read directly: getproxies() walks the
# whole environment, ~0.2 ms)
_PROXY_VARIABLES = tuple(f"{n}_proxy" for n in ("http", "https", "all")) + tuple(
    f"{n}_PROXY" for n in ("HTTP", "HTTPS", "ALL")
)
# The loggers of the HTTP libraries below the clients: httpcore's DEBUG trace logs a failed step's
# exception, whose message may quote the request (headers and all).
FOREIGN_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
    "aiohttp.client",
)

TextScrub = Callable[[str], str]


def strip_userinfo(text: str) -> str:
    """``text`` with the ``user:password@`` of any URL in it replaced by ``***@``."""
    return _URL_USERINFO.sub(rf"\1{REDACTED}@", text)


def scrub_generic(text: str) -> str:
    """What can be cut knowing no secret: URL userinfo, ``Authorization`` values, long Bearer tokens."""
    if "@" in text:
        text = strip_userinfo(text)
    lowered = text.lower()
    if "authorization" in lowered:
        text = _AUTH_HEADER.sub(rf"\1{REDACTED}", text)
    if "bearer" in lowered:
        text = _BEARER.sub(rf"\1{REDACTED}", text)
    return text


def url_secrets(url: str | None) -> list[str]:
    """The secrets in a URL's userinfo: ``user:password`` (as written and decoded) and the password."""
    if not url or "@" not in url:
        return []
    if "://" not in url:
        url = f"http://{url}"
    netloc = urllib.parse.urlsplit(url).netloc
    userinfo, at, _ = netloc.rpartition("@")
    if not at or not userinfo:
        return []
    found = [userinfo, urllib.parse.unquote(userinfo)]
    user, colon, password = userinfo.partition(":")
    if colon:
        found += [password, urllib.parse.unquote(password)]
        found.append(f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}")
    elif user:
        found.append(urllib.parse.unquote(user))  # a lone user is a token (https://TOKEN@host)
    return [s for s in found if s]


def _base64_forms(secret: str) -> set[str]:
    """The base64 of ``secret`` alone, and the part of its base64 that is the same wherever it sits
    in a longer encoded text (one form per alignment: its bytes start at offset 0, 1 or 2 mod 3)."""
    raw = secret.encode()
    whole = base64.b64encode(raw).decode()
    forms = {whole, whole.rstrip("=")}
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + raw).decode()
        first = 4 if offset else 0  # the group holding the padding bytes is not the secret's alone
        last = len(encoded) - 4  # the last group depends on what follows
        middle = encoded[first:last]
        if len(middle) >= FRAGMENT:
            forms.add(middle)
    return forms


def secret_forms(secret: str) -> set[str]:
    """Every form of ``secret`` that may be echoed back (see the module doc)."""
    forms = {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret, safe=""),
        urllib.parse.unquote(secret),
        html.escape(secret),
        json.dumps(secret)[1:-1],
    }
    forms |= _base64_forms(secret)
    forms |= {urllib.parse.quote(form, safe="") for form in _base64_forms(secret)}  # "=" as %3D
    return {form for form in forms if len(form) >= MIN_SECRET}


class Scrubber:
    """The secrets of one client and every form of them (callable: ``scrubber(text)``).

    ``secrets`` are values (the key); ``urls`` are URLs whose userinfo is secret (the base URL, a proxy).
    With ``env_proxies``, the credentials of the proxies the environment names at the time of each
    call (``HTTP(S)_PROXY``, ``ALL_PROXY``, as httpx and the aiohttp transport read them) are secrets too.
    """

    def __init__(
        self,
        *secrets: str | None,
        urls: Iterable[str | None] = (),
        env_proxies: bool = True,
    ) -> None:
        self._own: set[str] = set()
        self._env_proxies = env_proxies
        self._env_key: tuple[str, ...] | None = None
        self._all: frozenset[str] | None = None  # own and environment forms, for _env_key
        for secret in secrets:
            self.add(secret)
        for url in urls:
            self.add_url(url)

    def add(self, secret: str | None) -> None:
        """Redact ``secret`` (and its forms) from now on."""
        if secret and len(secret) >= MIN_SECRET:
            self._own |= secret_forms(secret)
            self._all = None

    def add_url(self, url: str | None) -> None:
        """Redact the userinfo of ``url`` (and its forms) from now on."""
        for secret in url_secrets(url):
            self.add(secret)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self._forms())} forms)"

    def _forms(self) -> frozenset[str]:
        key = tuple(os.environ.get(name, "") for name in _PROXY_VARIABLES) if self._env_proxies else ()
        if key != self._env_key or self._all is None:
            env: set[str] = set()
            for url in key:
                for secret in url_secrets(url):
                    env |= secret_forms(secret) if len(secret) >= MIN_SECRET else set()
            self._env_key, self._all = key, frozenset(self._own | env)
        return self._all

    def __call__(self, text: str) -> str:
        """``text`` without any known secret, URL userinfo or quoted authorization value."""
        if not text:
            return text
        text = _redact_all(text, self._forms())
        return scrub_generic(text)

    def scrub_fast(self, text: str) -> str:
        """``self(text)`` with the proxies of the environment as they were at the last full call
        (or the creation): for log records, where the environment lookups would cost the most."""
        if not text:
            return text
        forms = self._all if self._all is not None else self._forms()
        return scrub_generic(_redact_all(text, forms))

    def cut(self, text: str, limit: int, ellipsis: str = "") -> str:
        """Scrubbed, then cut to ``limit`` characters (in that order)."""
        text = self(text)
        return text if len(text) <= limit else text[: max(0, limit - len(ellipsis))] + ellipsis

    def value(self, value: Any) -> Any:
        """A parsed JSON value with every string in it (keys too) scrubbed."""
        return scrub_value(value, self)

    def found_in(self, text: str) -> bool:
        """Whether ``text`` holds any known secret form (for checks and tests)."""
        return any(form in text for form in self._forms())

    def stand_in(self, exc: BaseException) -> ScrubbedError:
        return stand_in(exc, self)

    def watch_logs(self) -> None:
        """Scrub this client's secrets from the records of the HTTP libraries' loggers too (for as
        long as this scrubber lives); costs nothing unless those loggers are enabled (DEBUG)."""
        _LOG_SCRUB.scrubbers.add(self)
        for name in FOREIGN_LOGGERS:
            logger = logging.getLogger(name)
            if _LOG_SCRUB not in logger.filters:
                logger.addFilter(_LOG_SCRUB)


class _ForeignLogScrub(logging.Filter):
    """Rewrites a foreign library's log record as its scrubbed text (no args left to format)."""

    def __init__(self) -> None:
        super().__init__()
        self.scrubbers: weakref.WeakSet[Scrubber] = weakref.WeakSet()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a record that cannot format is left to logging's own error handling
            return True
        record.msg, record.args = self._scrub_all(text), None
        if record.exc_info and record.exc_info[1] is not None:  # its traceback would quote it raw
            link = stand_in(record.exc_info[1], self._scrub_all)
            record.exc_info, record.exc_text = (type(link), link, link.__traceback__), None
        return True

    def _scrub_all(self, text: str) -> str:
        for scrubber in list(self.scrubbers):
            text = scrubber.scrub_fast(text)
        return scrub_generic(text)


_LOG_SCRUB = _ForeignLogScrub()


def _redact_all(text: str, forms: frozenset[str]) -> str:
    """Replace every occurrence of each form, and every run of FRAGMENT+ characters of a longer form."""
    spans: list[tuple[int, int]] = []
    for form in forms:
        if len(form) <= FRAGMENT:  # the longer ones are found as runs of their fragments
            start = text.find(form)
            while start != -1:
                spans.append((start, start + len(form)))
                start = text.find(form, start + 1)
    grams, quarters = _grams(forms)
    if grams:
        # A run of FRAGMENT characters holds a whole QUARTER-long window starting at a multiple of
        # QUARTER: look at those windows only, and at the runs around a window that matches.
        last = len(text) - FRAGMENT
        for p in range(0, len(text) - QUARTER + 1, QUARTER):
            if text[p : p + QUARTER] in quarters:
                for i in range(max(0, p - QUARTER), min(p, last) + 1):
                    if text[i : i + FRAGMENT] in grams:
                        spans.append((i, i + FRAGMENT))
    if not spans:
        return text
    spans.sort()
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, last = [], 0
    for start, end in merged:
        out += [text[last:start], REDACTED]
        last = end
    out.append(text[last:])
    return "".join(out)


@functools.lru_cache(maxsize=32)
def _grams(forms: frozenset[str]) -> tuple[frozenset[str], frozenset[str]]:
    """The FRAGMENT-long and QUARTER-long runs of the forms longer than FRAGMENT."""
    long_forms = [form for form in forms if len(form) > FRAGMENT]
    grams = {form[i : i + FRAGMENT] for form in long_forms for i in range(len(form) - FRAGMENT + 1)}
    quarters = {form[i : i + QUARTER] for form in long_forms for i in range(len(form) - QUARTER + 1)}
    return frozenset(grams), frozenset(quarters)


def server_id(value: Any, scrub: TextScrub = scrub_generic) -> str | None:
    """An id the server sent (``x-inference-id``), if it looks like one and holds no secret; else
    None: an echoed key in that header would reach every record the id goes to."""
    if not isinstance(value, str) or not ID_SHAPE.match(value):
        return None
    return value if scrub(value) == value else None


def scrub_value(value: Any, scrub: TextScrub) -> Any:
    """``value`` (parsed JSON: dicts, lists, strings, numbers) with every string scrubbed."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {scrub(str(k)): scrub_value(v, scrub) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_value(v, scrub) for v in value]
    return value


class ScrubbedError(Exception):
    """A foreign exception re-told without secrets: ``type_name`` is its class (``module.Name``),
    ``str()`` is ``type_name: message`` with the message scrubbed; its chain is re-told the same way.

    A stand-in is also an instance of the foreign class where one can be derived (``isinstance(
    error.__cause__, httpx.ReadTimeout)`` keeps working) but carries none of its attributes (the
    request, the headers): only the scrubbed text. Pickled, it is a plain ScrubbedError.
    """

    def __init__(self, type_name: str, message: str) -> None:
        Exception.__init__(self, message)  # not the foreign class's __init__: it would want its fields
        self.type_name = type_name
        self.message = message

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return ScrubbedError, (self.type_name, self.message)


_STAND_IN_CLASSES: dict[type[BaseException], type[ScrubbedError]] = {}


def _stand_in_class(foreign: type[BaseException]) -> type[ScrubbedError]:
    """ScrubbedError and ``foreign`` as one class (``ScrubbedReadTimeout``), or ScrubbedError alone."""
    known = _STAND_IN_CLASSES.get(foreign)
    if known is not None:
        return known
    derived: type[ScrubbedError] = ScrubbedError
    if issubclass(foreign, Exception) and not issubclass(foreign, ScrubbedError) and foreign is not Exception:
        try:
            made = type(f"Scrubbed{foreign.__name__}", (ScrubbedError, foreign), {"__module__": __name__})
            made("check", "check")  # a layout or __new__ that refuses: the plain stand-in
            derived = made
        except Exception:
            pass
    if len(_STAND_IN_CLASSES) < 256:
        _STAND_IN_CLASSES[foreign] = derived
    return derived


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"


def stand_in(exc: BaseException, scrub: TextScrub = scrub_generic) -> ScrubbedError:
    """``exc`` and its chain (``__cause__``, else an unsuppressed ``__context__``) as ScrubbedErrors."""
    seen: set[int] = set()
    head: ScrubbedError | None = None
    tail: ScrubbedError | None = None
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < MAX_CHAIN:
        seen.add(id(current))
        if isinstance(current, ScrubbedError):
            link = type(current)(current.type_name, scrub(current.message))
        else:
            try:
                text = str(current)
            except Exception:  # a broken __str__ says nothing
                text = ""
            link = _stand_in_class(type(current))(_type_name(current), scrub(text))
        link.__traceback__ = current.__traceback__  # where it failed: code lines, no values
        for note in getattr(current, "__notes__", None) or ():
            link.add_note(scrub(str(note)))
        link.__suppress_context__ = True
        if tail is None:
            head = link
        else:
            tail.__cause__ = link
        tail = link
        following = current.__cause__
        if following is None and not current.__suppress_context__:
            following = current.__context__
        current = following
    assert head is not None
    return head
