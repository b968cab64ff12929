import socket

import pytest


def test_non_loopback_connections_are_refused():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(ConnectionRefusedError, match="loopback"):
        sock.connect(("203.0.113.5", 443))
    sock.close()


def test_loopback_connections_are_allowed():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname())
    client.close()
    server.close()
