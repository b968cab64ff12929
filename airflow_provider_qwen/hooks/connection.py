"""The ``qwen`` connection parsed and validated: base URL, key, default model, timeout, retries, prices.

Pure functions over a Connection's fields, so they are tested without Airflow fetching anything.
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from airflow_provider_qwen import (
    CONN_FIELDS,
    DEFAULT_BASE_URL,
    DEFAULT_CONN_ID,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MODEL,
    DEFAULT_TIMEOUT,
)

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from airflow_provider_qwen.client.pricing import PriceTable

CONN_TYPE = "qwen"
MAX_RETRIES_LIMIT = 10
_URL_SCHEMES = ("http", "https")
EXTRA_NAMES = tuple(CONN_FIELDS)
_KNOWN_EXTRAS = frozenset(EXTRA_NAMES) | {f"extra__{CONN_TYPE}__{name}" for name in EXTRA_NAMES}


def _is_loopback(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def resolve_base_url(host: str | None, port: int | None = None, schema: str | None = None) -> str:
    """The API base URL from a connection's host, port and schema (see QwenHook for the rules)."""
    host = (host or "").strip()
    schema = (schema or "").strip().strip("/")
    if not host:
        return DEFAULT_BASE_URL
    if "://" in host:
        parts = urlsplit(host)
        scheme = parts.scheme.lower()
    else:
        parts = urlsplit(f"//{host}")
        scheme = schema.lower() if schema.lower() in _URL_SCHEMES else ""
    shown = _without_userinfo(host, parts.netloc)  # a message never quotes user:password@
    try:
        hostname, own_port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number: its error quotes the netloc, so it is not chained
        hostname, own_port = None, -1
    if own_port == -1:
        port_text = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        raise ValueError(f"host={shown!r} is not a valid base URL: the port {port_text!r} is not a number")
    if not hostname or (scheme and scheme not in _URL_SCHEMES):
        raise ValueError(
            f"host={shown!r} is not a valid base URL: give a full URL such as {DEFAULT_BASE_URL!r} "
            "or a host name"
        )
    if not scheme:
        scheme = "http" if _is_loopback(hostname) else "https"
    netloc = parts.netloc.rpartition("@")[2]  # never carry user info into the URL
    if port and own_port is None:
        netloc = f"{netloc}:{int(port)}"
    path = parts.path.rstrip("/")
    if not path and schema and schema.lower() not in _URL_SCHEMES:
        path = f"/{schema}"
    if not path and "://" not in host:
        path = "/v1"
    return urlunsplit((scheme, netloc, path, "", ""))


def _without_userinfo(host: str, netloc: str) -> str:
    """``host`` as a message may show it: the ``user:password@`` of its netloc as ``***@``."""
    userinfo, at, _ = netloc.rpartition("@")
    if not at:
        return host
    return host.replace(f"{userinfo}@", "***@", 1)


def _extra_value(extras: Mapping[str, Any], name: str) -> Any:
    """An extra by its plain name, or as the 3.0/3.1 form may store it (``extra__qwen__<name>``)."""
    for key in (name, f"extra__{CONN_TYPE}__{name}"):
        value = extras.get(key)
        if value is not None and value != "":
            return value
    return None


def _extras(conn_id: str, extra: str | None) -> dict[str, Any]:
    """The extras as a dict (read without ``extra_dejson``, whose masking call blocks an event loop)."""
    if not extra:
        return {}
    try:
        value = json.loads(extra)
    except ValueError as exc:
        raise ValueError(f"connection {conn_id!r}: extra is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"connection {conn_id!r}: extra must be a JSON object, got {type(value).__name__}")
    return value


def _bad(conn_id: str, name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"connection {conn_id!r}: extra {name!r}={value!r} is not allowed: {allowed}")


def _parse_timeout(conn_id: str, value: Any) -> float:
    if value is None:
        return DEFAULT_TIMEOUT
    try:
        if isinstance(value, bool):
            raise ValueError
        seconds = float(value)
    except (TypeError, ValueError):
        raise _bad(conn_id, "timeout", value, "a number of seconds > 0") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise _bad(conn_id, "timeout", value, "a number of seconds > 0")
    return seconds


def _parse_max_retries(conn_id: str, value: Any) -> int:
    if value is None:
        return DEFAULT_MAX_RETRIES
    allowed = f"an integer from 0 to {MAX_RETRIES_LIMIT}"
    if isinstance(value, bool):
        raise _bad(conn_id, "max_retries", value, allowed)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or not 0 <= value <= MAX_RETRIES_LIMIT:
        raise _bad(conn_id, "max_retries", value, allowed)
    return value


def _parse_model(conn_id: str, value: Any) -> str:
    if value is None:
        return DEFAULT_MODEL
    if not isinstance(value, str) or not value.strip():
        raise _bad(conn_id, "model", value, "a model id such as 'alibaba/qwen3.7-max'")
    return value.strip()


def _parse_prices(conn_id: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    allowed = 'JSON {"<model id>": {"input": <USD per 1M>, "output": <USD per 1M>}}'
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise _bad(conn_id, "prices", value, f"{allowed} (not valid JSON: {exc})") from None
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise _bad(conn_id, "prices", value, allowed)
    try:
        from airflow_provider_qwen.client.pricing import PriceTable

        PriceTable({}).with_overrides(value)
    except ValueError as exc:
        raise _bad(conn_id, "prices", dict(value), f"{allowed}; {exc}") from None
    return dict(value)


@dataclass(frozen=True)
class QwenConnectionConfig:
    """Everything the client needs from a connection; the key is kept out of the repr."""

    conn_id: str
    base_url: str = DEFAULT_BASE_URL
    model: str = DEFAULT_MODEL
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    price_overrides: Mapping[str, Any] = field(default_factory=dict, compare=False)
    ignored_extras: tuple[str, ...] = field(default=(), compare=False)
    api_key: str | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_connection(cls, conn: Connection) -> QwenConnectionConfig:
        """Parse and validate a connection; ValueError names the field, the value and what is allowed."""
        conn_id = conn.conn_id or DEFAULT_CONN_ID
        extras = _extras(conn_id, conn.extra)
        try:
            base_url, problem = resolve_base_url(conn.host, conn.port, conn.schema), None
        except ValueError as exc:
            base_url, problem = DEFAULT_BASE_URL, str(exc)
        if problem is not None:  # outside the except block: nothing chained (the message is scrubbed)
            raise ValueError(f"connection {conn_id!r}: {problem}")
        return cls(
            conn_id=conn_id,
            base_url=base_url,
            model=_parse_model(conn_id, _extra_value(extras, "model")),
            timeout=_parse_timeout(conn_id, _extra_value(extras, "timeout")),
            max_retries=_parse_max_retries(conn_id, _extra_value(extras, "max_retries")),
            price_overrides=_parse_prices(conn_id, _extra_value(extras, "prices")),
            ignored_extras=tuple(sorted(set(extras) - _KNOWN_EXTRAS)),
            api_key=conn.password or None,
        )

    @property
    def prices(self) -> PriceTable:
        """The shipped price table with this connection's overrides applied."""
        from airflow_provider_qwen.client.pricing import PriceTable

        return PriceTable().with_overrides(self.price_overrides)
