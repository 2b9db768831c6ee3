"""The channels' HTTP client: one retry, signed afresh, when a connection drops before any answer; a
timeout or a second drop is ChannelUnavailable."""

from __future__ import annotations

import socket
import threading

import pytest

from knowpay.channels.http import SignedHttp
from knowpay.domain.errors import ChannelUnavailable

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"


def _server(drops: int) -> tuple[str, list[bytes]]:
    """A gateway that closes the first `drops` connections without answering, then answers each request."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve() -> None:
        for n in range(drops + 2):
            conn, _ = listener.accept()
            with conn:
                request = conn.recv(65536)
                seen.append(request)
                if n >= drops:
                    conn.sendall(ANSWER)

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", seen


def _signer():
    nonces = iter(range(1, 100))
    return lambda outgoing: {"X-Nonce": str(next(nonces))}


def test_a_dropped_connection_is_retried_once_with_a_fresh_signature():
    url, seen = _server(drops=1)
    http = SignedHttp(url, channel="Test", sign=_signer(), timeout=(2, 2), trust_env=False)
    answer = http.post_json("/pay", {"out_trade_no": "pay_1"})
    assert answer.ok and answer.json() == {"ok": True}
    assert len(seen) == 2
    assert b"X-Nonce: 1" in seen[0] and b"X-Nonce: 2" in seen[1]


def test_two_drops_in_a_row_are_channel_unavailable():
    url, seen = _server(drops=2)
    http = SignedHttp(url, channel="Test", sign=_signer(), timeout=(2, 2), trust_env=False)
    with pytest.raises(ChannelUnavailable, match="could not be reached"):
        http.post_json("/pay", {"out_trade_no": "pay_1"})
    assert len(seen) == 2
