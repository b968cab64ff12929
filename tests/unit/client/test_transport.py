"""How the aiohttp transport names aiohttp's failures: the httpx class decides whether a try counts
as possibly charged (``FAILED_AFTER_SEND``), so each mapping is pinned here."""

from __future__ import annotations

from types import SimpleNamespace

import aiohttp
import httpx
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from airflow_provider_qwen.client._base import FAILED_AFTER_SEND, BaseClient
from airflow_provider_qwen.client.transport import translate, without_credentials

REQUEST = httpx.Request("POST", "https://api.example.test/v1/chat/completions")
CONNECTION_KEY = SimpleNamespace(host="api.example.test", port=443, ssl=True)  # what the message reads
PROXY = URL("http://user:proxypass@proxy.internal:3128")


def proxy_refusal() -> aiohttp.ClientHttpProxyError:
    info = aiohttp.RequestInfo(PROXY, "CONNECT", CIMultiDictProxy(CIMultiDict()), PROXY)
    return aiohttp.ClientHttpProxyError(info, (), status=407, message="Proxy Authentication Required")


@pytest.mark.parametrize(
    ("failure", "expected", "maybe_charged"),
    [
        (aiohttp.ConnectionTimeoutError("no free connection"), httpx.ConnectTimeout, False),
        (aiohttp.ClientConnectorError(CONNECTION_KEY, OSError(111, "refused")), httpx.ConnectError, False),
        (proxy_refusal(), httpx.ProxyError, False),
        # a kept-alive connection the server had closed: the request could not be written
        (aiohttp.ClientOSError(None, "Can not write request body for https://x"), httpx.WriteError, False),
        (aiohttp.InvalidURL("nope"), httpx.UnsupportedProtocol, False),
        (aiohttp.SocketTimeoutError("read"), httpx.ReadTimeout, True),
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError, True),
        (aiohttp.ClientPayloadError("cut"), httpx.RemoteProtocolError, True),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), httpx.ReadError, True),
        (TimeoutError(), httpx.ReadTimeout, True),
    ],
)
def test_each_failure_is_named_by_whether_the_request_may_have_gone_out(failure, expected, maybe_charged):
    error = translate(failure, REQUEST)
    assert type(error) is expected
    assert isinstance(error, FAILED_AFTER_SEND) is maybe_charged
    assert error.request is REQUEST
    assert error.__cause__ is None


def test_credentials_in_urls_never_reach_the_message():
    error = translate(proxy_refusal(), REQUEST)
    assert "proxypass" not in str(error)
    assert "407" in str(error)
    assert (
        without_credentials("via http://u:p@h:1 and https://tok@h/x")
        == "via http://***@h:1 and https://***@h/x"
    )


@pytest.mark.parametrize("key", ["sk-abc\n", " sk-abc", "sk abc", "sk-\x00abc"])
def test_a_key_with_whitespace_or_control_characters_is_refused_without_showing_it(key):
    with pytest.raises(ValueError, match="whitespace or control characters") as raised:
        BaseClient(
            key,
            base_url="http://127.0.0.1:9/v1",
            model="m",
            timeout=1,
            connect_timeout=1,
            max_retries=0,
            prices=None,
            default_headers=None,
            retry=None,
        )
    assert key.strip() not in str(raised.value)
