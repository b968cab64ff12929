"""The scrubber (client/scrub.py): every form of a credential, scrubbing before cutting, stand-ins for
foreign exceptions, URL userinfo, foreign loggers; and the connection's host-with-userinfo errors."""

from __future__ import annotations

import base64
import json
import logging
import traceback
import urllib.parse

import httpx
import pytest

from airflow_provider_qwen.client.errors import error_for_status
from airflow_provider_qwen.client.scrub import (
    REDACTED,
    ScrubbedError,
    Scrubber,
    scrub_generic,
    stand_in,
    strip_userinfo,
    url_secrets,
)
from airflow_provider_qwen.hooks.connection import QwenConnectionConfig, resolve_base_url

KEY = "sk-" + "9fKq2LmZ7xWv4TbR" * 4
USER, PASSWORD = "svc-user", "p@ss:w0rd/!x"
PROXY = f"http://{USER}:{urllib.parse.quote(PASSWORD, safe='')}@proxy.internal:3128"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@pytest.fixture
def scrub(monkeypatch) -> Scrubber:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    return Scrubber(KEY, urls=[PROXY])


@pytest.mark.parametrize(
    "text",
    [
        f"key {KEY} refused",
        f"Authorization: Bearer {KEY}",
        f"key {KEY[:30]}... (cut)",  # a prefix left by someone's truncation
        f"...{KEY[-20:]}",  # a suffix
        f"Proxy-Authorization: Basic {BASIC}",
        f"<td>{BASIC}</td>",
        f"{USER}:{PASSWORD}",
        f"password {PASSWORD} and {urllib.parse.quote(PASSWORD, safe='')}",
        json.dumps({"pw": PASSWORD}),
        base64.b64encode(f"x{USER}:{PASSWORD}yz".encode()).decode(),  # inside a longer base64 text
        base64.b64encode(f"xy{KEY}".encode()).decode(),
        urllib.parse.quote(BASIC, safe=""),
    ],
)
def test_every_form_of_a_credential_is_redacted(scrub: Scrubber, text: str):
    scrubbed = scrub(text)
    assert REDACTED in scrubbed
    for secret in (KEY, KEY[:12], KEY[-12:], PASSWORD, BASIC, BASIC[:12], f"{USER}:{PASSWORD}"):
        assert secret not in scrubbed
    assert not scrub.found_in(scrubbed)


def test_ordinary_text_is_left_alone(scrub: Scrubber):
    text = "HTTP 400 Bad Request: a basic explanation of max_tokens (see https://docs.example/v1)"
    assert scrub(text) == text


def test_scrubbing_comes_before_cutting(scrub: Scrubber):
    text = "x" * 290 + KEY
    cut = scrub.cut(text, 300)
    assert KEY[:8] not in cut
    assert cut.endswith(REDACTED)
    assert KEY[:10] in text[:300]  # what a cut before scrubbing would have shown


def test_proxies_of_the_environment_are_secrets_when_scrubbing(monkeypatch):
    scrub = Scrubber(KEY)
    monkeypatch.setenv("HTTPS_PROXY", "http://envuser:Env-Pr0xy-pass@127.0.0.1:3128")
    basic = base64.b64encode(b"envuser:Env-Pr0xy-pass").decode()
    assert scrub(f"407 Basic {basic} / Env-Pr0xy-pass") == f"407 Basic {REDACTED} / {REDACTED}"


def test_url_userinfo_is_stripped_without_knowing_it():
    text = "via http://u:p@h:1 and https://tok@h/x and 'http://a:b@c@d/v1'"
    assert strip_userinfo(text) == "via http://***@h:1 and https://***@h/x and 'http://***@d/v1'"
    assert url_secrets("http://u%3A:p%40ss@h") == ["u%3A:p%40ss", "u::p@ss", "p%40ss", "p@ss", "u::p@ss"]


def test_quoted_authorization_values_are_cut_without_knowing_them():
    text = "authorization: Bearer abc.def | 'Proxy-Authorization': 'Basic Zm9vOmJhcg==' | Bearer " + "t" * 20
    assert scrub_generic(text) == (
        f"authorization: Bearer {REDACTED} | 'Proxy-Authorization': 'Basic {REDACTED}' | Bearer {REDACTED}"
    )


def test_a_foreign_chain_is_retold_without_secrets(scrub: Scrubber):
    try:
        try:
            raise ValueError(f"inner {KEY}")
        except ValueError as inner:
            raise httpx.RemoteProtocolError(f"illegal status line: Bearer {KEY}") from inner
    except httpx.RemoteProtocolError as exc:
        exc.add_note(f"note {BASIC}")
        retold = stand_in(exc, scrub)
    assert isinstance(retold, ScrubbedError)
    assert isinstance(retold, httpx.RemoteProtocolError)  # callers' isinstance checks on a cause still hold
    assert type(retold).__name__ == "ScrubbedRemoteProtocolError"
    assert retold.type_name == "httpx.RemoteProtocolError"
    assert str(retold) == f"httpx.RemoteProtocolError: illegal status line: Bearer {REDACTED}"
    assert str(retold.__cause__) == f"ValueError: inner {REDACTED}"
    assert retold.__suppress_context__
    text = "".join(traceback.format_exception(retold))
    assert "raise httpx.RemoteProtocolError" in text  # where it failed is kept
    for secret in (KEY, BASIC):
        assert secret not in text + repr(retold) + repr(retold.args)


def test_a_stand_in_pickles_as_a_plain_one(scrub: Scrubber):
    import pickle

    retold = pickle.loads(pickle.dumps(stand_in(httpx.ReadTimeout(f"late {KEY}"), scrub)))
    assert type(retold) is ScrubbedError
    assert str(retold) == f"httpx.ReadTimeout: late {REDACTED}"


def test_stand_ins_of_awkward_classes(scrub: Scrubber):
    import aiohttp

    class Picky(Exception):
        def __new__(cls, *args: object) -> Picky:
            if len(args) != 3:
                raise TypeError("three")
            return super().__new__(cls, *args)

    assert type(stand_in(Picky(1, 2, KEY), scrub)) is ScrubbedError
    retold = stand_in(aiohttp.ClientOSError(104, f"reset {KEY}"), scrub)
    assert isinstance(retold, OSError)
    assert KEY not in str(retold) + repr(retold)
    assert type(stand_in(KeyboardInterrupt(), scrub)) is ScrubbedError


def test_a_chain_with_a_cycle_ends(scrub: Scrubber):
    first, second = RuntimeError("a"), RuntimeError("b")
    first.__cause__, second.__cause__ = second, first
    retold = stand_in(first, scrub)
    assert str(retold.__cause__) == "RuntimeError: b"
    assert retold.__cause__.__cause__ is None


def test_error_bodies_are_scrubbed_before_the_message_is_cut():
    html = "<html>" + "y" * 180 + f" key {KEY} </html>"  # the 200-character cut lands in the key
    error = error_for_status(502, html.encode(), redact=Scrubber(KEY))
    assert KEY[:6] not in str(error)
    assert KEY[:6] not in json.dumps(error.body)
    body = json.dumps({"message": "bad", "echo": {"authorization": f"Bearer {KEY}"}})
    error = error_for_status(400, body.encode(), reason=f"Bad {KEY}", redact=KEY)
    assert error.body == {"message": "bad", "echo": {"authorization": f"Bearer {REDACTED}"}}


def test_foreign_loggers_are_scrubbed(scrub: Scrubber, caplog):
    scrub.watch_logs()
    caplog.set_level(logging.DEBUG, logger="httpcore.http11")
    logging.getLogger("httpcore.http11").debug("failed exception=%r", RuntimeError(f"line Bearer {KEY}"))
    try:
        raise RuntimeError(f"boom {BASIC}")
    except RuntimeError:
        logging.getLogger("httpcore.http11").debug("failed", exc_info=True)
    text = caplog.text + "".join(logging.Formatter().format(r) for r in caplog.records)
    assert KEY not in text
    assert BASIC not in text
    assert "failed exception=RuntimeError" in text


@pytest.mark.parametrize(
    "host",
    [
        f"ftp://{USER}:{PASSWORD}@api.example.test/v1",
        f"http://{USER}:{PASSWORD}@api.example.test:port/v1",
        f"{USER}:{PASSWORD}@api.example.test:99x",
        f"https://{USER}:{PASSWORD}@/v1",
    ],
)
def test_a_connection_host_with_userinfo_never_shows_it(host: str):
    with pytest.raises(ValueError, match="is not a valid base URL") as info:
        resolve_base_url(host)
    retold = "".join(traceback.format_exception(info.value))
    assert PASSWORD not in retold
    assert info.value.__context__ is None

    conn = type(
        "Conn", (), {"conn_id": "q", "host": host, "port": None, "schema": "", "extra": "", "password": KEY}
    )
    with pytest.raises(ValueError, match="connection 'q'") as info:
        QwenConnectionConfig.from_connection(conn())  # type: ignore[arg-type]
    retold = "".join(traceback.format_exception(info.value))
    assert PASSWORD not in retold
    assert KEY not in retold
    assert info.value.__context__ is None


def test_a_valid_host_with_userinfo_drops_it():
    assert (
        resolve_base_url(f"https://{USER}:{urllib.parse.quote(PASSWORD, safe='')}@h.test/v1")
        == "https://h.test/v1"
    )


@pytest.mark.parametrize("offset", range(9))
@pytest.mark.parametrize("length", [8, 9, 11, 12, 30])
def test_a_run_of_the_key_is_found_at_any_place(scrub: Scrubber, offset: int, length: int):
    for start in (0, 5, len(KEY) - length):
        run = KEY[start : start + length]
        text = "=" * offset + run + " tail"
        assert run not in scrub(text)
        assert run not in scrub.scrub_fast(text)


def test_scrubbing_a_large_body_stays_fast(scrub: Scrubber):
    import time

    text = ("lorem ipsum dolor sit amet " * 40_000) + KEY
    began = time.perf_counter()
    scrubbed = scrub(text)
    assert KEY[:8] not in scrubbed
    assert time.perf_counter() - began < 2.0  # ~1 MB
