"""Test-session guards: loopback only, and a fixed Airflow environment."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest
import respx

FIXTURES = Path(__file__).parent / "fixtures"
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _check_address(sock: socket.socket, address: object) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    host = address[0] if isinstance(address, tuple) else address
    try:
        loopback = ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ConnectionRefusedError(f"tests may only connect to loopback, not {host!r}")


def _guarded_connect(self: socket.socket, address: object) -> None:
    _check_address(self, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    _check_address(self, address)
    return _real_connect_ex(self, address)


def pytest_configure(config: pytest.Config) -> None:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


@pytest.fixture
def fixture_path() -> Path:
    return FIXTURES


@pytest.fixture
def api():
    """The one respx router of the unit tests: httpx-level mocks, sync and async clients alike."""
    with respx.mock(using="httpx", assert_all_called=False) as router:
        yield router
