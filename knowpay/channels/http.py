"""Signed HTTP for channel adapters: one pooled `requests` session with timeouts, signing by callback.

Whenever no usable answer comes back — no connection, a timeout, a 5xx or 429, a body that is not
the JSON promised — it raises ChannelUnavailable, which callers treat as "try again later". A 4xx
is an answer: it is returned for the adapter to map in its own terms.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests

from knowpay.domain.errors import ChannelUnavailable

DEFAULT_TIMEOUT = (3.05, 10.0)  # (connect, read) seconds


@dataclass(frozen=True)
class OutgoingRequest:
    """Exactly what will go on the wire, for a signer to sign."""

    method: str
    path: str  # from the base URL on, starting with "/"
    query: str  # already encoded, without "?"
    body: bytes


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes
    content_type: str
    channel: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            raise ChannelUnavailable(
                f"{self.channel} answered HTTP {self.status} with a body that is not JSON.") from None


Signer = Callable[[OutgoingRequest], Mapping[str, str]]


def encode_json(payload: object) -> bytes:
    """Compact UTF-8 JSON: the bytes sent are the bytes signed."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class SignedHttp:
    """Calls one channel's API at `base_url`, adding the headers `sign` computes for each request."""

    def __init__(self, base_url: str, *, channel: str, sign: Signer,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT, trust_env: bool = True) -> None:
        self.base_url = base_url.rstrip("/")
        self.channel = channel
        self._sign = sign
        self._timeout = timeout
        self._session = requests.Session()
        # False for a gateway on this machine or LAN, which an environment proxy would not reach.
        self._session.trust_env = trust_env

    def post_json(self, path: str, payload: object) -> HttpAnswer:
        return self.send(OutgoingRequest("POST", path, "", encode_json(payload)),
                         content_type="application/json")

    def get(self, path: str, params: Mapping[str, str] | None = None) -> HttpAnswer:
        return self.send(OutgoingRequest("GET", path, urlencode(params or {}), b""))

    def send(self, outgoing: OutgoingRequest, *, content_type: str | None = None) -> HttpAnswer:
        url = self.base_url + outgoing.path + (f"?{outgoing.query}" if outgoing.query else "")
        for attempt in (1, 2):
            headers = dict(self._sign(outgoing))  # signed afresh: a nonce is never sent twice
            if content_type:
                headers["Content-Type"] = content_type
            try:
                response = self._session.request(outgoing.method, url, data=outgoing.body or None,
                                                 headers=headers, timeout=self._timeout, allow_redirects=False)
                break
            except requests.Timeout:
                raise ChannelUnavailable(f"{self.channel} did not answer in time.") from None
            except requests.ConnectionError as exc:
                # A pooled keep-alive connection the server had just closed fails at once; one retry on a new
                # connection is safe because every channel call is idempotent by our own key (out_trade_no,
                # out_request_no, Idempotency-Key).
                if attempt == 2:
                    raise ChannelUnavailable(
                        f"{self.channel} could not be reached ({exc.__class__.__name__}).") from None
            except requests.RequestException as exc:
                raise ChannelUnavailable(
                    f"{self.channel} could not be reached ({exc.__class__.__name__}).") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise ChannelUnavailable(f"{self.channel} answered HTTP {response.status_code}; try again later.")
        return HttpAnswer(response.status_code, response.content, response.headers.get("Content-Type", ""),
                          self.channel)

    def close(self) -> None:
        self._session.close()
